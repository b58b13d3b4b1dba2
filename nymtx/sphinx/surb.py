"""Single-use reply blocks (SURBs): a header back to its builder, used once.

The builder makes a header for a route that ends at its own gateway, with
its own key as the destination and a random 16-byte SURB identifier in the
final slot, and hands out the header, the first hop's address and a fresh
payload key. The replier encrypts its message with that one key (Lioness)
and sends header || payload like any packet; every hop removes its layer
as it always does. The builder's gateway cannot decode the result (only the
builder knows the hops' payload keys), so it stores the identifier and the
1024-byte block for the destination; the builder finds its keys by the
identifier and undoes every layer. Layout and vectors: docs/surb.md.

Why one key and not every hop's payload key (nym v0.8 hands out all of
them): a replier who knew every layer could compute the payload at every
hop and follow its reply across unencrypted mix links to its builder's
gateway. With one key it knows only what it sends.
"""

import os

import attrs

from .constants import (
    ADDRESS_SIZE, FLAG_FINAL, FLAG_FORWARD, HEADER_SIZE, IDENTIFIER_SIZE,
    PAYLOAD_SIZE, PAYLOAD_TAG_SIZE)
from .crypto import lioness_decrypt, lioness_encrypt, x25519
from .errors import MessageTooLongError, PayloadError, RoutingError, SphinxError
from .packet import (
    FinalHop, ForwardHop, _build_header, _check_bytes, _check_route,
    _final_message, _unwrap)

PAYLOAD_KEY_SIZE = 32
#: first hop || header || payload key
SURB_SIZE = ADDRESS_SIZE + HEADER_SIZE + PAYLOAD_KEY_SIZE  # 412
#: 16 zero bytes || message || 0x01 || zero padding, in one 1024-byte block
MAX_SURB_MESSAGE_SIZE = PAYLOAD_SIZE - PAYLOAD_TAG_SIZE - 1  # 1007
#: what a gateway stores for a SURB delivery: identifier || block
DELIVERY_SIZE = IDENTIFIER_SIZE + PAYLOAD_SIZE  # 1040

_ZERO_TAG = bytes(PAYLOAD_TAG_SIZE)
_ZERO_ID = bytes(IDENTIFIER_SIZE)


class SurbError(SphinxError):
    """A SURB or SURB delivery that cannot be parsed or opened."""


@attrs.frozen
class Surb:
    """What the replier gets: the first hop's 32-byte address, the header,
    and the key it encrypts its payload with."""

    first_hop: bytes
    header: bytes
    payload_key: bytes

    def to_bytes(self):
        return self.first_hop + self.header + self.payload_key

    @classmethod
    def from_bytes(cls, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SurbError(f"a SURB is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != SURB_SIZE:
            raise SurbError(f"a SURB is {SURB_SIZE} bytes, not {len(data)}")
        return cls(data[:ADDRESS_SIZE], data[ADDRESS_SIZE:ADDRESS_SIZE + HEADER_SIZE],
                   data[ADDRESS_SIZE + HEADER_SIZE:])


@attrs.frozen
class SurbKeys:
    """What the builder keeps to open a reply: the SURB identifier, every
    hop's payload key (hop 0 first) and the replier's payload key."""

    identifier: bytes
    hop_keys: tuple
    payload_key: bytes

    def to_bytes(self):
        """identifier (16) || n (u8) || n hop keys (32 each) || payload key (32)."""
        return (self.identifier + bytes((len(self.hop_keys),)) + b"".join(self.hop_keys)
                + self.payload_key)

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        if len(data) < IDENTIFIER_SIZE + 1:
            raise SurbError(f"SURB keys are at least {IDENTIFIER_SIZE + 1} bytes, not {len(data)}")
        n = data[IDENTIFIER_SIZE]
        want = IDENTIFIER_SIZE + 1 + 32 * n + PAYLOAD_KEY_SIZE
        if not 1 <= n <= 5 or len(data) != want:
            raise SurbError(f"SURB keys for {n} hops must be {want} bytes, not {len(data)}")
        keys = data[IDENTIFIER_SIZE + 1:-PAYLOAD_KEY_SIZE]
        return cls(data[:IDENTIFIER_SIZE], tuple(keys[i:i + 32] for i in range(0, 32 * n, 32)),
                   data[-PAYLOAD_KEY_SIZE:])


@attrs.frozen
class SurbDelivery:
    """A final-hop packet whose payload the gateway cannot decode, with a
    non-zero identifier: a SURB's packet (an ack or a reply) for its builder."""

    destination: bytes
    identifier: bytes
    block: bytes
    delay_ns: int

    def stored(self):
        """The record the gateway keeps for the destination (DELIVERY_SIZE bytes)."""
        return self.identifier + self.block


def build_surb(route, destination, identifier, delays, randbytes=os.urandom):
    """A SURB along *route* (its last hop the builder's gateway) to
    *destination* (the builder's key), and the keys to open what comes back.

    Random draws, in order: the header's secret x (32), its padding, the
    payload key (32).
    """
    hops, destination, identifier = _check_route(route, destination, identifier, delays)
    if identifier == _ZERO_ID:
        raise SurbError("a SURB identifier must not be all zero (that marks a forward packet)")
    header, keys = _build_header(hops, destination, identifier, delays, randbytes)
    payload_key = randbytes(PAYLOAD_KEY_SIZE)
    surb = Surb(hops[0][0], header, payload_key)
    return surb, SurbKeys(identifier, tuple(k.payload_key for k in keys), payload_key)


def build_surb_header(route, destination, identifier, delays, randbytes=os.urandom):
    """A SURB's header alone, for a SURB-ACK (whose payload nobody reads).
    Random draws: x (32), then the header's padding."""
    hops, destination, identifier = _check_route(route, destination, identifier, delays)
    if identifier == _ZERO_ID:
        raise SurbError("a SURB identifier must not be all zero (that marks a forward packet)")
    return _build_header(hops, destination, identifier, delays, randbytes)[0]


def use_surb(surb, message):
    """The PACKET_SIZE-byte packet that carries *message* (at most
    MAX_SURB_MESSAGE_SIZE bytes) back to the SURB's builder."""
    if not isinstance(surb, Surb):
        raise SurbError(f"use_surb needs a Surb, not {type(surb).__name__}")
    if not isinstance(message, (bytes, bytearray)):
        raise SurbError(f"the message must be bytes, not {type(message).__name__}")
    if len(message) > MAX_SURB_MESSAGE_SIZE:
        raise MessageTooLongError(
            f"reply too long: {len(message)} bytes, but a SURB carries at most"
            f" {MAX_SURB_MESSAGE_SIZE}")
    plain = _ZERO_TAG + bytes(message) + b"\x01"
    plain += bytes(PAYLOAD_SIZE - len(plain))
    return surb.header + lioness_encrypt(surb.payload_key, plain)


def empty_surb_packet(header, randbytes=os.urandom):
    """A packet from a SURB header alone, with a random payload: what a
    gateway sends for a SURB-ACK, whose meaning is its identifier."""
    header = _check_bytes(header, HEADER_SIZE, "a SURB header")
    return header + randbytes(PAYLOAD_SIZE)


def open_surb_delivery(keys, block):
    """The replier's message in the block a gateway stored, or SurbError.

    The gateway's own layer is already off: the builder puts every hop's
    layer back on (last hop first), then removes the replier's."""
    if not isinstance(block, (bytes, bytearray, memoryview)) or len(bytes(block)) != PAYLOAD_SIZE:
        raise SurbError(f"a SURB delivery block is {PAYLOAD_SIZE} bytes")
    p = bytes(block)
    for k in reversed(keys.hop_keys):
        p = lioness_encrypt(k, p)
    plain = lioness_decrypt(keys.payload_key, p)
    if plain[:PAYLOAD_TAG_SIZE] != _ZERO_TAG:
        raise SurbError("the reply's integrity check failed: altered, or not for these keys")
    body = plain[PAYLOAD_TAG_SIZE:].rstrip(b"\x00")
    if not body.endswith(b"\x01"):
        raise SurbError("the reply's padding is malformed")
    return body[:-1]


def parse_delivery(stored):
    """(identifier, block) from a gateway's DELIVERY_SIZE-byte record."""
    if not isinstance(stored, (bytes, bytearray, memoryview)):
        raise SurbError(f"a SURB delivery is bytes, not {type(stored).__name__}")
    stored = bytes(stored)
    if len(stored) != DELIVERY_SIZE:
        raise SurbError(f"a SURB delivery is {DELIVERY_SIZE} bytes, not {len(stored)}")
    return stored[:IDENTIFIER_SIZE], stored[IDENTIFIER_SIZE:]


def process_gateway_packet(private_key, packet, replay_cache=None):
    """A gateway's view of a packet: what ``process_packet`` returns for a
    forward packet (FinalHop, or ForwardHop for a packet not meant to end
    here), or a :class:`SurbDelivery` when the final payload does not decode
    and the identifier is not zero. Any other failure is a SphinxError."""
    packet, alpha, keys, routing = _unwrap(private_key, packet, replay_cache)
    flag = routing[0]
    if flag == FLAG_FORWARD:
        next_packet = (x25519(keys.blinding, alpha) + routing[44:60] + routing[60:]
                       + lioness_decrypt(keys.payload_key, packet[HEADER_SIZE:]))
        return ForwardHop(routing[4:36], int.from_bytes(routing[36:44], "big"), next_packet)
    if flag != FLAG_FINAL:
        raise RoutingError(f"unknown routing flag {flag}")
    destination, identifier = routing[4:36], routing[36:52]
    delay = int.from_bytes(routing[52:60], "big")
    plain = lioness_decrypt(keys.payload_key, packet[HEADER_SIZE:])
    try:
        return FinalHop(destination, identifier, _final_message(plain, destination), delay)
    except PayloadError:
        if identifier == _ZERO_ID:
            raise
    return SurbDelivery(destination, identifier, plain, delay)

