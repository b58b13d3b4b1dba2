"""X25519 key pairs, their text form and their files.

Keys are stored as base58 text, one key per file; the private key file is
created readable by its owner only (mode 0600) and never rewritten in place.
"""

import base64
import binascii
import os
import re

import attrs
import base58
from nacl.bindings import crypto_scalarmult_base

from nymtx.paths import write_atomically

KEY_SIZE = 32
PRIVATE_KEY_FILE = "private_sphinx.key"
PUBLIC_KEY_FILE = "public_sphinx.key"
# base64url or base64 with optional padding: b64decode without validation
# would silently skip any other character and accept garbage as a key.
_BASE64 = re.compile(r"[A-Za-z0-9_\-+/]+={0,2}")
# Both text forms of 32 bytes are at most 44 characters; base58 decoding is
# quadratic, so longer text is refused before decoding.
_MAX_KEY_TEXT = 64


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
    if len(text) > _MAX_KEY_TEXT:
        raise KeyFormatError(
            f"key {text[:60]!r}... is {len(text)} characters long; a key is at most 44")
    try:
        raw = base58.b58decode(text)
        if len(raw) == KEY_SIZE:
            return raw
    except ValueError:
        pass
    # base64url keys in the seed's topology carry '=' padding and '-'/'_'.
    if _BASE64.fullmatch(text):
        try:
            raw = base64.b64decode(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                validate=True)
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
        write_atomically(private_path, encode_key(self.private_key) + "\n", 0o600)
        write_atomically(os.path.join(directory, public_name), self.public_text + "\n", 0o644)

    @classmethod
    def load(cls, directory, private_name=PRIVATE_KEY_FILE, public_name=PUBLIC_KEY_FILE):
        private_path = os.path.join(directory, private_name)
        text = _read_key_text(private_path, "private")
        try:
            raw = base58.b58decode(text)
        except ValueError:
            raise KeyFormatError(f"private key file {private_path} does not hold a base58 key")
        if len(raw) != KEY_SIZE:
            raise KeyFormatError(
                f"private key file {private_path} holds {len(raw)} bytes, not {KEY_SIZE}")
        pair = cls.from_private(raw)
        public_path = os.path.join(directory, public_name)
        if os.path.exists(public_path):
            stored = _read_key_text(public_path, "public")
            if stored != pair.public_text:
                raise KeyFormatError(
                    f"public key file {public_path} does not match the private key")
        return pair


def _read_key_text(path, which):
    # Read bytes, not text: a binary or non-ASCII file must be a
    # KeyFormatError, not a UnicodeDecodeError from the locale's codec.
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise KeyFormatError(f"cannot read {which} key file {path}: {e.strerror}")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFormatError(f"{which} key file {path} is not base58 text")
    if not text:
        raise KeyFormatError(f"{which} key file {path} is empty")
    return text
