"""Writes message.json (envelope version 1) and message-v2.json (version 2):
deterministic vectors of the end-to-end message format.

Run from the repository root: python tests/vectors/make_message_vectors.py
Every key is fixed (SHA-256 of a label), so each vector records the exact
envelope bytes; tests/test_message.py regenerates the file in memory and
checks it byte for byte, and also recomputes each envelope with pyca's
ChaCha20Poly1305 and hashlib alone (docs/message-format.md).
"""

import hashlib
import json
import os
import sys

from nacl.bindings import crypto_scalarmult

from nymtx.keys import KeyPair
from nymtx.message import (
    KIND_BINARY, KIND_TEXT, Message, NotForMe, EnvelopeError, decode_plaintext, encode_fragment,
    fragment_message, open_envelope, seal)
from nymtx.message.envelope import derive
from nymtx.message.payload import encode_drop_cover, encode_loop_cover

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {1: os.path.join(HERE, "message.json"), 2: os.path.join(HERE, "message-v2.json")}


def _key(label):
    return KeyPair.from_private(hashlib.sha256(f"nymtx message vector {label}".encode()).digest())


def _fixed(label):
    return lambda n: hashlib.sha256(f"nymtx message ephemeral {label}".encode()).digest()[:n]


def _describe(opened):
    name = type(opened).__name__
    if name == "Fragment":
        return {"type": "fragment", "set_id": opened.set_id.hex(), "index": opened.index,
                "count": opened.count, "data": opened.data.hex()}
    if name == "LoopCover":
        return {"type": "loop_cover", "loop_id": opened.loop_id.hex()}
    return {"type": "drop_cover"}


def _vector(name, recipient, label, plaintext):
    randbytes = _fixed(label)
    ephemeral = KeyPair.from_private(randbytes(32))
    shared = crypto_scalarmult(ephemeral.private_key, recipient.public_key)
    key, nonce = derive(shared, ephemeral.public_key, recipient.public_key)
    payload = seal(recipient.public_key, plaintext, randbytes)
    return {
        "name": name,
        "recipient_private_key": recipient.private_key.hex(),
        "recipient_public_key": recipient.public_key.hex(),
        "ephemeral_private_key": ephemeral.private_key.hex(),
        "ephemeral_public_key": ephemeral.public_key.hex(),
        "shared_secret": shared.hex(), "key": key.hex(), "nonce": nonce.hex(),
        "plaintext": plaintext.hex(), "payload": payload.hex(),
        "opened": _describe(decode_plaintext(plaintext)),
    }


def _negative(name, vector, payload, opener, error):
    try:
        open_envelope(opener.private_key, opener.public_key, payload)
    except error:
        pass
    else:  # pragma: no cover - the generator checks its own claims
        raise AssertionError(f"{name}: expected {error.__name__}")
    return {"name": name, "of": vector["name"], "private_key": opener.private_key.hex(),
            "public_key": opener.public_key.hex(), "payload": payload.hex(),
            "error": error.__name__}


def build(version=1):
    """The vectors of envelope *version* (1: message.json, 2: message-v2.json).
    Version 2's are labelled apart, so no ephemeral key is shared with 1's."""
    bob, carol = _key("bob"), _key("carol")
    p = "" if version == 1 else "v2 "
    text = fragment_message(Message(KIND_TEXT, "héllo, Bob".encode()),
                            randbytes=lambda n: bytes(range(1, n + 1)), version=version)
    binary = fragment_message(Message(KIND_BINARY, bytes(range(256)) * 4 + b"tail"),
                              randbytes=lambda n: bytes(range(0xa0, 0xa0 + n)), version=version)
    vectors = [
        _vector("text message, one fragment", bob, p + "text", encode_fragment(text[0])),
        _vector("binary message, fragment 0 of 2", bob, p + "binary 0",
                encode_fragment(binary[0])),
        _vector("binary message, fragment 1 of 2", bob, p + "binary 1",
                encode_fragment(binary[1])),
        _vector("loop cover", bob, p + "loop",
                encode_loop_cover(bytes(range(0x10, 0x20)), version)),
        _vector("drop cover", bob, p + "drop", encode_drop_cover(version)),
    ]
    base = bytes.fromhex(vectors[0]["payload"])
    flip = lambda at: base[:at] + bytes((base[at] ^ 0x01,)) + base[at + 1:]  # noqa: E731
    negatives = [
        _negative("tampered tag", vectors[0], flip(len(base) - 1), bob, NotForMe),
        _negative("tampered ciphertext", vectors[0], flip(40), bob, NotForMe),
        _negative("tampered ephemeral key", vectors[0], flip(5), bob, NotForMe),
        # version 1: 0x02 at 975 bytes; version 2: 0x03 (no such version)
        _negative("unknown version", vectors[0], bytes((version + 1,)) + base[1:], bob,
                  EnvelopeError),
        _negative("wrong recipient", vectors[0], base, carol, NotForMe),
        _negative("right private key, wrong public key", vectors[0], base,
                  KeyPair(bob.private_key, carol.public_key), NotForMe),
    ]
    if version == 2:
        negatives.append(_negative("version 1 byte on a version-2 envelope", vectors[0],
                                   bytes((0x01,)) + base[1:], bob, EnvelopeError))
    messages = [
        {"name": "text", "kind": KIND_TEXT, "data": "héllo, Bob".encode().hex(),
         "payloads": [vectors[0]["name"]]},
        {"name": "binary", "kind": KIND_BINARY, "data": (bytes(range(256)) * 4 + b"tail").hex(),
         "payloads": [vectors[1]["name"], vectors[2]["name"]]},
    ]
    return {"format": f"nymtx-message-v{version}", "vectors": vectors, "negative": negatives,
            "messages": messages}


def main():
    for version, path in PATHS.items():
        with open(path, "w") as f:
            json.dump(build(version), f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
