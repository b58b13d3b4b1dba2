"""noiseprotocol's backend with the primitives the rest of nymtx uses.

Both Noise channels of nymtx (the client-gateway channel, IK, in
nymtx.gateway.channel, and the mix links, XK, in nymtx.trust.mixlink) run
on this one backend: libsodium's X25519 (its fixed-base multiplication
makes an ephemeral key for a third of a variable-base one) and hashlib's
SHA-256 and HMAC instead of a ``cryptography`` object per call.
ChaCha20-Poly1305 stays noiseprotocol's (``cryptography``).
"""

import hashlib
import hmac
import os

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import RuntimeError as NaclRuntimeError
from noise.backends.default import DefaultNoiseBackend
from noise.exceptions import NoiseValueError
from noise.functions.dh import DH
from noise.functions.hash import Hash
from noise.functions.keypair import KeyPair as NoiseKeyPair

__all__ = ["BACKEND", "KeyPair", "KEY_SIZE"]

#: an X25519 key, public or private
KEY_SIZE = 32


class _SHA256(Hash):
    """SHA-256 through hashlib: the default backend builds a cryptography
    hash object per call, a fifth of a handshake's time."""

    fn = "sha256"
    hashlen = 32
    blocklen = 64

    def hash(self, data):
        return hashlib.sha256(data).digest()


class KeyPair(NoiseKeyPair):
    """An X25519 key pair as raw bytes, for libsodium."""

    @classmethod
    def from_private_bytes(cls, private_bytes):
        if len(private_bytes) != KEY_SIZE:
            raise NoiseValueError(f"a private key is {KEY_SIZE} bytes, not {len(private_bytes)}")
        public = crypto_scalarmult_base(bytes(private_bytes))
        return cls(private=bytes(private_bytes), public=public, public_bytes=public)

    @classmethod
    def from_public_bytes(cls, public_bytes):
        if len(public_bytes) != KEY_SIZE:
            raise NoiseValueError(f"a public key is {KEY_SIZE} bytes, not {len(public_bytes)}")
        return cls(public=bytes(public_bytes), public_bytes=bytes(public_bytes))


class _X25519(DH):
    """X25519 through libsodium, as the rest of nymtx does it: its fixed-base
    multiplication makes an ephemeral key for a third of a variable-base one."""

    klass = KeyPair
    dhlen = KEY_SIZE

    def generate_keypair(self):
        return KeyPair.from_private_bytes(os.urandom(KEY_SIZE))

    def dh(self, private_key, public_key):
        try:
            return crypto_scalarmult(private_key, public_key)
        except NaclRuntimeError:
            raise NoiseValueError("the X25519 result is all zeros (a low-order point)")


class _Backend(DefaultNoiseBackend):
    """noiseprotocol's default backend with libsodium's X25519 and hashlib's
    SHA-256 and HMAC; ChaCha20-Poly1305 stays that of ``cryptography``."""

    def __init__(self):
        super().__init__()
        self.diffie_hellmans = {"25519": _X25519}
        self.keypairs = {"25519": KeyPair}
        self.hashes = {"SHA256": _SHA256}
        self.hmac = lambda key, data, algorithm: hmac.digest(key, data, algorithm)


#: one instance serves every connection (it holds no state)
BACKEND = _Backend()
