"""The end-to-end message layer: pure functions and attrs classes, no I/O.

Every payload a client sends (fragments of real messages, loop and drop
cover) is a SURB-ACK (nymtx.reliable.ack) and one 608-byte envelope sealed
to its final recipient (``envelope``; version 1, 975 bytes, is still read); inside it a type byte and, for real messages, a
fragment of a set (``payload``, ``fragment``); the recipient reassembles
sets in bounded memory (``reassembly``); the sending stream takes one
fragment or drop cover per tick from a bounded queue (``sending``). The format is docs/message-format.md.
"""

from .envelope import (
    ENVELOPE_SIZE, ENVELOPE_V1_SIZE, PLAINTEXT_SIZE, PLAINTEXT_V1_SIZE, VERSION, VERSION_1,
    open_envelope, seal)
from .errors import (
    EnvelopeError, MessageLayerError, MessageTooLarge, NotForMe, PlaintextError, QueueFull,
    RecipientKeyError)
from .fragment import (
    DEFAULT_MAX_MESSAGE_SIZE, KIND_BINARY, KIND_TEXT, MAX_MESSAGE_SIZE_V2, Message,
    fragment_count, fragment_message, join_pieces)
from .payload import (
    FRAGMENT_DATA_SIZE, FRAGMENT_DATA_V1_SIZE, FRAGMENT_HEADER_SIZE, DropCover, Fragment, LoopCover, Reserved,
    decode_plaintext, drop_cover_payload, encode_fragment, loop_cover_payload, open_payload,
    seal_fragment)
from .reassembly import Reassembler, ReassemblyStats, Receiver, ReceiveStats
from .sending import Outgoing, Pending, SendingStream, SendQueue, drop_gateway

__all__ = [
    "ENVELOPE_SIZE", "ENVELOPE_V1_SIZE", "PLAINTEXT_SIZE", "PLAINTEXT_V1_SIZE", "VERSION",
    "VERSION_1", "open_envelope", "seal", "FRAGMENT_DATA_V1_SIZE",
    "EnvelopeError", "MessageLayerError", "MessageTooLarge", "NotForMe", "PlaintextError",
    "QueueFull", "RecipientKeyError",
    "DEFAULT_MAX_MESSAGE_SIZE", "KIND_BINARY", "KIND_TEXT", "Message", "fragment_count",
    "fragment_message", "join_pieces", "MAX_MESSAGE_SIZE_V2",
    "FRAGMENT_DATA_SIZE", "FRAGMENT_HEADER_SIZE", "DropCover", "Fragment", "LoopCover",
    "Reserved", "decode_plaintext", "drop_cover_payload", "encode_fragment",
    "loop_cover_payload", "open_payload", "seal_fragment",
    "Reassembler", "ReassemblyStats", "Receiver", "ReceiveStats",
    "Outgoing", "Pending", "SendingStream", "SendQueue", "drop_gateway",
]
