"""Ed25519 identity keys: a node's (or a directory's) long-term signing key.

A node's identity key proves its Sphinx key, host and role to the
directory; a directory's proves its topology documents to clients. Files
follow nymtx.keys: base58 text, one key per file, the private key owner-only
and written atomically. The private file holds the 32-byte seed, from which
PyNaCl derives the signing key.
"""

import os

import attrs
import base58
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from nymtx.keys import KeyFormatError, _read_key_text
from nymtx.paths import write_atomically

IDENTITY_KEY_SIZE = 32
SIGNATURE_SIZE = 64
PRIVATE_IDENTITY_FILE = "private_identity.key"
PUBLIC_IDENTITY_FILE = "public_identity.key"
# base58 of 32 bytes is at most 44 characters, of 64 at most 88; decoding
# is quadratic, so longer text is refused before it is decoded.
_MAX_TEXT = {IDENTITY_KEY_SIZE: 44, SIGNATURE_SIZE: 88}


def encode_b58(raw):
    return base58.b58encode(bytes(raw)).decode("ascii")


def decode_b58(text, size, what):
    """*size* bytes from base58 *text*, or KeyFormatError naming *what*."""
    if not isinstance(text, str):
        raise KeyFormatError(f"{what} must be base58 text, not {type(text).__name__}")
    if not text:
        raise KeyFormatError(f"{what} is empty")
    if len(text) > _MAX_TEXT[size]:
        raise KeyFormatError(f"{what} is {len(text)} characters long; base58 of "
                             f"{size} bytes is at most {_MAX_TEXT[size]}")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise KeyFormatError(f"{what} {text[:60]!r} is not base58")
    if len(raw) != size:
        raise KeyFormatError(f"{what} is {len(raw)} bytes, not {size}")
    return raw


def verify_signature(public_key, message, signature):
    """True if *signature* is *public_key*'s Ed25519 signature of *message*."""
    try:
        VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (BadSignatureError, ValueError, TypeError):
        # ValueError/TypeError: a 32-byte string that is not a curve point
        return False
    return True


@attrs.frozen(repr=False)
class IdentityKey:
    """An Ed25519 key pair; ``seed`` is the secret, ``public_key`` its 32-byte key."""

    seed: bytes
    public_key: bytes

    def __repr__(self):
        # The seed stays out of logs and tracebacks.
        return f"IdentityKey(public_key={self.public_text})"

    @classmethod
    def generate(cls, randbytes=os.urandom):
        return cls.from_seed(randbytes(IDENTITY_KEY_SIZE))

    @classmethod
    def from_seed(cls, seed):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != IDENTITY_KEY_SIZE:
            raise KeyFormatError(f"an identity seed is {IDENTITY_KEY_SIZE} bytes")
        signing = SigningKey(bytes(seed))
        return cls(bytes(seed), bytes(signing.verify_key))

    @property
    def public_text(self):
        return encode_b58(self.public_key)

    def sign(self, message):
        """The 64-byte detached Ed25519 signature of *message*."""
        return SigningKey(self.seed).sign(bytes(message)).signature

    def save(self, directory, private_name=PRIVATE_IDENTITY_FILE,
             public_name=PUBLIC_IDENTITY_FILE):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_atomically(os.path.join(directory, private_name),
                         encode_b58(self.seed) + "\n", 0o600)
        write_atomically(os.path.join(directory, public_name), self.public_text + "\n", 0o644)

    @classmethod
    def load(cls, directory, private_name=PRIVATE_IDENTITY_FILE,
             public_name=PUBLIC_IDENTITY_FILE):
        private_path = os.path.join(directory, private_name)
        text = _read_key_text(private_path, "private identity")
        seed = decode_b58(text, IDENTITY_KEY_SIZE, f"private identity key file {private_path}")
        key = cls.from_seed(seed)
        public_path = os.path.join(directory, public_name)
        if os.path.exists(public_path):
            if _read_key_text(public_path, "public identity") != key.public_text:
                raise KeyFormatError(
                    f"public identity key file {public_path} does not match the private key")
        return key

    @classmethod
    def load_or_generate(cls, directory, randbytes=os.urandom):
        """The key stored in *directory*, or a new one saved there."""
        if os.path.exists(os.path.join(directory, PRIVATE_IDENTITY_FILE)):
            return cls.load(directory)
        key = cls.generate(randbytes)
        key.save(directory)
        return key


def decode_identity_key(text, what="identity key"):
    """A 32-byte Ed25519 public key from base58 (whether it is a curve point
    shows when a signature is checked: one that is not verifies nothing)."""
    return decode_b58(text, IDENTITY_KEY_SIZE, what)
