"""Anonymous replies: reply blocks, sender tags and the reply layer's messages.

A sender attaches N reply blocks and a random 16-byte sender tag to a
message. The recipient keeps the blocks under the tag (it never learns the
sender's address), replies through them, one block per reply packet, and
asks for more with a SURB request when it runs low. Layouts, byte by byte:
docs/surb.md ("Anonymous replies").
"""

import os

import attrs

from nymtx.reliable.ack import SURB_ACK_SIZE
from nymtx.sphinx.constants import IDENTIFIER_SIZE
from nymtx.sphinx.surb import MAX_SURB_MESSAGE_SIZE, SURB_SIZE, Surb, SurbError, build_surb

TAG_SIZE = 16
#: expires_at (u64, Unix seconds) || SURB
REPLY_SURB_SIZE = 8 + SURB_SIZE  # 420
#: what a reply packet carries after the replier's own SURB-ACK
REPLY_BODY_SIZE = MAX_SURB_MESSAGE_SIZE - SURB_ACK_SIZE  # 640
#: nym's default cap on what a peer may ask for at once
MAX_SURBS_PER_MESSAGE = 500

# Message kinds (the byte before a message's data, docs/message-format.md
# "Message framing"): 0x01 text and 0x02 binary are the message layer's.
REPLIABLE = 0x10  # forward: tag, reply blocks, then an inner kind and the data
TOP_UP = 0x11  # forward: tag and reply blocks only
SURB_REQUEST = 0x21  # reply: please send this many more blocks
TEXT = 0x01
BINARY = 0x02
_DATA_KINDS = (TEXT, BINARY)


class ReplyError(ValueError):
    """Reply-layer bytes that cannot be parsed; the message says why."""


@attrs.frozen
class ReplySurb:
    """A reply block as the recipient holds it: when its keys expire, and the SURB."""

    expires_at: int
    surb: Surb

    def to_bytes(self):
        return self.expires_at.to_bytes(8, "big") + self.surb.to_bytes()

    @classmethod
    def from_bytes(cls, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ReplyError(f"a reply block is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != REPLY_SURB_SIZE:
            raise ReplyError(f"a reply block is {REPLY_SURB_SIZE} bytes, not {len(data)}")
        try:
            surb = Surb.from_bytes(data[8:])
        except SurbError as e:
            raise ReplyError(str(e)) from None
        return cls(int.from_bytes(data[:8], "big"), surb)


@attrs.frozen
class Repliable:
    tag: bytes
    surbs: tuple
    kind: int
    body: bytes


@attrs.frozen
class TopUp:
    tag: bytes
    surbs: tuple


@attrs.frozen
class ReplyData:
    kind: int
    body: bytes


@attrs.frozen
class SurbRequest:
    amount: int


def _check_tag(tag):
    if not isinstance(tag, (bytes, bytearray)) or len(tag) != TAG_SIZE:
        raise ReplyError(f"a sender tag is {TAG_SIZE} bytes")
    return bytes(tag)


def _surb_list(surbs):
    surbs = list(surbs)
    if len(surbs) > MAX_SURBS_PER_MESSAGE:
        raise ReplyError(f"at most {MAX_SURBS_PER_MESSAGE} reply blocks per message,"
                         f" not {len(surbs)}")
    return len(surbs).to_bytes(2, "big") + b"".join(s.to_bytes() for s in surbs)


def _parse_surbs(data, offset):
    if len(data) < offset + 2:
        raise ReplyError("truncated before the reply block count")
    count = int.from_bytes(data[offset:offset + 2], "big")
    if count > MAX_SURBS_PER_MESSAGE:
        raise ReplyError(f"{count} reply blocks: more than the {MAX_SURBS_PER_MESSAGE} allowed")
    start = offset + 2
    end = start + count * REPLY_SURB_SIZE
    if len(data) < end:
        raise ReplyError(f"{count} reply blocks announced, {len(data) - start} bytes present")
    surbs = tuple(ReplySurb.from_bytes(data[i:i + REPLY_SURB_SIZE])
                  for i in range(start, end, REPLY_SURB_SIZE))
    return surbs, end


def encode_repliable(tag, surbs, kind, body):
    """The message data of a repliable message: REPLIABLE || tag || count (u16)
    || reply blocks || kind || body."""
    if kind not in _DATA_KINDS:
        raise ReplyError(f"the inner kind is text (1) or binary (2), not {kind!r}")
    return (bytes((REPLIABLE,)) + _check_tag(tag) + _surb_list(surbs) + bytes((kind,))
            + bytes(body))


def encode_top_up(tag, surbs):
    """TOP_UP || tag || count (u16) || reply blocks: more blocks, no data."""
    return bytes((TOP_UP,)) + _check_tag(tag) + _surb_list(surbs)


def decode_forward(data):
    """A :class:`Repliable` or :class:`TopUp` from a message's data; ReplyError
    for anything else (plain text and binary are the message layer's)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReplyError(f"message data is bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ReplyError("empty message data")
    kind = data[0]
    if kind not in (REPLIABLE, TOP_UP):
        raise ReplyError(f"kind {kind} is not a reply-layer kind")
    if len(data) < 1 + TAG_SIZE:
        raise ReplyError("truncated before the end of the sender tag")
    tag = data[1:1 + TAG_SIZE]
    surbs, end = _parse_surbs(data, 1 + TAG_SIZE)
    if kind == TOP_UP:
        if end != len(data):
            raise ReplyError(f"{len(data) - end} bytes after a top-up's reply blocks")
        return TopUp(tag, surbs)
    if end >= len(data):
        raise ReplyError("a repliable message without its inner kind")
    inner = data[end]
    if inner not in _DATA_KINDS:
        raise ReplyError(f"the inner kind is text (1) or binary (2), not {inner}")
    return Repliable(tag, surbs, inner, data[end + 1:])


def encode_reply(kind, body):
    """The data of a reply message (before fragmentation): kind || body."""
    if kind not in _DATA_KINDS:
        raise ReplyError(f"a reply is text (1) or binary (2), not {kind!r}")
    return bytes((kind,)) + bytes(body)


def encode_surb_request(amount):
    """SURB_REQUEST || amount (u16): sent through a reply block when few are left."""
    if not isinstance(amount, int) or not 1 <= amount <= MAX_SURBS_PER_MESSAGE:
        raise ReplyError(f"ask for 1 to {MAX_SURBS_PER_MESSAGE} reply blocks, not {amount!r}")
    return bytes((SURB_REQUEST,)) + amount.to_bytes(2, "big")


def decode_reply(data):
    """A :class:`ReplyData` or :class:`SurbRequest` from a reply's data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReplyError(f"reply data is bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ReplyError("empty reply data")
    kind = data[0]
    if kind in _DATA_KINDS:
        return ReplyData(kind, data[1:])
    if kind == SURB_REQUEST:
        if len(data) != 3:
            raise ReplyError(f"a SURB request is 3 bytes, not {len(data)}")
        amount = int.from_bytes(data[1:], "big")
        if not 1 <= amount <= MAX_SURBS_PER_MESSAGE:
            raise ReplyError(f"a SURB request for {amount} blocks (1 to"
                             f" {MAX_SURBS_PER_MESSAGE} allowed)")
        return SurbRequest(amount)
    raise ReplyError(f"unknown reply kind {kind}")


def reply_message(surb_ack, body):
    """What a replier hands ``use_surb``: its own SURB-ACK || REPLY_BODY_SIZE bytes."""
    if len(surb_ack) != SURB_ACK_SIZE:
        raise ReplyError(f"a SURB-ACK is {SURB_ACK_SIZE} bytes, not {len(surb_ack)}")
    if len(body) != REPLY_BODY_SIZE:
        raise ReplyError(f"a reply body is {REPLY_BODY_SIZE} bytes, not {len(body)}")
    return bytes(surb_ack) + bytes(body)


def split_reply(message):
    """(the replier's SURB-ACK, body) from an opened reply; ReplyError if the
    size is wrong. The builder's client sends the ack (the gateway cannot
    see inside a reply) through its own sending stream."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise ReplyError(f"a reply is bytes, not {type(message).__name__}")
    message = bytes(message)
    if len(message) != MAX_SURB_MESSAGE_SIZE:
        raise ReplyError(f"an opened reply is {MAX_SURB_MESSAGE_SIZE} bytes, not {len(message)}")
    return message[:SURB_ACK_SIZE], message[SURB_ACK_SIZE:]


def build_reply_surbs(count, route_for, own_key, expires_at, delays_for,
                      randbytes=os.urandom):
    """*count* fresh reply blocks to *own_key*: a list of (ReplySurb to hand
    out, SurbKeys to keep). *route_for()* gives a route (three mixnodes and
    the builder's gateway), *delays_for(n)* its n delays in nanoseconds;
    each block has its own route, delays and random identifier.
    *expires_at* is Unix seconds, or a callable giving them for a route
    (a block expires with the first key of its route to retire)."""
    out = []
    for _ in range(count):
        route = route_for()
        expires = expires_at(route) if callable(expires_at) else expires_at
        identifier = bytes(IDENTIFIER_SIZE)
        while not any(identifier):
            identifier = randbytes(IDENTIFIER_SIZE)
        surb, keys = build_surb(route, own_key, identifier, delays_for(len(route)), randbytes)
        out.append((ReplySurb(int(expires), surb), keys))
    return out


__all__ = [
    "TAG_SIZE", "REPLY_SURB_SIZE", "REPLY_BODY_SIZE", "MAX_SURBS_PER_MESSAGE",
    "REPLIABLE", "TOP_UP", "SURB_REQUEST", "ReplyError", "ReplySurb", "Repliable",
    "TopUp", "ReplyData", "SurbRequest", "build_reply_surbs", "encode_repliable", "encode_top_up",
    "decode_forward", "encode_reply", "encode_surb_request", "decode_reply",
    "reply_message", "split_reply",
]
