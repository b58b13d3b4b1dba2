"""Building and processing Sphinx packets (layout in docs/sphinx.md)."""

import hmac
import os

import attrs
from nacl.bindings import crypto_scalarmult_base

from .constants import (
    ADDRESS_SIZE, DELAY_SIZE, FLAG_FINAL, FLAG_FORWARD, GROUP_ELEMENT_SIZE,
    HEADER_SIZE, IDENTIFIER_SIZE, MAC_SIZE, MAX_HOPS, MAX_MESSAGE_SIZE,
    PACKET_SIZE, PAYLOAD_SIZE, PAYLOAD_TAG_SIZE, ROUTING_INFO_SIZE,
    ROUTING_SLOT_SIZE, VERSION)
from .crypto import (
    HopKeys, lioness_decrypt, lioness_encrypt, mac, replay_tag, stream,
    stream_xor, x25519, xor)
from .errors import (
    HeaderMacError, MessageTooLongError, PacketSizeError, PayloadError,
    ReplayError, RouteError, RoutingError, SphinxError)

_MAX_DELAY = (1 << 64) - 1
_STREAM_SIZE = ROUTING_INFO_SIZE + ROUTING_SLOT_SIZE
_ZERO_SLOT = bytes(ROUTING_SLOT_SIZE)
_ZERO_TAG = bytes(PAYLOAD_TAG_SIZE)
_BETA_START = GROUP_ELEMENT_SIZE + MAC_SIZE


@attrs.frozen
class Hop:
    """One node of a route: its 32-byte node address and X25519 public key."""

    address: bytes
    public_key: bytes


@attrs.frozen(slots=True)
class ForwardHop:
    """What a mixnode does with a packet: wait *delay_ns*, then send *packet* on."""

    next_address: bytes
    delay_ns: int
    packet: bytes


@attrs.frozen(slots=True)
class FinalHop:
    """A packet that ends here: *message* for *destination*, after *delay_ns*."""

    destination: bytes
    identifier: bytes
    message: bytes
    delay_ns: int


def _check_bytes(value, size, what):
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        got = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise RouteError(f"{what} must be {size} bytes, not {got}")
    return bytes(value)


def _check_route(route, destination, identifier, delays):
    """The route as checked (address, public key) pairs, and the final slot's fields."""
    n = len(route)
    if not 1 <= n <= MAX_HOPS:
        raise RouteError(f"a route has 1 to {MAX_HOPS} hops, not {n}")
    hops = [(_check_bytes(h.address, ADDRESS_SIZE, f"hop {i} address"),
             _check_bytes(h.public_key, 32, f"hop {i} public key"))
            for i, h in enumerate(route)]
    destination = _check_bytes(destination, ADDRESS_SIZE, "the destination")
    identifier = _check_bytes(identifier, IDENTIFIER_SIZE, "the identifier")
    if len(delays) != n:
        raise RouteError(f"a route of {n} hops needs {n} delays, not {len(delays)}")
    for d in delays:
        if not isinstance(d, int) or not 0 <= d <= _MAX_DELAY:
            raise RouteError(f"delay {d!r} is not a u64 number of nanoseconds")

    return hops, destination, identifier


#: The order of the prime-order subgroup of Curve25519.
_ORDER = 2 ** 252 + 27742317777372353535851937790883648493
_ORDER_INVERSE_MOD_8 = pow(_ORDER, -1, 8)


def _clamped(scalar):
    """*scalar* (32 bytes) as the integer X25519 multiplies by: bits 0-2 and
    255 cleared, bit 254 set."""
    value = int.from_bytes(scalar, "little")
    return (value & ~7 & ((1 << 255) - 1)) | (1 << 254)


def _unclamped(product):
    """A 32-byte scalar that X25519's clamping leaves as it is and that is
    congruent to *product* mod the group order, or None if there is none.

    Such a scalar is a multiple of 8 in [2^254, 2^255). The multiple of 8 that
    is congruent to *product* is unique mod 8*order (about 2^255), so it either
    lies in that range (about half of all products) or no representative does.
    """
    s = product + ((-product * _ORDER_INVERSE_MOD_8) % 8) * _ORDER
    if (1 << 254) <= s < (1 << 255):
        return s.to_bytes(32, "little")
    return None


def _factor_table(count=24):
    # Fixed clamping-invariant scalars with their inverses: when a product
    # has no clamping-invariant form, product = r * rest is tried with each r
    # until rest has one (each try succeeds about half of the time).
    table = []
    for i in range(count):
        r = _clamped(hmac.digest(b"nymtx-sphinx-split", bytes((i,)), "sha256"))
        table.append((r.to_bytes(32, "little"), pow(r, -1, _ORDER)))
    return tuple(table)


_FACTORS = _factor_table()


def _shared_secret(product, public_key):
    """X25519 of *public_key* by the scalar *product* (mod the group order).

    The sender's shared secret with hop i is its key multiplied by the
    clamped secret and by every earlier hop's clamped blinding factor. X25519
    clamps each scalar it is given, so that product cannot simply be handed
    to it; but every public key of an honest node is in the prime-order
    subgroup, where only the scalar mod the order matters, so any
    clamping-invariant scalar congruent to the product gives the same point,
    and the same bytes, as the multiplications one after another. That is one
    multiplication (about half of the time) or two, instead of i + 1.
    (A key with a small-order component is multiplied by multiples of 8
    either way, which removes that component alike.)
    """
    direct = _unclamped(product)
    if direct is not None:
        return x25519(direct, public_key)
    for factor, inverse in _FACTORS:
        rest = _unclamped(product * inverse % _ORDER)
        if rest is not None:
            return x25519(factor, x25519(rest, public_key))
    return None


def _build_header(hops, destination, identifier, delays, randbytes):
    """The header for checked *hops* [(address, public key)], and every hop's
    keys (shared with nymtx.sphinx.surb, which builds reply headers)."""
    n = len(hops)
    secret = randbytes(32)
    alpha = crypto_scalarmult_base(secret)
    keys = []
    product = _clamped(secret) % _ORDER
    for _, public_key in hops:
        shared = _shared_secret(product, public_key)
        if shared is None:
            # no factor in the table split the product (odds about 2^-24):
            # apply each earlier hop's blinding in turn, as a node would
            shared = x25519(secret, public_key)
            for earlier in keys:
                shared = x25519(earlier.blinding, shared)
        keys.append(HopKeys(shared))
        product = product * _clamped(keys[-1].blinding) % _ORDER
    streams = [stream(k.stream_key, _STREAM_SIZE) for k in keys]

    filler = b""
    for i in range(n - 1):
        filler = xor(filler + _ZERO_SLOT, streams[i][-(len(filler) + ROUTING_SLOT_SIZE):])

    final_slot = (bytes((FLAG_FINAL,)) + VERSION + destination + identifier
                  + delays[-1].to_bytes(DELAY_SIZE, "big"))
    plain_size = ROUTING_INFO_SIZE - len(filler)
    final_plain = final_slot + randbytes(plain_size - len(final_slot))
    beta = xor(final_plain, streams[-1]) + filler
    gamma = mac(keys[-1].mac_key, beta)
    for i in range(n - 2, -1, -1):
        slot = (bytes((FLAG_FORWARD,)) + VERSION + hops[i + 1][0]
                + delays[i].to_bytes(DELAY_SIZE, "big") + gamma)
        beta = xor(slot + beta[:ROUTING_INFO_SIZE - ROUTING_SLOT_SIZE], streams[i])
        gamma = mac(keys[i].mac_key, beta)

    return alpha + gamma + beta, keys


def build_packet(route, destination, identifier, message, delays, randbytes=os.urandom):
    """A PACKET_SIZE-byte packet that carries *message* along *route*.

    *delays* holds one delay in nanoseconds per hop, the last hop's included.
    *randbytes* supplies the ephemeral key and the padding; tests pass a
    seeded source to get deterministic packets.
    """
    hops, destination, identifier = _check_route(route, destination, identifier, delays)
    if not isinstance(message, (bytes, bytearray)):
        raise SphinxError(f"the message must be bytes, not {type(message).__name__}")
    if len(message) > MAX_MESSAGE_SIZE:
        raise MessageTooLongError(
            f"message too long: {len(message)} bytes, but the maximum is {MAX_MESSAGE_SIZE}")
    header, keys = _build_header(hops, destination, identifier, delays, randbytes)

    payload = _ZERO_TAG + destination + bytes(message) + b"\x01"
    payload += bytes(PAYLOAD_SIZE - len(payload))
    for k in reversed(keys):
        payload = lioness_encrypt(k.payload_key, payload)
    return header + payload


def _unwrap(private_key, packet, replay_cache):
    """Check and decrypt the header: (packet, alpha, hop keys, routing block).
    Shared with nymtx.sphinx.surb, whose gateway step reads the final hop itself."""
    if not isinstance(packet, (bytes, bytearray, memoryview)):
        raise PacketSizeError(f"a packet must be bytes, not {type(packet).__name__}")
    # bytes() first: len() of a memoryview counts items, which need not be bytes.
    packet = bytes(packet)
    if len(packet) != PACKET_SIZE:
        raise PacketSizeError(f"a packet is {PACKET_SIZE} bytes, not {len(packet)}")
    if not isinstance(private_key, (bytes, bytearray)) or len(private_key) != 32:
        got = len(private_key) if isinstance(private_key, (bytes, bytearray)) else type(private_key).__name__
        raise SphinxError(f"a private key is 32 bytes, not {got}")
    alpha = packet[:GROUP_ELEMENT_SIZE]
    beta = packet[_BETA_START:HEADER_SIZE]
    shared = x25519(private_key, alpha)
    keys = HopKeys(shared)
    if not hmac.compare_digest(mac(keys.mac_key, beta), packet[GROUP_ELEMENT_SIZE:_BETA_START]):
        raise HeaderMacError("header MAC mismatch: the header was altered or is not for this key")
    # After the MAC: only a well-formed packet can take a place in the cache.
    if replay_cache is not None and not replay_cache.insert(replay_tag(shared)):
        raise ReplayError("replayed packet: this shared secret was seen before")
    routing = stream_xor(keys.stream_key, beta + _ZERO_SLOT)
    if routing[1:4] != VERSION:
        raise RoutingError(f"unsupported packet version {routing[1:4].hex()}")
    return packet, alpha, keys, routing


def _final_message(plain, destination):
    """The message in a final hop's decrypted payload, or PayloadError."""
    if plain[:PAYLOAD_TAG_SIZE] != _ZERO_TAG:
        raise PayloadError("payload integrity check failed: the payload was altered")
    if plain[PAYLOAD_TAG_SIZE:PAYLOAD_TAG_SIZE + ADDRESS_SIZE] != destination:
        raise PayloadError("the payload's destination differs from the header's")
    body = plain[PAYLOAD_TAG_SIZE + ADDRESS_SIZE:].rstrip(b"\x00")
    if not body.endswith(b"\x01"):
        raise PayloadError("payload padding is malformed")
    return body[:-1]


def process_packet(private_key, packet, replay_cache=None):
    """Remove one layer: a ForwardHop or a FinalHop, or a SphinxError saying why not."""
    packet, alpha, keys, routing = _unwrap(private_key, packet, replay_cache)
    flag = routing[0]
    if flag == FLAG_FORWARD:
        next_packet = (x25519(keys.blinding, alpha) + routing[44:60] + routing[60:]
                       + lioness_decrypt(keys.payload_key, packet[HEADER_SIZE:]))
        return ForwardHop(routing[4:36], int.from_bytes(routing[36:44], "big"), next_packet)
    if flag == FLAG_FINAL:
        destination = routing[4:36]
        plain = lioness_decrypt(keys.payload_key, packet[HEADER_SIZE:])
        return FinalHop(destination, routing[36:52], _final_message(plain, destination),
                        int.from_bytes(routing[52:60], "big"))
    raise RoutingError(f"unknown routing flag {flag}")


def sample_delays(count, mean_seconds, rng):
    """*count* exponential delays with mean *mean_seconds*, as nanoseconds."""
    if mean_seconds < 0:
        raise ValueError(f"a mean delay cannot be negative ({mean_seconds})")
    if mean_seconds == 0:
        return [0] * count
    rate = 1.0 / mean_seconds
    return [min(int(rng.expovariate(rate) * 1e9), _MAX_DELAY) for _ in range(count)]
