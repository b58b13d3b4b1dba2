"""Deterministic signed nodes and directories for the trust tests."""

import attrs

from nymtx.keys import KeyPair
from nymtx.trust.document import sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.presence import NS, ROLE_GATEWAY, ROLE_MIXNODE, make_presence

T0 = 1_700_000_000 * NS


def identity(n):
    return IdentityKey.from_seed(n.to_bytes(2, "big") * 16)


def sphinx(n):
    return KeyPair.from_private((n + 40000).to_bytes(2, "big") * 16).public_key


@attrs.define
class Node:
    """A mixnode or gateway that can sign presences at any time."""

    number: int
    role: int
    host: str
    layer: int = 0
    client_listener: str | None = None
    clients: tuple = ()
    sphinx_key: bytes = None

    def __attrs_post_init__(self):
        if self.sphinx_key is None:
            self.sphinx_key = sphinx(self.number)

    @property
    def identity(self):
        return identity(self.number)

    def presence(self, t, **changes):
        fields = dict(layer=self.layer, client_listener=self.client_listener,
                      clients=self.clients)
        fields.update(changes)
        host = fields.pop("host", self.host)
        key = fields.pop("sphinx_key", self.sphinx_key)
        signer = fields.pop("signer", self.identity)
        return make_presence(signer, self.role, key, host, t, "0.5.0", **fields)


def mixnode(number, layer, port=None):
    return Node(number, ROLE_MIXNODE, f"127.0.0.1:{port or 1000 + number}", layer=layer)


def gateway(number, clients=(), port=None):
    port = port or 1000 + number
    return Node(number, ROLE_GATEWAY, f"127.0.0.1:{port}",
                client_listener=f"127.0.0.1:{port + 5000}", clients=tuple(clients))


def network():
    """Two mixnodes a layer and two gateways, the second serving "Bob"."""
    nodes = [mixnode(10 * layer + i, layer) for layer in (1, 2, 3) for i in (1, 2)]
    nodes += [gateway(41, [sphinx(900)]), gateway(42, [sphinx(901)])]
    return nodes


def document(directory, serial, t, presences, lifetime=120 * NS):
    mixnodes = [p for p in presences if p.presence.role == ROLE_MIXNODE]
    gateways = [p for p in presences if p.presence.role == ROLE_GATEWAY]
    return sign_topology(directory, serial, t, mixnodes, gateways, lifetime)
