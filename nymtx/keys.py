"""X25519 key pairs, their text form and their files.

Keys are stored as base58 text, one key per file; the private key file is
created readable by its owner only (mode 0600) and never rewritten in place.
"""

import base64
import binascii
import os

import attrs
import base58
from nacl.bindings import crypto_scalarmult_base

KEY_SIZE = 32
PRIVATE_KEY_FILE = "private_sphinx.key"
PUBLIC_KEY_FILE = "public_sphinx.key"


class KeyFormatError(ValueError):
    """A key in text or in a file that is not a 32-byte key; the message says why."""


def encode_key(raw):
    return base58.b58encode(bytes(raw)).decode("ascii")


def decode_key(text):
    """32 key bytes from base58 (nym v0.5) or base64url (the older directory form)."""
    if not isinstance(text, str):
        raise KeyFormatError(f"a key must be text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise KeyFormatError("the key is empty")
    try:
        raw = base58.b58decode(text)
        if len(raw) == KEY_SIZE:
            return raw
    except ValueError:
        pass
    # base64url keys in the seed's topology carry '=' padding and '-'/'_'.
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if len(raw) == KEY_SIZE:
            return raw
    except (binascii.Error, ValueError):
        pass
    raise KeyFormatError(
        f"key {text[:60]!r} is neither base58 nor base64url of {KEY_SIZE} bytes")


@attrs.frozen(repr=False)
class KeyPair:
    private_key: bytes
    public_key: bytes

    def __repr__(self):
        # The private key stays out of logs and tracebacks.
        return f"KeyPair(public_key={self.public_text})"

    @classmethod
    def generate(cls, randbytes=os.urandom):
        return cls.from_private(randbytes(KEY_SIZE))

    @classmethod
    def from_private(cls, private_key):
        if len(private_key) != KEY_SIZE:
            raise KeyFormatError(f"a private key is {KEY_SIZE} bytes, not {len(private_key)}")
        return cls(bytes(private_key), crypto_scalarmult_base(bytes(private_key)))

    @property
    def public_text(self):
        return encode_key(self.public_key)

    def save(self, directory, private_name=PRIVATE_KEY_FILE, public_name=PUBLIC_KEY_FILE):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        private_path = os.path.join(directory, private_name)
        _write_new(private_path, encode_key(self.private_key) + "\n", 0o600)
        _write_new(os.path.join(directory, public_name), self.public_text + "\n", 0o644)

    @classmethod
    def load(cls, directory, private_name=PRIVATE_KEY_FILE, public_name=PUBLIC_KEY_FILE):
        private_path = os.path.join(directory, private_name)
        try:
            with open(private_path) as f:
                text = f.read()
        except OSError as e:
            raise KeyFormatError(f"cannot read private key file {private_path}: {e.strerror}")
        try:
            pair = cls.from_private(base58.b58decode(text.strip()))
        except ValueError:
            raise KeyFormatError(f"private key file {private_path} does not hold a base58 key")
        public_path = os.path.join(directory, public_name)
        if os.path.exists(public_path):
            with open(public_path) as f:
                stored = f.read().strip()
            if stored != pair.public_text:
                raise KeyFormatError(
                    f"public key file {public_path} does not match the private key")
        return pair


def _write_new(path, text, mode):
    # Write beside, then rename: a crash never leaves half a key file, and the
    # mode is set before any key byte is written.
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
