"""Loop cover messages that only their sender can recognise.

nym v0.5 sent the fixed text ``The cake is a lie!`` as loop cover, which any
application message could imitate (and which a gateway could single out
once end-to-end encryption hides everything else). Here a cover message is
``MARKER || nonce (16) || HMAC-SHA256(key, nonce) (32)``, the key derived
from the client's private key with HKDF: only this client can make one that
verifies, so a real message is never discarded as cover, and a message
that merely starts with the marker is kept.
"""

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MARKER = b"nymtx loop cover\x00"
NONCE_SIZE = 16
TAG_SIZE = 32
COVER_SIZE = len(MARKER) + NONCE_SIZE + TAG_SIZE


def _cover_key(private_key):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"nymtx client loop cover key v1").derive(bytes(private_key))


class LoopCover:
    """Makes and recognises this client's loop cover messages."""

    def __init__(self, private_key, randbytes=os.urandom):
        self._key = _cover_key(private_key)
        self._randbytes = randbytes

    def _tag(self, nonce):
        return hmac.new(self._key, nonce, hashlib.sha256).digest()

    def make(self):
        nonce = self._randbytes(NONCE_SIZE)
        return MARKER + nonce + self._tag(nonce)

    def is_own_cover(self, message):
        if len(message) != COVER_SIZE or not message.startswith(MARKER):
            return False
        nonce = message[len(MARKER):len(MARKER) + NONCE_SIZE]
        return hmac.compare_digest(message[len(MARKER) + NONCE_SIZE:], self._tag(nonce))
