"""The end-to-end envelope: every payload sealed to its final recipient's key.

Layout (docs/message-format.md), version 2 (what a client sends):

    version 0x02 (1) || ephemeral X25519 public key (32) || ciphertext (559) || tag (16)

608 bytes whatever is inside: the stored part of the 975-byte Sphinx
message, after the SURB-ACK that the recipient's gateway cuts off
(docs/surb.md). Version 1, the same with a 926-byte ciphertext (975 bytes,
the whole Sphinx message), is still read: senders from before issue 12. The key and
nonce are BLAKE2b of the X25519 secret, the ephemeral key and the recipient
key, so a key is never used twice (one ephemeral key per packet) and a
payload sealed to one key cannot be re-targeted to another. The AEAD is
ChaCha20-Poly1305 (RFC 8439); the version byte and the ephemeral key are its
associated data.
"""

import hashlib
import os

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt, crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult, crypto_scalarmult_base)
from nacl.exceptions import CryptoError, RuntimeError as NaclRuntimeError, \
    TypeError as NaclTypeError

from nymtx.reliable.ack import STORED_SIZE
from nymtx.sphinx import MAX_MESSAGE_SIZE

from .errors import EnvelopeError, NotForMe, RecipientKeyError

VERSION_1 = 0x01
VERSION_2 = 0x02
#: the version this code seals
VERSION = VERSION_2
KEY_SIZE = 32
TAG_SIZE = 16
HEADER_SIZE = 1 + KEY_SIZE  # version || ephemeral key
#: version 1: the whole Sphinx message room
ENVELOPE_V1_SIZE = MAX_MESSAGE_SIZE  # 975
#: version 2: the Sphinx message after its SURB-ACK; every payload a client
#: sends is SURB-ACK (367) || this envelope
ENVELOPE_SIZE = STORED_SIZE  # 608
#: what the AEAD protects: the type byte and everything after it
PLAINTEXT_V1_SIZE = ENVELOPE_V1_SIZE - HEADER_SIZE - TAG_SIZE  # 926
PLAINTEXT_SIZE = ENVELOPE_SIZE - HEADER_SIZE - TAG_SIZE  # 559
#: version -> envelope size, and plaintext size -> version
ENVELOPE_SIZES = {VERSION_1: ENVELOPE_V1_SIZE, VERSION_2: ENVELOPE_SIZE}
_VERSION_OF_PLAINTEXT = {PLAINTEXT_V1_SIZE: VERSION_1, PLAINTEXT_SIZE: VERSION_2}

KDF_PERSON = b"nymtx-e2e-v1"
_KDF_SIZE = 32 + 12  # ChaCha20-Poly1305 key || nonce
_X25519_ERRORS = (CryptoError, NaclRuntimeError, NaclTypeError, ValueError)
_PROBE_SCALAR = bytes(range(32))


def derive(shared, ephemeral, recipient):
    """(key, nonce) for one envelope; see docs/message-format.md, Key derivation."""
    okm = hashlib.blake2b(shared + ephemeral + recipient, digest_size=_KDF_SIZE,
                          person=KDF_PERSON).digest()
    return okm[:32], okm[32:]


def _check_key(key, what):
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        got = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
        raise RecipientKeyError(f"{what} must be {KEY_SIZE} bytes, not {got}")
    return bytes(key)


def check_recipient_key(public_key):
    """*public_key* as bytes if it can be sealed to, else RecipientKeyError.

    A small-order point gives the all-zero secret for every clamped scalar,
    so one multiplication by any scalar tells.
    """
    key = _check_key(public_key, "a recipient public key")
    try:
        crypto_scalarmult(_PROBE_SCALAR, key)
    except _X25519_ERRORS:
        raise RecipientKeyError("the recipient public key is not a usable X25519 key") from None
    return key


def seal(recipient_public_key, plaintext, randbytes=os.urandom):
    """The envelope of *plaintext*: PLAINTEXT_SIZE bytes give a version-2
    envelope (ENVELOPE_SIZE), PLAINTEXT_V1_SIZE a version-1 one (the test
    vectors of version 1, and nothing else, still make those).

    *randbytes* supplies the 32-byte ephemeral private key (the only random
    draw); the test vectors pass fixed bytes.
    """
    recipient = _check_key(recipient_public_key, "a recipient public key")
    if not isinstance(plaintext, (bytes, bytearray)) or \
            len(plaintext) not in _VERSION_OF_PLAINTEXT:
        got = len(plaintext) if isinstance(plaintext, (bytes, bytearray)) else \
            type(plaintext).__name__
        raise EnvelopeError(f"a plaintext must be {PLAINTEXT_SIZE} bytes (or"
                            f" {PLAINTEXT_V1_SIZE} for version 1), not {got}")
    version = _VERSION_OF_PLAINTEXT[len(plaintext)]
    secret = randbytes(KEY_SIZE)
    ephemeral = crypto_scalarmult_base(secret)
    try:
        shared = crypto_scalarmult(secret, recipient)
    except _X25519_ERRORS:
        # libsodium refuses an all-zero result: the key is a small-order point.
        raise RecipientKeyError("the recipient public key is not a usable X25519 key") from None
    key, nonce = derive(shared, ephemeral, recipient)
    header = bytes((version,)) + ephemeral
    return header + crypto_aead_chacha20poly1305_ietf_encrypt(bytes(plaintext), header, nonce, key)


def open_envelope(private_key, public_key, payload):
    """The plaintext of *payload* (a version-2 envelope of ENVELOPE_SIZE bytes:
    PLAINTEXT_SIZE; a version-1 one of ENVELOPE_V1_SIZE: PLAINTEXT_V1_SIZE),
    or an EnvelopeError.

    NotForMe (a subclass) means the tag did not verify: the payload is for
    another key, or it was altered on the way.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise EnvelopeError(f"a payload must be bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if not payload:
        raise EnvelopeError("an empty payload")
    size = ENVELOPE_SIZES.get(payload[0])
    if size is None:
        raise EnvelopeError(f"unknown envelope version {payload[0]} (this reader knows"
                            f" {VERSION_1} and {VERSION_2})")
    if len(payload) != size:
        raise EnvelopeError(f"a version-{payload[0]} payload is {size} bytes, not {len(payload)}")
    private_key = _check_key(private_key, "a private key")
    public_key = _check_key(public_key, "a public key")
    header = payload[:HEADER_SIZE]
    ephemeral = payload[1:HEADER_SIZE]
    try:
        shared = crypto_scalarmult(private_key, ephemeral)
    except _X25519_ERRORS:
        raise NotForMe("the ephemeral key is not a usable X25519 key") from None
    key, nonce = derive(shared, ephemeral, public_key)
    try:
        return crypto_aead_chacha20poly1305_ietf_decrypt(payload[HEADER_SIZE:], header, nonce, key)
    except CryptoError:
        raise NotForMe("the tag does not verify: not for this key, or altered") from None
