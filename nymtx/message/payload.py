"""What an envelope holds: a type byte, then a fragment or cover.

The PLAINTEXT_SIZE (559; 926 in a version-1 envelope) bytes inside an
envelope (docs/message-format.md):

    type (1) || body (558; 925)

    type 0x01  fragment:    set id (4) || index u16 || count u16 || length u16
                            || data (length) || zero padding   (version 2)
                            set id (8) || index u32 || count u32 || length u16
                            || data (length) || zero padding   (version 1)
    type 0x02  loop cover:  loop id (16) || zero bytes
    type 0x03  drop cover:  zero bytes
    type 0x04  ack, 0x05 reply: reserved for reliable delivery and replies;
               this version hands the body on unparsed

The type byte is inside the AEAD, so nobody but the recipient learns it:
cover and real fragments are the same 975 bytes of ciphertext on the wire.
"""

import os

import attrs

from .envelope import (
    PLAINTEXT_SIZE, PLAINTEXT_V1_SIZE, VERSION, VERSION_1, open_envelope, seal)
from .errors import PlaintextError

TYPE_FRAGMENT = 0x01
TYPE_LOOP_COVER = 0x02
TYPE_DROP_COVER = 0x03
TYPE_ACK = 0x04
TYPE_REPLY = 0x05
RESERVED_TYPES = (TYPE_ACK, TYPE_REPLY)

#: version 2's fragment header (docs/message-format.md, "Fragment"):
#: type || set id (4) || index u16 || count u16 || length u16. Every byte of
#: header is a byte of data lost in every packet: 11 rather than 19 bytes is
#: what takes the data from 540 to 548 of the 608 bytes after the SURB-ACK
#: (0.888 -> 0.901 of that room).
SET_ID_SIZE = 4
FRAGMENT_HEADER_SIZE = 1 + SET_ID_SIZE + 2 + 2 + 2  # 11
#: the wide header of version 1 (read only, and its vectors) and of reply
#: bodies (docs/surb.md §5.3), unchanged: type || set id (8) || index u32 ||
#: count u32 || length u16
SET_ID_V1_SIZE = 8
FRAGMENT_HEADER_V1_SIZE = 1 + SET_ID_V1_SIZE + 4 + 4 + 2  # 19
#: application bytes one fragment carries: the rest of the plaintext
FRAGMENT_DATA_SIZE = PLAINTEXT_SIZE - FRAGMENT_HEADER_SIZE  # 548
#: the same in a version-1 envelope (still read)
FRAGMENT_DATA_V1_SIZE = PLAINTEXT_V1_SIZE - FRAGMENT_HEADER_V1_SIZE  # 907
#: a reply packet's body (docs/surb.md §5.3): the 1007 bytes a SURB carries,
#: after the replier's SURB-ACK (367); no envelope (the SURB's key hides it)
REPLY_BODY_SIZE = 640
#: the application bytes one reply fragment carries (the wide header)
REPLY_DATA_SIZE = REPLY_BODY_SIZE - FRAGMENT_HEADER_V1_SIZE  # 621
#: the largest count a version-2 fragment can carry (a u16), and a wide one
MAX_COUNT = (1 << 16) - 1
MAX_COUNT_V1 = (1 << 32) - 1


@attrs.frozen(slots=True)
class _Layout:
    """Where a fragment's fields sit: fixed by its room (so by its format)."""

    plaintext: int       # the plaintext (or reply body) it fills
    set_id: int          # set id bytes
    number: int          # bytes of index and of count each
    max_count: int

    @property
    def header(self):
        return 1 + self.set_id + 2 * self.number + 2


_COMPACT = _Layout(PLAINTEXT_SIZE, SET_ID_SIZE, 2, MAX_COUNT)
#: a fragment's room (its full data size) -> its layout
_LAYOUT_OF_ROOM = {
    FRAGMENT_DATA_SIZE: _COMPACT,
    FRAGMENT_DATA_V1_SIZE: _Layout(PLAINTEXT_V1_SIZE, SET_ID_V1_SIZE, 4, MAX_COUNT_V1),
    REPLY_DATA_SIZE: _Layout(REPLY_BODY_SIZE, SET_ID_V1_SIZE, 4, MAX_COUNT_V1)}
_ROOM_OF_PLAINTEXT = {layout.plaintext: room for room, layout in _LAYOUT_OF_ROOM.items()}
_PLAINTEXT_OF_VERSION = {VERSION: PLAINTEXT_SIZE, VERSION_1: PLAINTEXT_V1_SIZE}
LOOP_ID_SIZE = 16


def plaintext_size(version=VERSION):
    """The plaintext size of envelope *version* (PlaintextError if unknown)."""
    try:
        return _PLAINTEXT_OF_VERSION[version]
    except (KeyError, TypeError):
        raise PlaintextError(f"unknown envelope version {version!r}") from None


def fragment_room(version=VERSION):
    """The data one fragment carries in an envelope of *version*: 548 (907 in v1)."""
    return _ROOM_OF_PLAINTEXT[plaintext_size(version)]


def set_id_size(room=FRAGMENT_DATA_SIZE):
    """The set id size of a fragment of *room*: 4 (version 2), 8 (v1, replies)."""
    return _LAYOUT_OF_ROOM[room].set_id


def max_count(room=FRAGMENT_DATA_SIZE):
    """The most fragments a set of *room* can have: 65,535 in version 2."""
    return _LAYOUT_OF_ROOM[room].max_count


def max_message_size(room=FRAGMENT_DATA_SIZE):
    """The longest message (application bytes) one set of *room* carries:
    65,535 x 548 - 1 = 35,913,179 in version 2 (the kind byte takes one)."""
    return max_count(room) * room - 1


@attrs.frozen(slots=True)
class Fragment:
    """Piece *index* (0-based) of the *count* pieces of set *set_id*."""

    set_id: bytes
    index: int
    count: int
    data: bytes
    #: the full data size of a fragment of this set: FRAGMENT_DATA_SIZE, or
    #: FRAGMENT_DATA_V1_SIZE for one read from (or made for) a version-1 envelope
    room: int = FRAGMENT_DATA_SIZE

    def __attrs_post_init__(self):
        if self.room not in _LAYOUT_OF_ROOM:
            raise PlaintextError(f"a fragment's room is {FRAGMENT_DATA_SIZE},"
                                 f" {FRAGMENT_DATA_V1_SIZE} or {REPLY_DATA_SIZE} (a reply)"
                                 f" bytes, not {self.room!r}")
        _check_fragment(self.set_id, self.index, self.count, self.data, self.room)


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


def _check_fragment(set_id, index, count, data, room=FRAGMENT_DATA_SIZE):
    layout = _LAYOUT_OF_ROOM[room]
    if not isinstance(set_id, bytes) or len(set_id) != layout.set_id:
        raise PlaintextError(f"a set id is {layout.set_id} bytes, not {set_id!r}")
    if not isinstance(count, int) or not 1 <= count <= layout.max_count:
        raise PlaintextError(f"a fragment count is 1 to {layout.max_count}, not {count!r}")
    if not isinstance(index, int) or not 0 <= index < count:
        raise PlaintextError(f"fragment index {index!r} is not below its count {count}")
    if not isinstance(data, bytes):
        raise PlaintextError(f"fragment data is bytes, not {type(data).__name__}")
    # Canonical: every fragment but the last is full and the last holds at
    # least one byte, so (count, last length) fix the message size and a
    # set cannot be padded out with empty fragments.
    if index < count - 1 and len(data) != room:
        raise PlaintextError(
            f"fragment {index} of {count} holds {len(data)} bytes; all but the last"
            f" hold exactly {room}")
    if index == count - 1 and not 1 <= len(data) <= room:
        raise PlaintextError(
            f"the last fragment holds 1 to {room} bytes, not {len(data)}")


def encode_fragment(fragment):
    """The plaintext of *fragment*: PLAINTEXT_SIZE bytes (PLAINTEXT_V1_SIZE for
    a fragment whose room is FRAGMENT_DATA_V1_SIZE)."""
    layout = _LAYOUT_OF_ROOM[fragment.room]
    header = (bytes((TYPE_FRAGMENT,)) + fragment.set_id
              + fragment.index.to_bytes(layout.number, "big")
              + fragment.count.to_bytes(layout.number, "big")
              + len(fragment.data).to_bytes(2, "big"))
    body = header + fragment.data
    return body + bytes(layout.plaintext - len(body))


def encode_reply_fragment(fragment):
    """The REPLY_BODY_SIZE-byte body of a reply packet: a fragment (of room
    REPLY_DATA_SIZE) laid out as in an envelope, type byte 0x05."""
    if fragment.room != REPLY_DATA_SIZE:
        raise PlaintextError(f"a reply fragment's room is {REPLY_DATA_SIZE}, not {fragment.room}")
    return bytes((TYPE_REPLY,)) + encode_fragment(fragment)[1:]


def decode_reply_fragment(body):
    """The Fragment in a reply packet's body, or a PlaintextError."""
    if not isinstance(body, (bytes, bytearray)) or len(body) != REPLY_BODY_SIZE:
        got = len(body) if isinstance(body, (bytes, bytearray)) else type(body).__name__
        raise PlaintextError(f"a reply body is {REPLY_BODY_SIZE} bytes, not {got}")
    if body[0] != TYPE_REPLY:
        raise PlaintextError(f"a reply body starts with type {TYPE_REPLY}, not {body[0]}")
    return _decode_fragment(bytes(body), REPLY_DATA_SIZE)


def _decode_fragment(plaintext, room):
    size = len(plaintext)
    layout = _LAYOUT_OF_ROOM[room]
    at = 1 + layout.set_id
    set_id = plaintext[1:at]
    index = int.from_bytes(plaintext[at:at + layout.number], "big")
    at += layout.number
    count = int.from_bytes(plaintext[at:at + layout.number], "big")
    at += layout.number
    length = int.from_bytes(plaintext[at:at + 2], "big")
    if length > room:
        raise PlaintextError(
            f"fragment length {length} exceeds the {room} bytes it has room for")
    header = layout.header
    end = header + length
    if plaintext[end:].count(0) != size - end:
        raise PlaintextError("fragment padding is not all zero")
    return Fragment(set_id, index, count, plaintext[header:end], room)


def encode_loop_cover(loop_id, version=VERSION):
    if not isinstance(loop_id, bytes) or len(loop_id) != LOOP_ID_SIZE:
        raise PlaintextError(f"a loop id is {LOOP_ID_SIZE} bytes, not {loop_id!r}")
    return (bytes((TYPE_LOOP_COVER,)) + loop_id
            + bytes(plaintext_size(version) - 1 - LOOP_ID_SIZE))


def encode_drop_cover(version=VERSION):
    return bytes((TYPE_DROP_COVER,)) + bytes(plaintext_size(version) - 1)


def decode_plaintext(plaintext):
    """A Fragment, LoopCover, DropCover or Reserved, or a PlaintextError.

    A plaintext of PLAINTEXT_SIZE bytes (version 2) or PLAINTEXT_V1_SIZE
    (version 1); a fragment's room is what its plaintext holds."""
    if not isinstance(plaintext, (bytes, bytearray)) or \
            len(plaintext) not in (PLAINTEXT_SIZE, PLAINTEXT_V1_SIZE):
        got = len(plaintext) if isinstance(plaintext, (bytes, bytearray)) else \
            type(plaintext).__name__
        raise PlaintextError(f"a plaintext is {PLAINTEXT_SIZE} bytes (or {PLAINTEXT_V1_SIZE}"
                             f" in version 1), not {got}")
    plaintext = bytes(plaintext)
    size = len(plaintext)
    room = _ROOM_OF_PLAINTEXT[size]
    kind = plaintext[0]
    if kind == TYPE_FRAGMENT:
        return _decode_fragment(plaintext, room)
    if kind == TYPE_LOOP_COVER:
        if plaintext[1 + LOOP_ID_SIZE:].count(0) != size - 1 - LOOP_ID_SIZE:
            raise PlaintextError("a loop cover body is its id, then zero bytes")
        return LoopCover(plaintext[1:1 + LOOP_ID_SIZE])
    if kind == TYPE_DROP_COVER:
        if plaintext[1:].count(0) != size - 1:
            raise PlaintextError("a drop cover body is all zero")
        return DropCover()
    if kind in RESERVED_TYPES:
        return Reserved(kind, plaintext[1:])
    raise PlaintextError(f"unknown payload type {kind}")


def seal_fragment(recipient_public_key, fragment, randbytes=os.urandom):
    """The envelope that carries *fragment* to *recipient_public_key*:
    ENVELOPE_SIZE bytes (version 1's 975 for a fragment of room 907)."""
    return seal(recipient_public_key, encode_fragment(fragment), randbytes)


def loop_cover_payload(own_public_key, loop_id=None, randbytes=os.urandom, version=VERSION):
    """A loop cover payload, sealed to the sender's own key (it comes back).

    *loop_id* (16 bytes) comes back in the LoopCover; without one, a random id.
    """
    if loop_id is None:
        loop_id = os.urandom(LOOP_ID_SIZE)
    return seal(own_public_key, encode_loop_cover(loop_id, version), randbytes)


def drop_cover_payload(recipient_public_key, randbytes=os.urandom, version=VERSION):
    """A drop cover payload, sealed to whoever discards it (docs/decisions.md)."""
    return seal(recipient_public_key, encode_drop_cover(version), randbytes)


def open_payload(private_key, public_key, payload):
    """Decrypt and parse *payload*: a Fragment, LoopCover, DropCover or Reserved.

    Raises a MessageLayerError: NotForMe when the tag fails (another key's
    payload, or altered), EnvelopeError or PlaintextError when malformed.
    The caller discards the payload in every one of those cases.
    """
    return decode_plaintext(open_envelope(private_key, public_key, payload))
