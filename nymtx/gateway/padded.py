"""The fixed-size frames that run inside the gateway channel.

Every request a client sends is :data:`REQUEST_SIZE` bytes and every frame
the gateway sends is :data:`ANSWER_SIZE` bytes, whatever they carry: a pull
is answered with exactly :data:`PULL_SIZE` message slots, empty ones zero,
and acknowledgements ride on pulls in a fixed number of id slots. So the
channel's ciphertext sizes say nothing about how much mail there was, how
long it was, or how much was acknowledged. ``docs/gateway-channel.md``
lays the frames out byte by byte.

Pure functions, strict both ways: the encoders refuse values that do not
fit (ValueError), the parsers refuse anything but the one canonical
encoding (:class:`nymtx.gateway.frames.FrameError`, ``E_MALFORMED`` or
``E_UNKNOWN_TYPE``, with a message naming the problem) — padding and
unused slots must be zero, so no byte of a frame is free for a peer to
smuggle or vary.
"""

import struct

import attrs

from nymtx.gateway.frames import (
    E_MALFORMED, E_UNKNOWN_TYPE, ERROR_NAMES, MAX_ERROR_TEXT, FrameError)
from nymtx.sphinx.surb import DELIVERY_SIZE

#: Message slots in every pull answer, and ack slots in every request.
PULL_SIZE = 10
#: Room for one stored record: the largest a gateway stores is a SURB
#: delivery (an ack or a reply: identifier 16 || block 1024 = 1040 bytes);
#: a forward message is at most a Sphinx packet's plaintext room (975),
#: its stored part after a SURB-ACK 608 (docs/surb.md).
MESSAGE_ROOM = DELIVERY_SIZE
ID_SIZE = 8
#: Ids are at most 63 bits (sqlite's rowid); 0 marks an empty slot.
MAX_ID = (1 << 63) - 1
#: type · count · PULL_SIZE ids
REQUEST_SIZE = 2 + ID_SIZE * PULL_SIZE
#: id · length · message room
SLOT_SIZE = ID_SIZE + 2 + MESSAGE_ROOM
#: type · acked · PULL_SIZE slots
ANSWER_SIZE = 2 + SLOT_SIZE * PULL_SIZE

# client -> gateway
REGISTER = 0x01
PULL = 0x02
#: a pull that takes nothing: acks only, answered with no slots filled (a
#: client whose inbox is full keeps its schedule and its frame sizes)
PULL_NONE = 0x03
# gateway -> client
REGISTERED = 0x82
MESSAGES = 0x84
ERROR = 0xFF


@attrs.frozen
class Register:
    """Record this connection's (proven) client key in the gateway's ledger."""


@attrs.frozen
class Pull:
    """Delete *acks* (ids of this client's messages), then send the oldest
    (none if not *take*)."""
    acks: tuple = ()
    take: bool = True


@attrs.frozen
class Registered:
    pass


@attrs.frozen
class Messages:
    """A pull's answer: *messages* as (id, bytes), oldest first, and how many
    of the pull's acks deleted a message."""
    messages: tuple = ()
    acked: int = 0


@attrs.frozen
class Error:
    code: int
    message: str


def _malformed(text):
    return FrameError(E_MALFORMED, text)


def _zero(data, start, end, what):
    if data.count(0, start, end) != end - start:
        raise _malformed(f"{what} is not zero")


def _check_id(ident, what):
    if not isinstance(ident, int) or not 1 <= ident <= MAX_ID:
        raise ValueError(f"{what} {ident!r} is not in 1-{MAX_ID}")


# ---- requests (client -> gateway) ----------------------------------------

def encode_request(value):
    """The REQUEST_SIZE bytes of a :class:`Register` or :class:`Pull`."""
    if isinstance(value, Register):
        kind, ids = REGISTER, ()
    elif isinstance(value, Pull):
        kind, ids = (PULL if value.take else PULL_NONE), tuple(value.acks)
        if len(ids) > PULL_SIZE:
            raise ValueError(f"a pull acknowledges at most {PULL_SIZE} ids, not {len(ids)}")
        for ident in ids:
            _check_id(ident, "ack id")
    else:
        raise TypeError(f"not a request: {value!r}")
    return struct.pack(f">BB{PULL_SIZE}Q", kind, len(ids), *ids, *(0,) * (PULL_SIZE - len(ids)))


def parse_request(data):
    """A :class:`Register` or :class:`Pull` from REQUEST_SIZE bytes."""
    data = bytes(data)
    if len(data) != REQUEST_SIZE:
        raise _malformed(f"request is {len(data)} bytes, expected {REQUEST_SIZE}")
    kind, count = data[0], data[1]
    if kind not in (REGISTER, PULL, PULL_NONE):
        raise FrameError(E_UNKNOWN_TYPE, f"unknown request type 0x{kind:02x}")
    if kind == REGISTER and count:
        raise _malformed(f"register request has an ack count of {count}; it must be 0")
    if count > PULL_SIZE:
        raise _malformed(f"pull request acknowledges {count} ids, at most {PULL_SIZE}")
    ids = struct.unpack_from(f">{PULL_SIZE}Q", data, 2)
    for n, ident in enumerate(ids[:count]):
        if not 1 <= ident <= MAX_ID:
            raise _malformed(f"ack id {n} is {ident}, not in 1-{MAX_ID}")
    _zero(data, 2 + ID_SIZE * count, REQUEST_SIZE, f"request padding after {count} ids")
    return Register() if kind == REGISTER else Pull(ids[:count], kind == PULL)


# ---- answers (gateway -> client) -----------------------------------------

_HEAD = struct.Struct(">QH")
#: zero bytes to pad from: a memoryview slice pads without a copy
_ZEROS = memoryview(bytes(SLOT_SIZE * PULL_SIZE))


def encode_answer(value):
    """The ANSWER_SIZE bytes of a :class:`Messages`, :class:`Registered`
    or :class:`Error`."""
    if isinstance(value, Messages):
        # one join of the slots' parts: every pull's answer takes this path,
        # and building it in a zeroed buffer cost a third more
        messages = value.messages
        if len(messages) > PULL_SIZE:
            raise ValueError(f"an answer holds at most {PULL_SIZE} messages, not {len(messages)}")
        acked = value.acked
        if not isinstance(acked, int) or not 0 <= acked <= PULL_SIZE:
            raise ValueError(f"acked {acked} is not in 0-{PULL_SIZE}")
        parts = [bytes((MESSAGES, acked))]
        append, head, seen = parts.append, _HEAD.pack, set()
        for ident, body in messages:
            _check_id(ident, "message id")
            if ident in seen:
                raise ValueError(f"message id {ident} twice in one answer")
            seen.add(ident)
            size = len(body)
            if size > MESSAGE_ROOM:
                raise ValueError(f"a message of {size} bytes is over {MESSAGE_ROOM}")
            append(head(ident, size))
            append(body)
            append(_ZEROS[:MESSAGE_ROOM - size])
        append(_ZEROS[:(PULL_SIZE - len(messages)) * SLOT_SIZE])
        return b"".join(parts)
    out = bytearray(ANSWER_SIZE)
    if isinstance(value, Registered):
        out[0] = REGISTERED
    elif isinstance(value, Error):
        text = value.message.encode("utf-8")
        if len(text) > MAX_ERROR_TEXT:
            # cut on a character boundary: the parser insists on UTF-8
            text = text[:MAX_ERROR_TEXT].decode("utf-8", "ignore").encode("utf-8")
        if not 0 <= value.code <= 255:
            raise ValueError(f"error code {value.code} is not a byte")
        struct.pack_into(">BBH", out, 0, ERROR, value.code, len(text))
        out[4:4 + len(text)] = text
    else:
        raise TypeError(f"not an answer: {value!r}")
    return bytes(out)


def parse_answer(data):
    """A :class:`Messages`, :class:`Registered` or :class:`Error` from
    ANSWER_SIZE bytes."""
    data = bytes(data)
    if len(data) != ANSWER_SIZE:
        raise _malformed(f"answer is {len(data)} bytes, expected {ANSWER_SIZE}")
    kind = data[0]
    if kind == MESSAGES:
        acked = data[1]
        if acked > PULL_SIZE:
            raise _malformed(f"messages answer says {acked} acked, at most {PULL_SIZE}")
        messages, seen = [], set()
        unpack, count = _HEAD.unpack_from, data.count
        for n in range(PULL_SIZE):
            at = 2 + n * SLOT_SIZE
            ident, length = unpack(data, at)
            if ident == 0:
                # empty slots come last: the rest of the frame is all zero
                if count(0, at, ANSWER_SIZE) != ANSWER_SIZE - at:
                    _after_empty(data, n)
                break
            if ident > MAX_ID:
                raise _malformed(f"slot {n} has id {ident}, over {MAX_ID}")
            if length > MESSAGE_ROOM:
                raise _malformed(f"slot {n} says {length} bytes, over {MESSAGE_ROOM}")
            if ident in seen:
                raise _malformed(f"slot {n} repeats message id {ident}")
            seen.add(ident)
            end = at + 10 + length
            if count(0, end, at + SLOT_SIZE) != at + SLOT_SIZE - end:
                raise _malformed(f"padding of slot {n} is not zero")
            messages.append((ident, data[at + 10:end]))
        return Messages(tuple(messages), acked)
    if kind == REGISTERED:
        _zero(data, 1, ANSWER_SIZE, "registered answer padding")
        return Registered()
    if kind == ERROR:
        code, length = struct.unpack_from(">BH", data, 1)
        if length > MAX_ERROR_TEXT:
            raise _malformed(f"error text of {length} bytes, over {MAX_ERROR_TEXT}")
        try:
            text = data[4:4 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("error text is not UTF-8")
        _zero(data, 4 + length, ANSWER_SIZE, "error answer padding")
        return Error(code, text)
    raise FrameError(E_UNKNOWN_TYPE, f"unknown answer type 0x{kind:02x}")


def _after_empty(data, first):
    """Raise the error for the bytes after empty slot *first* that are not zero."""
    for n in range(first, PULL_SIZE):
        at = 2 + n * SLOT_SIZE
        if data.count(0, at, at + SLOT_SIZE) == SLOT_SIZE:
            continue
        if n > first and data.count(0, at, at + ID_SIZE) != ID_SIZE:
            raise _malformed(f"slot {n} holds a message after an empty slot")
        raise _malformed(f"empty slot {n} is not zero")
    raise AssertionError("not reached: the frame's rest is not all zero")


def error_name(code):
    return ERROR_NAMES.get(code, f"code {code}")
