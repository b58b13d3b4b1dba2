"""The error codes of the gateway's client link, and the plaintext frames of
the release before it.

The link is the private one: :mod:`nymtx.gateway.channel` (Noise IK)
carrying the fixed-size frames of :mod:`nymtx.gateway.padded`
(``docs/gateway-protocol.md``); it shares the error codes, ``FrameError``
and the ledger's ``token_hash`` defined here. Neither the gateway nor the
client speaks the plaintext frames any more (every byte of them, a token
at login and every message, crossed the wire in the clear: issue 10). Their
pure codec stays, sending nothing, for what reads that release's traffic:
``nymtx.measure`` (captures of it) and ``benchmarks/legacy_plaintext.py``
(the baseline the private link is measured against). Frames are ``length
(u32 big-endian) || type (u8) || fields``; parsers raise
:class:`FrameError` with an error code and a message naming the problem.
"""

import hashlib
import hmac
import struct

import attrs

KEY_SIZE = 32
NONCE_SIZE = 32
TOKEN_SIZE = 32
PROOF_SIZE = 32
LENGTH_SIZE = 4
#: Large enough for a pull of MAX_PULL messages of the largest Sphinx message.
MAX_FRAME_SIZE = 256 * 1024
MAX_PULL = 200
MAX_ACK = 1000
MAX_MESSAGE = 4096
MAX_ERROR_TEXT = 1024
#: The largest frame a client has reason to send (an ack of MAX_ACK ids); the
#: gateway refuses longer ones rather than buffer them for every connection.
MAX_CLIENT_FRAME_SIZE = 3 + 8 * MAX_ACK
PROTOCOL_VERSION = 1

REGISTER_CONTEXT = b"nymtx gateway register v1"

# client -> gateway
REGISTER = 0x01
AUTHENTICATE = 0x02
PULL = 0x03
ACK = 0x04
# gateway -> client
HELLO = 0x81
REGISTERED = 0x82
AUTHENTICATED = 0x83
MESSAGES = 0x84
ACKED = 0x85
ERROR = 0xFF

# error codes
E_MALFORMED = 1
E_UNKNOWN_TYPE = 2
E_TOO_LARGE = 3
E_BAD_PROOF = 4
E_UNKNOWN_CLIENT = 5
E_BAD_TOKEN = 6
E_NOT_AUTHENTICATED = 7
E_ALREADY = 8
E_INTERNAL = 9
E_FULL = 10
E_RATE_LIMITED = 11

ERROR_NAMES = {
    E_MALFORMED: "malformed", E_UNKNOWN_TYPE: "unknown-type",
    E_TOO_LARGE: "too-large", E_BAD_PROOF: "bad-proof",
    E_UNKNOWN_CLIENT: "unknown-client", E_BAD_TOKEN: "bad-token",
    E_NOT_AUTHENTICATED: "not-authenticated", E_ALREADY: "already",
    E_INTERNAL: "internal", E_FULL: "full",
    E_RATE_LIMITED: "rate-limited",
}


class FrameError(ValueError):
    """A frame that cannot be accepted; ``code`` is sent back in the error frame."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class FrameTooLarge(FrameError):
    """A length prefix over the maximum: the stream cannot be trusted past it."""

    def __init__(self, length, maximum, bodies=()):
        super().__init__(
            E_TOO_LARGE, f"frame of {length} bytes is over the maximum of {maximum}")
        #: the complete frames that came before it, still to be answered
        self.bodies = list(bodies)


# ---- values ---------------------------------------------------------------

@attrs.frozen
class Register:
    client_key: bytes
    proof: bytes


@attrs.frozen
class Authenticate:
    client_key: bytes
    token: bytes


@attrs.frozen
class Pull:
    limit: int


@attrs.frozen
class Ack:
    ids: tuple


@attrs.frozen
class Hello:
    version: int
    gateway_key: bytes
    nonce: bytes


@attrs.frozen
class Registered:
    token: bytes


@attrs.frozen
class Authenticated:
    pass


@attrs.frozen
class Messages:
    messages: tuple  # of (id, bytes)


@attrs.frozen
class Acked:
    deleted: int


@attrs.frozen
class Error:
    code: int
    message: str


# ---- the length prefix ----------------------------------------------------

def frame(body):
    return struct.pack(">I", len(body)) + body


class FrameDecoder:
    """Cuts a byte stream into frame bodies."""

    def __init__(self, max_size=MAX_FRAME_SIZE):
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data):
        """Frame bodies completed by *data*; FrameTooLarge on an oversized prefix."""
        buf = self._buffer
        buf += data
        bodies = []
        while len(buf) >= LENGTH_SIZE:
            (length,) = struct.unpack_from(">I", buf)
            if length > self.max_size:
                raise FrameTooLarge(length, self.max_size, bodies)
            if len(buf) < LENGTH_SIZE + length:
                break
            bodies.append(bytes(buf[LENGTH_SIZE:LENGTH_SIZE + length]))
            del buf[:LENGTH_SIZE + length]
        return bodies

    @property
    def pending(self):
        return len(self._buffer)


# ---- encoding -------------------------------------------------------------

def encode(value):
    """The complete frame (length prefix included) for one frame value."""
    if isinstance(value, Register):
        body = bytes([REGISTER]) + _exact(value.client_key, KEY_SIZE) + _exact(value.proof, PROOF_SIZE)
    elif isinstance(value, Authenticate):
        body = bytes([AUTHENTICATE]) + _exact(value.client_key, KEY_SIZE) + _exact(value.token, TOKEN_SIZE)
    elif isinstance(value, Pull):
        body = struct.pack(">BH", PULL, value.limit)
    elif isinstance(value, Ack):
        body = struct.pack(">BH", ACK, len(value.ids)) + b"".join(
            struct.pack(">Q", i) for i in value.ids)
    elif isinstance(value, Hello):
        body = bytes([HELLO, value.version]) + _exact(value.gateway_key, KEY_SIZE) + _exact(value.nonce, NONCE_SIZE)
    elif isinstance(value, Registered):
        body = bytes([REGISTERED]) + _exact(value.token, TOKEN_SIZE)
    elif isinstance(value, Authenticated):
        body = bytes([AUTHENTICATED])
    elif isinstance(value, Messages):
        parts = [struct.pack(">BH", MESSAGES, len(value.messages))]
        for ident, message in value.messages:
            parts.append(struct.pack(">QH", ident, len(message)))
            parts.append(message)
        body = b"".join(parts)
    elif isinstance(value, Acked):
        body = struct.pack(">BI", ACKED, value.deleted)
    elif isinstance(value, Error):
        text = value.message.encode("utf-8")[:MAX_ERROR_TEXT]
        body = bytes([ERROR, value.code]) + text
    else:
        raise TypeError(f"not a gateway frame: {value!r}")
    return frame(body)


def _exact(data, size):
    if len(data) != size:
        raise ValueError(f"expected {size} bytes, got {len(data)}")
    return bytes(data)


# ---- parsing --------------------------------------------------------------

def _need(body, size, name):
    if len(body) != size:
        raise FrameError(
            E_MALFORMED, f"{name} frame is {len(body)} bytes, expected {size}")


def parse_client_frame(body):
    """A frame value from a frame body sent by a client."""
    if not body:
        raise FrameError(E_MALFORMED, "empty frame (no type byte)")
    kind = body[0]
    if kind == REGISTER:
        _need(body, 1 + KEY_SIZE + PROOF_SIZE, "register")
        return Register(body[1:33], body[33:65])
    if kind == AUTHENTICATE:
        _need(body, 1 + KEY_SIZE + TOKEN_SIZE, "authenticate")
        return Authenticate(body[1:33], body[33:65])
    if kind == PULL:
        _need(body, 3, "pull")
        (limit,) = struct.unpack_from(">H", body, 1)
        if not 1 <= limit <= MAX_PULL:
            raise FrameError(E_MALFORMED, f"pull limit {limit} is not in 1-{MAX_PULL}")
        return Pull(limit)
    if kind == ACK:
        if len(body) < 3:
            raise FrameError(E_MALFORMED, f"ack frame is {len(body)} bytes, at least 3 needed")
        (count,) = struct.unpack_from(">H", body, 1)
        if count > MAX_ACK:
            raise FrameError(E_MALFORMED, f"ack of {count} ids is over the maximum of {MAX_ACK}")
        _need(body, 3 + 8 * count, f"ack ({count} ids)")
        return Ack(struct.unpack_from(f">{count}Q", body, 3))
    raise FrameError(E_UNKNOWN_TYPE, f"unknown client frame type 0x{kind:02x}")


def parse_gateway_frame(body):
    """A frame value from a frame body sent by a gateway."""
    if not body:
        raise FrameError(E_MALFORMED, "empty frame (no type byte)")
    kind = body[0]
    if kind == HELLO:
        _need(body, 2 + KEY_SIZE + NONCE_SIZE, "hello")
        return Hello(body[1], body[2:34], body[34:66])
    if kind == REGISTERED:
        _need(body, 1 + TOKEN_SIZE, "registered")
        return Registered(body[1:33])
    if kind == AUTHENTICATED:
        _need(body, 1, "authenticated")
        return Authenticated()
    if kind == MESSAGES:
        if len(body) < 3:
            raise FrameError(E_MALFORMED, "messages frame is shorter than 3 bytes")
        (count,) = struct.unpack_from(">H", body, 1)
        offset, messages = 3, []
        for n in range(count):
            if len(body) < offset + 10:
                raise FrameError(E_MALFORMED, f"messages frame truncated in message {n}")
            ident, size = struct.unpack_from(">QH", body, offset)
            offset += 10
            if len(body) < offset + size:
                raise FrameError(E_MALFORMED, f"messages frame truncated in message {n}")
            messages.append((ident, body[offset:offset + size]))
            offset += size
        if offset != len(body):
            raise FrameError(
                E_MALFORMED, f"messages frame has {len(body) - offset} bytes after its last message")
        return Messages(tuple(messages))
    if kind == ACKED:
        _need(body, 5, "acked")
        return Acked(struct.unpack_from(">I", body, 1)[0])
    if kind == ERROR:
        if len(body) < 2:
            raise FrameError(E_MALFORMED, "error frame has no code")
        return Error(body[1], body[2:].decode("utf-8", errors="replace"))
    raise FrameError(E_UNKNOWN_TYPE, f"unknown gateway frame type 0x{kind:02x}")


# ---- registration proof ---------------------------------------------------

def registration_proof(shared_secret, nonce, client_key):
    """HMAC-SHA256 keyed by the client-gateway X25519 secret over the nonce and key."""
    return hmac.new(shared_secret, REGISTER_CONTEXT + nonce + client_key,
                    hashlib.sha256).digest()


def token_hash(token):
    return hashlib.sha256(token).digest()
