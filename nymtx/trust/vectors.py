"""The test vectors of docs/trust.md, rebuilt from fixed seeds.

``python -m nymtx.trust.vectors`` prints them as they appear in the doc;
tests/test_trust_vectors.py checks the doc against this output. Ed25519
signatures are deterministic, so fixed seeds give fixed bytes.
"""

import json

from nymtx.keys import KeyPair
from nymtx.trust.document import sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.metrics import sign_metrics
from nymtx.trust.presence import ROLE_GATEWAY, ROLE_MIXNODE, make_presence

#: 2023-11-14T22:13:20Z in Unix ns: the seed's sample lastSeen
T0 = 1_700_000_000_000_000_000


def _seed(byte):
    return bytes([byte]) * 32


def signed():
    """The vectors' mixnode and gateway presences and the directory's document."""
    mix_identity = IdentityKey.from_seed(_seed(1))
    gateway_identity = IdentityKey.from_seed(_seed(2))
    directory = IdentityKey.from_seed(_seed(3))
    mix_sphinx = KeyPair.from_private(_seed(4)).public_key
    gateway_sphinx = KeyPair.from_private(_seed(5)).public_key
    next_sphinx = KeyPair.from_private(_seed(6)).public_key
    client = KeyPair.from_private(_seed(7)).public_key
    mixnode = make_presence(mix_identity, ROLE_MIXNODE, mix_sphinx, "127.0.0.1:1789", T0,
                            "0.5.0", layer=2, location="Neuchâtel",
                            next_sphinx_key=next_sphinx,
                            next_key_from=T0 + 3600 * 10 ** 9)
    gateway = make_presence(gateway_identity, ROLE_GATEWAY, gateway_sphinx,
                            "[::1]:1790", T0 + 1, "0.5.0",
                            client_listener="[::1]:9000", clients=[client])
    document = sign_topology(directory, 7, T0 + 2, [mixnode], [gateway])
    return mixnode, gateway, document


def build():
    """(name, text) pairs: each vector's hex or base58."""
    mix_identity, gateway_identity, directory = (
        IdentityKey.from_seed(_seed(n)) for n in (1, 2, 3))
    mixnode, gateway, document = signed()
    return [
        ("mixnode identity public key", mix_identity.public_text),
        ("gateway identity public key", gateway_identity.public_text),
        ("directory identity public key", directory.public_text),
        ("mixnode presence signed bytes", mixnode.presence.signed_bytes().hex()),
        ("mixnode presence signature", mixnode.signature.hex()),
        ("gateway presence signed bytes", gateway.presence.signed_bytes().hex()),
        ("gateway presence signature", gateway.signature.hex()),
        ("clients digest", gateway.presence.clients_digest.hex()),
        ("topology signed bytes", document.document.signed_bytes().hex()),
        ("topology signature", document.signature.hex()),
        ("metrics signed bytes", metrics().metrics.signed_bytes().hex()),
        ("metrics signature", metrics().signature.hex()),
        ("rotated gateway sphinxKey", rotated_gateway().to_json()["sphinxKey"]),
        ("rotated gateway presence signed bytes",
         rotated_gateway().presence.signed_bytes().hex()),
        ("rotated gateway presence signature", rotated_gateway().signature.hex()),
    ]


def rotated_gateway():
    """The gateway after its first rotation: pubKey stays its name, the key
    in use (sphinxKey) and the next are announced beside it."""
    return make_presence(IdentityKey.from_seed(_seed(2)), ROLE_GATEWAY,
                         KeyPair.from_private(_seed(5)).public_key, "[::1]:1790", T0 + 4,
                         "0.5.0", client_listener="[::1]:9000",
                         clients=[KeyPair.from_private(_seed(7)).public_key],
                         gateway_sphinx_key=KeyPair.from_private(_seed(8)).public_key,
                         next_sphinx_key=KeyPair.from_private(_seed(9)).public_key,
                         next_key_from=T0 + 86400 * 10 ** 9)


def metrics():
    """The mixnode's report: 120 received, 118 sent, 2 dropped ("queue full")."""
    return sign_metrics(IdentityKey.from_seed(_seed(1)),
                        KeyPair.from_private(_seed(4)).public_key,
                        {"received": 120, "sent": 118, "dropped": {"queue full": 2}},
                        T0 + 3)


def example_json():
    """The mixnode presence as its node announces it (docs/trust.md)."""
    return json.dumps(signed()[0].to_json(), indent=2, ensure_ascii=False) + "\n"


def render():
    """The vectors as docs/trust.md shows them: a name line, then the value
    wrapped at 64 characters."""
    out = []
    for name, value in build():
        out.append(f"{name}:")
        out += ["  " + value[i:i + 64] for i in range(0, len(value), 64)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
