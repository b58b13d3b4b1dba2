"""What an envelope holds: a type byte, then a fragment or cover.

The PLAINTEXT_SIZE (926) bytes inside an envelope (docs/message-format.md):

    type (1) || body (925)

    type 0x01  fragment:    set id (8) || index u32 || count u32 || length u16
                            || data (length) || zero padding
    type 0x02  loop cover:  loop id (16) || zero bytes
    type 0x03  drop cover:  zero bytes
    type 0x04  ack, 0x05 reply: reserved for reliable delivery and replies;
               this version hands the body on unparsed

The type byte is inside the AEAD, so nobody but the recipient learns it:
cover and real fragments are the same 975 bytes of ciphertext on the wire.
"""

import os

import attrs

from .envelope import PLAINTEXT_SIZE, open_envelope, seal
from .errors import PlaintextError

TYPE_FRAGMENT = 0x01
TYPE_LOOP_COVER = 0x02
TYPE_DROP_COVER = 0x03
TYPE_ACK = 0x04
TYPE_REPLY = 0x05
RESERVED_TYPES = (TYPE_ACK, TYPE_REPLY)

SET_ID_SIZE = 8
#: type || set id || index u32 || count u32 || length u16
FRAGMENT_HEADER_SIZE = 1 + SET_ID_SIZE + 4 + 4 + 2  # 19
#: application bytes one fragment carries: the rest of the plaintext
FRAGMENT_DATA_SIZE = PLAINTEXT_SIZE - FRAGMENT_HEADER_SIZE  # 907
MAX_COUNT = (1 << 32) - 1
LOOP_ID_SIZE = 16

_COVER_BODY = bytes(PLAINTEXT_SIZE - 1)
_LOOP_PADDING = bytes(PLAINTEXT_SIZE - 1 - LOOP_ID_SIZE)


@attrs.frozen(slots=True)
class Fragment:
    """Piece *index* (0-based) of the *count* pieces of set *set_id*."""

    set_id: bytes
    index: int
    count: int
    data: bytes

    def __attrs_post_init__(self):
        _check_fragment(self.set_id, self.index, self.count, self.data)


@attrs.frozen(slots=True)
class LoopCover:
    """A loop cover packet, the sender's own come back, with the id it was sent with.

    The id lets the sender match each loop that returns with the one it
    sent (when, by which route): loops that stop coming back are how a
    client notices an active attack (Loopix).
    """

    loop_id: bytes = bytes(LOOP_ID_SIZE)


@attrs.frozen(slots=True)
class DropCover:
    """A drop cover packet: to be discarded where it ends."""


@attrs.frozen(slots=True)
class Reserved:
    """A type this version reserves (ack, reply): the body, unparsed."""

    type: int
    body: bytes


def _check_fragment(set_id, index, count, data):
    if not isinstance(set_id, bytes) or len(set_id) != SET_ID_SIZE:
        raise PlaintextError(f"a set id is {SET_ID_SIZE} bytes, not {set_id!r}")
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise PlaintextError(f"a fragment count is 1 to {MAX_COUNT}, not {count!r}")
    if not isinstance(index, int) or not 0 <= index < count:
        raise PlaintextError(f"fragment index {index!r} is not below its count {count}")
    if not isinstance(data, bytes):
        raise PlaintextError(f"fragment data is bytes, not {type(data).__name__}")
    # Canonical: every fragment but the last is full and the last holds at
    # least one byte, so (count, last length) fix the message size and a
    # set cannot be padded out with empty fragments.
    if index < count - 1 and len(data) != FRAGMENT_DATA_SIZE:
        raise PlaintextError(
            f"fragment {index} of {count} holds {len(data)} bytes; all but the last"
            f" hold exactly {FRAGMENT_DATA_SIZE}")
    if index == count - 1 and not 1 <= len(data) <= FRAGMENT_DATA_SIZE:
        raise PlaintextError(
            f"the last fragment holds 1 to {FRAGMENT_DATA_SIZE} bytes, not {len(data)}")


def encode_fragment(fragment):
    """The PLAINTEXT_SIZE-byte plaintext of *fragment*."""
    header = (bytes((TYPE_FRAGMENT,)) + fragment.set_id + fragment.index.to_bytes(4, "big")
              + fragment.count.to_bytes(4, "big") + len(fragment.data).to_bytes(2, "big"))
    body = header + fragment.data
    return body + bytes(PLAINTEXT_SIZE - len(body))


def encode_loop_cover(loop_id):
    if not isinstance(loop_id, bytes) or len(loop_id) != LOOP_ID_SIZE:
        raise PlaintextError(f"a loop id is {LOOP_ID_SIZE} bytes, not {loop_id!r}")
    return bytes((TYPE_LOOP_COVER,)) + loop_id + _LOOP_PADDING


def encode_drop_cover():
    return bytes((TYPE_DROP_COVER,)) + _COVER_BODY


def decode_plaintext(plaintext):
    """A Fragment, LoopCover, DropCover or Reserved, or a PlaintextError."""
    if not isinstance(plaintext, (bytes, bytearray)) or len(plaintext) != PLAINTEXT_SIZE:
        got = len(plaintext) if isinstance(plaintext, (bytes, bytearray)) else \
            type(plaintext).__name__
        raise PlaintextError(f"a plaintext is {PLAINTEXT_SIZE} bytes, not {got}")
    plaintext = bytes(plaintext)
    kind = plaintext[0]
    if kind == TYPE_FRAGMENT:
        set_id = plaintext[1:9]
        index = int.from_bytes(plaintext[9:13], "big")
        count = int.from_bytes(plaintext[13:17], "big")
        length = int.from_bytes(plaintext[17:19], "big")
        if length > FRAGMENT_DATA_SIZE:
            raise PlaintextError(
                f"fragment length {length} exceeds the {FRAGMENT_DATA_SIZE} bytes it has room for")
        end = FRAGMENT_HEADER_SIZE + length
        if plaintext[end:].count(0) != PLAINTEXT_SIZE - end:
            raise PlaintextError("fragment padding is not all zero")
        return Fragment(set_id, index, count, plaintext[FRAGMENT_HEADER_SIZE:end])
    if kind == TYPE_LOOP_COVER:
        if plaintext[1 + LOOP_ID_SIZE:] != _LOOP_PADDING:
            raise PlaintextError("a loop cover body is its id, then zero bytes")
        return LoopCover(plaintext[1:1 + LOOP_ID_SIZE])
    if kind == TYPE_DROP_COVER:
        if plaintext[1:] != _COVER_BODY:
            raise PlaintextError("a drop cover body is all zero")
        return DropCover()
    if kind in RESERVED_TYPES:
        return Reserved(kind, plaintext[1:])
    raise PlaintextError(f"unknown payload type {kind}")


def seal_fragment(recipient_public_key, fragment, randbytes=os.urandom):
    """The 975-byte payload that carries *fragment* to *recipient_public_key*."""
    return seal(recipient_public_key, encode_fragment(fragment), randbytes)


def loop_cover_payload(own_public_key, loop_id=None, randbytes=os.urandom):
    """A loop cover payload, sealed to the sender's own key (it comes back).

    *loop_id* (16 bytes) comes back in the LoopCover; without one, a random id.
    """
    if loop_id is None:
        loop_id = os.urandom(LOOP_ID_SIZE)
    return seal(own_public_key, encode_loop_cover(loop_id), randbytes)


def drop_cover_payload(recipient_public_key, randbytes=os.urandom):
    """A drop cover payload, sealed to whoever discards it (docs/decisions.md)."""
    return seal(recipient_public_key, encode_drop_cover(), randbytes)


def open_payload(private_key, public_key, payload):
    """Decrypt and parse *payload*: a Fragment, LoopCover, DropCover or Reserved.

    Raises a MessageLayerError: NotForMe when the tag fails (another key's
    payload, or altered), EnvelopeError or PlaintextError when malformed.
    The caller discards the payload in every one of those cases.
    """
    return decode_plaintext(open_envelope(private_key, public_key, payload))
