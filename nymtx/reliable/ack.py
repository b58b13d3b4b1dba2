"""SURB-ACKs: a header back to the sender at the start of every payload.

Every Sphinx message a client sends (a fragment, loop cover, drop cover)
is ``SURB-ACK (367) || stored part (608)``. The gateway where it ends cuts
off the SURB-ACK, stores the rest, and once the store has committed, sends
``header || 1024 random bytes`` to the SURB-ACK's first hop. That packet
travels three mixnodes to the sender's own gateway, which cannot decode its
payload and stores it as a SURB delivery (nymtx.sphinx.surb); the sender
reads the fragment out of the identifier, which it encrypted under a key
only it holds. Layout: docs/surb.md.
"""

import os

import attrs
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nymtx.addressing import AddressError, NodeAddress
from nymtx.sphinx.constants import ADDRESS_SIZE, HEADER_SIZE, IDENTIFIER_SIZE, MAX_MESSAGE_SIZE
from nymtx.sphinx.surb import build_surb_header, empty_surb_packet

#: family (1) || port (2) || IP (16, an IPv4 address zero-padded): a node
#: address's first 19 bytes; the other 13 of its 32 are always zero
COMPACT_ADDRESS_SIZE = 19
SURB_ACK_SIZE = COMPACT_ADDRESS_SIZE + HEADER_SIZE  # 367
#: what the gateway stores for the client: the end-to-end envelope
STORED_SIZE = MAX_MESSAGE_SIZE - SURB_ACK_SIZE  # 608
ACK_KEY_SIZE = 32
#: message number 0 marks the SURB-ACK of cover: its ack is ignored
COVER = 0
_MAX_NUMBER = (1 << 64) - 1


class AckError(ValueError):
    """A SURB-ACK or a payload that cannot be parsed; the message says why."""


@attrs.frozen
class AckRef:
    """Which packet an ack is for: the outbox's message number, the fragment
    index and the attempt (0 for the first send)."""

    number: int
    index: int
    attempt: int


def _block(ack_key):
    if not isinstance(ack_key, (bytes, bytearray)) or len(ack_key) != ACK_KEY_SIZE:
        raise AckError(f"an ack key is {ACK_KEY_SIZE} bytes")
    return Cipher(algorithms.AES(bytes(ack_key)), modes.ECB())


def ack_identifier(ack_key, number, index, attempt):
    """The 16-byte SURB identifier: AES-256 of
    ``number u64 || index u32 || attempt u16 || 0x0000`` under *ack_key*."""
    if not (0 <= number <= _MAX_NUMBER and 0 <= index < 1 << 32 and 0 <= attempt < 1 << 16):
        raise AckError(f"ack fields out of range: {number}, {index}, {attempt}")
    plain = (number.to_bytes(8, "big") + index.to_bytes(4, "big") + attempt.to_bytes(2, "big")
             + b"\x00\x00")
    return _block(ack_key).encryptor().update(plain)


def open_ack(ack_key, identifier):
    """The :class:`AckRef` in a SURB identifier, or None: not one of ours (a
    reply's identifier, or anything else), or the ack of cover."""
    if not isinstance(identifier, (bytes, bytearray, memoryview)):
        return None
    identifier = bytes(identifier)
    if len(identifier) != IDENTIFIER_SIZE:
        return None
    plain = _block(ack_key).decryptor().update(identifier)
    if plain[14:] != b"\x00\x00":
        return None
    number = int.from_bytes(plain[:8], "big")
    if number == COVER:
        return None
    return AckRef(number, int.from_bytes(plain[8:12], "big"), int.from_bytes(plain[12:14], "big"))


def compact_address(address):
    """A 32-byte node address as the 19 bytes a SURB-ACK carries."""
    try:
        NodeAddress.from_bytes(address)  # refuse what the gateway could not parse back
    except AddressError as e:
        raise AckError(f"the ack's first hop: {e}") from None
    if any(address[COMPACT_ADDRESS_SIZE:]):
        raise AckError("a node address longer than 19 bytes cannot be compacted")
    return bytes(address[:COMPACT_ADDRESS_SIZE])


def build_surb_ack(route, own_key, ack_key, number, index, attempt, delays,
                   randbytes=os.urandom):
    """The SURB_ACK_SIZE-byte SURB-ACK for one packet: *route* is three
    mixnodes and the sender's own gateway, *own_key* the sender's public key,
    *delays* the ack's four delays in nanoseconds. Cover passes number 0."""
    identifier = ack_identifier(ack_key, number, index, attempt)
    header = build_surb_header(route, own_key, identifier, delays, randbytes)
    return compact_address(route[0].address) + header


def compose_payload(surb_ack, stored):
    """The Sphinx message (MAX_MESSAGE_SIZE bytes): SURB-ACK || stored part."""
    if len(surb_ack) != SURB_ACK_SIZE:
        raise AckError(f"a SURB-ACK is {SURB_ACK_SIZE} bytes, not {len(surb_ack)}")
    if len(stored) != STORED_SIZE:
        raise AckError(f"the stored part is {STORED_SIZE} bytes, not {len(stored)}")
    return bytes(surb_ack) + bytes(stored)


def split_payload(message):
    """(SURB-ACK, stored part) of a final hop's message; AckError if it is
    not MAX_MESSAGE_SIZE bytes. The SURB-ACK is not checked here: see
    :func:`ack_packet`."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise AckError(f"a payload is bytes, not {type(message).__name__}")
    message = bytes(message)
    if len(message) != MAX_MESSAGE_SIZE:
        raise AckError(f"a payload with a SURB-ACK is {MAX_MESSAGE_SIZE} bytes,"
                       f" not {len(message)}")
    return message[:SURB_ACK_SIZE], message[SURB_ACK_SIZE:]


def ack_packet(surb_ack, randbytes=os.urandom):
    """What the gateway sends once the stored part is committed:
    (the first hop's NodeAddress, the 1372-byte ack packet). AckError if the
    first hop is not a node address (the header itself only its first hop
    can check)."""
    if not isinstance(surb_ack, (bytes, bytearray, memoryview)):
        raise AckError(f"a SURB-ACK is bytes, not {type(surb_ack).__name__}")
    surb_ack = bytes(surb_ack)
    if len(surb_ack) != SURB_ACK_SIZE:
        raise AckError(f"a SURB-ACK is {SURB_ACK_SIZE} bytes, not {len(surb_ack)}")
    full = surb_ack[:COMPACT_ADDRESS_SIZE] + bytes(ADDRESS_SIZE - COMPACT_ADDRESS_SIZE)
    try:
        first_hop = NodeAddress.from_bytes(full)
    except AddressError as e:
        raise AckError(f"the SURB-ACK's first hop is not a node address: {e}") from None
    return first_hop, empty_surb_packet(surb_ack[COMPACT_ADDRESS_SIZE:], randbytes)
