"""Splitting a message into fragments, and the message value itself.

A message is carried as ``kind (1) || bytes`` cut into FRAGMENT_DATA_SIZE
pieces, all in one set with a random 4-byte id (8 in version 1;
docs/message-format.md). The
kind lets the API give text back as text and binary as bytes.
"""

import os

import attrs

from .errors import MessageTooLarge, PlaintextError
from .envelope import VERSION
from .payload import (
    FRAGMENT_DATA_SIZE, Fragment, fragment_room, max_count, set_id_size)
from .payload import max_message_size as _longest

KIND_TEXT = 0x01
KIND_BINARY = 0x02
#: what an application sends and receives
DATA_KINDS = (KIND_TEXT, KIND_BINARY)
#: the reply layer's forward kinds (docs/surb.md §5.2): a message with reply
#: blocks and a sender tag, and reply blocks alone; the client parses them
KIND_REPLIABLE = 0x10
KIND_TOP_UP = 0x11
KINDS = DATA_KINDS + (KIND_REPLIABLE, KIND_TOP_UP)

#: the default largest message, in application bytes
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: the longest message version 2 can carry: 65,535 fragments of 548 bytes,
#: less the kind byte (35,913,179 bytes); a configured maximum above it is
#: refused (nymtx.client.config)
MAX_MESSAGE_SIZE_V2 = _longest(FRAGMENT_DATA_SIZE)


@attrs.frozen(slots=True)
class Message:
    """A whole message: *data* bytes of *kind* (KIND_TEXT or KIND_BINARY)."""

    kind: int
    data: bytes
    #: for a message that came with reply blocks, the sender's tag (16 bytes):
    #: whom to ``reply`` to; for a reply, the tag it answers. Else None.
    sender_tag: object = None

    @property
    def is_text(self):
        return self.kind == KIND_TEXT

    @property
    def text(self):
        """The text of a text message (its bytes are UTF-8 by construction)."""
        if self.kind != KIND_TEXT:
            raise TypeError("a binary message has no text")
        return self.data.decode("utf-8")

    @classmethod
    def from_text(cls, text):
        return cls(KIND_TEXT, text.encode("utf-8"))

    @classmethod
    def from_bytes(cls, data):
        return cls(KIND_BINARY, bytes(data))


def fragment_count(size, room=FRAGMENT_DATA_SIZE):
    """How many fragments (of *room* data bytes each) carry a message of *size*
    application bytes."""
    return -(-(size + 1) // room)


def max_fragments(max_message_size):
    """The largest fragment count a reader with this maximum accepts."""
    return fragment_count(max_message_size)


def check_size(size, max_message_size):
    if size > max_message_size:
        raise MessageTooLarge(
            f"message too long. Sent {size} bytes, but the maximum is {max_message_size}")


def fragment_message(message, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, randbytes=os.urandom,
                     version=VERSION):
    """The fragments of *message* (a Message), in index order, for envelopes of
    *version* (version 1 only for its test vectors).

    Raises MessageTooLarge, naming both sizes, past *max_message_size*.
    """
    if message.kind not in KINDS:
        raise PlaintextError(f"unknown message kind {message.kind!r}")
    check_size(len(message.data), max_message_size)
    framed = bytes((message.kind,)) + message.data
    step = fragment_room(version)
    count = fragment_count(len(message.data), step)
    if count > max_count(step):
        raise MessageTooLarge(
            f"message too long. Sent {len(message.data)} bytes, but the maximum is"
            f" {_longest(step)}")
    set_id = randbytes(set_id_size(step))
    return [Fragment(set_id, i, count, framed[i * step:(i + 1) * step], step)
            for i in range(count)]


def join_pieces(pieces):
    """The Message of a complete set's data pieces in index order, or a PlaintextError."""
    return join_framed(b"".join(pieces))


def join_framed(framed):
    """The Message of ``kind || data``, or a PlaintextError."""
    if not framed:
        raise PlaintextError("an empty set carries no message kind")
    kind, data = framed[0], framed[1:]
    if kind not in KINDS:
        raise PlaintextError(f"unknown message kind {kind}")
    if kind == KIND_TEXT:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PlaintextError(f"a text message is not UTF-8: {e}") from None
    return Message(kind, data)
