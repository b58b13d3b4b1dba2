"""Node addresses (32 bytes inside Sphinx headers) and client addresses (base58).

A node address is ``family (4 or 6) || port (u16 big-endian) || IP bytes ||
zero padding`` to 32 bytes, as nym v0.5 lays it out. A client address is the
base58 text of the client's 32-byte X25519 public key.
"""

import ipaddress
import re

import attrs
import base58

ADDRESS_SIZE = 32
# str.isdigit() accepts '²' and Arabic-Indic digits; a port is ASCII.
_PORT = re.compile(r"[0-9]{1,5}")
# base58 of 32 bytes is at most 44 characters; decoding is quadratic in the
# length, so a long string is refused before it is decoded.
_MAX_CLIENT_ADDRESS_TEXT = 64


class AddressError(ValueError):
    """A node or client address that cannot be parsed; the message says why."""


def _to_ip(value):
    if isinstance(value, str):
        try:
            value = ipaddress.ip_address(value)
        except ValueError:
            raise AddressError(f"{value[:60]!r} is not an IPv4 or IPv6 address")
    if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise AddressError(f"a node IP must be an IP address, not {type(value).__name__}")
    # A scope ("%eth0") names a local interface: it has no place in the
    # 32-byte form and would not survive a round trip through it.
    if getattr(value, "scope_id", None):
        raise AddressError(f"node IP {value} has a scope; give an address without %scope")
    return value


@attrs.frozen
class NodeAddress:
    """An IP address and TCP port of a mixnode or gateway."""

    ip: "ipaddress.IPv4Address | ipaddress.IPv6Address" = attrs.field(converter=_to_ip)
    port: int = attrs.field()

    @port.validator
    def _check_port(self, attribute, value):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise AddressError(f"a node port must be an integer in 1-65535, not {value!r}")

    @classmethod
    def parse(cls, text):
        """Parse ``1.2.3.4:1789`` or ``[::1]:1789``."""
        if not isinstance(text, str):
            raise AddressError(f"a node address must be text, not {type(text).__name__}")
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise AddressError(f"node address {text!r} is not of the form ip:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise AddressError(
                f"node address {text!r}: write an IPv6 address as [ip]:port")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise AddressError(
                f"node address {text[:80]!r}: {host[:60]!r} is not an IPv4 or IPv6 address")
        if ip.version == 6 and ip.scope_id:
            raise AddressError(
                f"node address {text[:80]!r}: an IPv6 scope (%{ip.scope_id}) cannot be encoded")
        if not _PORT.fullmatch(port_text):
            raise AddressError(
                f"node address {text[:80]!r}: port {port_text[:20]!r} is not a number")
        port = int(port_text)
        if not 0 < port < 65536:
            raise AddressError(f"node address {text!r}: port {port} is out of range 1-65535")
        return cls(ip, port)

    @classmethod
    def from_bytes(cls, data):
        """Decode the 32-byte form carried in Sphinx headers."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AddressError(f"a node address is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != ADDRESS_SIZE:
            raise AddressError(
                f"a node address is {ADDRESS_SIZE} bytes, not {len(data)}")
        family = data[0]
        port = int.from_bytes(data[1:3], "big")
        if family == 4:
            ip, rest = ipaddress.IPv4Address(bytes(data[3:7])), data[7:]
        elif family == 6:
            ip, rest = ipaddress.IPv6Address(bytes(data[3:19])), data[19:]
        else:
            raise AddressError(f"unknown node address family {family} (expected 4 or 6)")
        if any(rest):
            raise AddressError("node address padding is not zero")
        if port == 0:
            raise AddressError("node address has port 0")
        return cls(ip, port)

    def to_bytes(self):
        packed = self.ip.packed
        out = bytes([self.ip.version]) + self.port.to_bytes(2, "big") + packed
        return out + bytes(ADDRESS_SIZE - len(out))

    @property
    def host(self):
        return str(self.ip)

    def __str__(self):
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


def encode_client_address(public_key):
    """The base58 text form of a client's 32-byte public key."""
    if not isinstance(public_key, (bytes, bytearray, memoryview)):
        raise AddressError(f"a client address is bytes, not {type(public_key).__name__}")
    if len(public_key) != 32:
        raise AddressError(f"a client address is 32 bytes, not {len(public_key)}")
    return base58.b58encode(bytes(public_key)).decode("ascii")


def decode_client_address(text):
    """The 32 bytes of a base58 client address; AddressError says what is wrong."""
    if not isinstance(text, str):
        raise AddressError(
            f"a client address must be a base58 string, not {type(text).__name__}")
    if not text:
        raise AddressError("the client address is empty")
    if len(text) > _MAX_CLIENT_ADDRESS_TEXT:
        raise AddressError(
            f"client address {text[:60]!r}... is {len(text)} characters long; "
            f"base58 of 32 bytes is at most 44")
    bad = sorted({c for c in text if c not in base58.alphabet.decode("ascii")})
    if bad:
        raise AddressError(
            f"client address {text[:60]!r} is not base58: it contains {''.join(bad)[:20]!r}")
    try:
        raw = base58.b58decode(text)
    except ValueError as e:  # pragma: no cover - alphabet checked above
        raise AddressError(f"client address {text[:60]!r} is not base58: {e}")
    if len(raw) != 32:
        raise AddressError(
            f"client address {text[:60]!r} decodes to {len(raw)} bytes, not 32")
    return raw
