"""The test vectors of docs/mix-link.md, from fixed keys.

``python -m nymtx.trust.mixlink_vectors`` prints them as the page shows
them; tests/test_trust_mixlink.py checks the page against this output.
With the ephemeral keys fixed, Noise XK is deterministic.
"""

from nymtx.trust.identity import IdentityKey
from nymtx.trust.mixlink import LinkKeys, MixLink, link_public_key


def _seed(byte):
    return bytes([byte]) * 32


#: the sender's and the receiver's identity seeds, and their ephemeral keys
SENDER_SEED, RECEIVER_SEED = _seed(0x11), _seed(0x12)
SENDER_EPHEMERAL, RECEIVER_EPHEMERAL = _seed(0x21), _seed(0x22)
#: the two packets the vector link carries
PACKETS = (bytes(1372), bytes(range(256)) * 5 + bytes(range(92)))


def build():
    """[(label, bytes)] of the vector handshake and frames."""
    sender = IdentityKey.from_seed(SENDER_SEED)
    receiver = IdentityKey.from_seed(RECEIVER_SEED)
    out = [("sender identity key", sender.public_key),
           ("sender link key (X25519)", LinkKeys(sender).public_key),
           ("receiver identity key", receiver.public_key),
           ("receiver link key (X25519)", link_public_key(receiver.public_key))]
    initiator = MixLink(True, LinkKeys(sender), remote_key=link_public_key(receiver.public_key),
                        ephemeral=SENDER_EPHEMERAL)
    responder = MixLink(False, LinkKeys(receiver), ephemeral=RECEIVER_EPHEMERAL)
    message1 = initiator.take_output()
    responder.receive(message1)
    message2 = responder.take_output()
    initiator.receive(message2)
    message3 = initiator.take_output()
    responder.receive(message3)
    admitted = responder.take_output()
    initiator.receive(admitted)
    frames = [initiator.seal(p) for p in PACKETS]
    assert responder.receive(b"".join(frames)) == list(PACKETS)
    out += [("message 1 (-> e, es)", message1), ("message 2 (<- e, ee)", message2),
            ("message 3 (-> s, se)", message3), ("handshake hash", initiator.handshake_hash),
            ("admitted (<- empty transport message)", admitted),
            ("frame 0 (1372 zero bytes)", frames[0]),
            ("frame 1, its first 64 bytes (packet: bytes 0..255 repeated)",
             frames[1][:64])]
    return out


def render():
    lines = []
    for label, data in build():
        lines.append(label + ":")
        text = data.hex()
        if label.startswith("frame 0"):
            # 1388 bytes: the first and the last 32 are enough to check by eye
            lines.append("  " + text[:64] + " ...")
            lines.append("  ... " + text[-64:])
            continue
        for start in range(0, len(text), 64):
            lines.append("  " + text[start:start + 64])
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
