"""The primitives of one Sphinx hop, tuned for the per-packet hot path.

Each hop's 32-byte X25519 shared secret goes through HKDF-SHA256 (RFC 5869)
and yields 96 bytes, read as

    MAC key (16) || header stream key (16) || blinding factor (32) || payload key (32)

A hop checks the MAC before it derives anything else, so a forged header
costs one HMAC block beyond the X25519, and the final hop never derives a
blinding factor it has no use for. ``hmac.digest`` is the one-shot C path: an
expand block costs about a microsecond, where ``hmac.new`` costs several.
"""

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError, RuntimeError as NaclRuntimeError, TypeError as NaclTypeError

from .constants import MAC_SIZE
from .errors import InvalidGroupElementError

HKDF_SALT = b"nymtx-sphinx-v1"
HKDF_INFO = b"nymtx sphinx hop keys"
_ZERO_IV = bytes(16)
_CHACHA_NONCE = bytes(16)  # counter 0, nonce 0: each Lioness key is used once


def x25519(scalar, point):
    """X25519 that turns every failure (small-order point, bad size) into a SphinxError."""
    try:
        return crypto_scalarmult(scalar, point)
    except (CryptoError, NaclRuntimeError, NaclTypeError, ValueError) as e:
        raise InvalidGroupElementError(f"invalid group element: {e}") from None


def hkdf_prk(shared_secret):
    return hmac.digest(HKDF_SALT, shared_secret, "sha256")


def hkdf_block(prk, previous, counter):
    """One HKDF-Expand block: T(n) = HMAC(PRK, T(n-1) || info || n)."""
    return hmac.digest(prk, previous + HKDF_INFO + bytes((counter,)), "sha256")


class HopKeys:
    """The keys of one hop, derived lazily in HKDF block order."""

    __slots__ = ("prk", "t1", "mac_key", "stream_key", "_t2", "_t3")

    def __init__(self, shared_secret):
        self.prk = hkdf_prk(shared_secret)
        self.t1 = hkdf_block(self.prk, b"", 1)
        self.mac_key = self.t1[:16]
        self.stream_key = self.t1[16:]
        self._t2 = None
        self._t3 = None

    @property
    def blinding(self):
        if self._t2 is None:
            self._t2 = hkdf_block(self.prk, self.t1, 2)
        return self._t2

    @property
    def payload_key(self):
        if self._t3 is None:
            self._t3 = hkdf_block(self.prk, self.blinding, 3)
        return self._t3


def mac(key, data):
    """HMAC-SHA256 truncated to 16 bytes."""
    return hmac.digest(key, data, "sha256")[:MAC_SIZE]


def stream(key, length):
    """AES-128-CTR keystream from a zero IV."""
    return stream_xor(key, bytes(length))


def stream_xor(key, data):
    """*data* XOR the AES-128-CTR keystream from a zero IV, in one C call."""
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor().update(data)


def xor(a, b):
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[:n], "little")).to_bytes(n, "little")


def replay_tag(shared_secret):
    """What the replay cache keeps: a hash of the secret, never the secret."""
    return hashlib.blake2b(shared_secret, digest_size=16, person=b"nymtx-replay").digest()


# Lioness over a 1024-byte block L (32) || R (992), after Anderson and Biham:
#   R ^= ChaCha20(L ^ K1); L ^= BLAKE2b_K2(R); R ^= ChaCha20(L ^ K3); L ^= BLAKE2b_K4(R)
# A change anywhere in the block garbles all of it on decryption, which is what
# lets the final hop detect a tampered payload by its 16 zero bytes.
_LIONESS_LEFT = 32


def lioness_keys(payload_key):
    k12 = hashlib.blake2b(key=payload_key, digest_size=64, person=b"nymtx-lioness12").digest()
    k34 = hashlib.blake2b(key=payload_key, digest_size=64, person=b"nymtx-lioness34").digest()
    return k12[:32], k12[32:], k34[:32], k34[32:]


def _chacha_xor(key, data):
    return Cipher(algorithms.ChaCha20(key, _CHACHA_NONCE), None).encryptor().update(data)


def _keyed_hash(key, data):
    return hashlib.blake2b(data, key=key, digest_size=_LIONESS_LEFT).digest()


def lioness_encrypt(payload_key, block):
    k1, k2, k3, k4 = lioness_keys(payload_key)
    left, right = block[:_LIONESS_LEFT], block[_LIONESS_LEFT:]
    right = _chacha_xor(xor(left, k1), right)
    left = xor(left, _keyed_hash(k2, right))
    right = _chacha_xor(xor(left, k3), right)
    left = xor(left, _keyed_hash(k4, right))
    return left + right


def lioness_decrypt(payload_key, block):
    k1, k2, k3, k4 = lioness_keys(payload_key)
    left, right = block[:_LIONESS_LEFT], block[_LIONESS_LEFT:]
    left = xor(left, _keyed_hash(k4, right))
    right = _chacha_xor(xor(left, k3), right)
    left = xor(left, _keyed_hash(k2, right))
    right = _chacha_xor(xor(left, k1), right)
    return left + right
