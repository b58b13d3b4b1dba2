"""The network model: which nodes, on which ports, and how to see it complete.

Nothing here starts a node. ``plan`` lays the nodes out, ``describe`` turns a
topology into the lines nym-localnet prints, and ``poll_topology`` is the one
waiting loop behind both runners (in-process and ``--processes``).
"""

import ipaddress

import attrs
from twisted.internet.task import deferLater

from nymtx.keys import encode_key
from nymtx.topology import LAYERS

HOST = "127.0.0.1"

#: more would be thousands of sockets (and, with --processes, processes) on one machine
MAX_PER_LAYER = 50
MAX_GATEWAYS = 20


class LocalNetError(Exception):
    """The local network could not start; the message says which node and why."""


@attrs.frozen
class Timing:
    """How fast the nodes talk to the directory (seconds)."""

    presence_interval: float = 1.5
    metrics_interval: float = 1.0
    expiry: float = 10.0


@attrs.frozen
class NodePlan:
    """One node of the network: its name, kind, layer, ports (0 = any) and host.

    *host* is the address the node announces (and others dial); *bind*, if
    set, is the address it listens on instead (``0.0.0.0``: every address of
    its host, as a node behind NAT or on several interfaces would).
    """

    name: str
    kind: str  # "directory", "mixnode" or "gateway"
    port: int
    layer: int = 0
    client_port: int = 0
    host: str = HOST
    bind: str = None

    @property
    def listen_host(self):
        return self.bind or self.host


def plan(mixnodes_per_layer=1, gateways=1, base_port=8080):
    """Every node, with ports counted up from *base_port* (all 0 if it is 0)."""
    if not 1 <= mixnodes_per_layer <= MAX_PER_LAYER:
        raise LocalNetError(f"--mixnodes-per-layer must be 1 to {MAX_PER_LAYER},"
                            f" not {mixnodes_per_layer}")
    if not 1 <= gateways <= MAX_GATEWAYS:
        raise LocalNetError(f"--gateways must be 1 to {MAX_GATEWAYS}, not {gateways}")
    needed = 1 + LAYERS * mixnodes_per_layer + 2 * gateways
    if base_port and base_port + needed - 1 > 65535:
        raise LocalNetError(f"--base-port {base_port} leaves no room for {needed} ports:"
                            f" the last would be {base_port + needed - 1}")
    ports = iter(range(base_port, base_port + needed)) if base_port else None

    def port():
        return next(ports) if ports else 0

    nodes = [NodePlan("directory", "directory", port())]
    for layer in range(1, LAYERS + 1):
        for i in range(1, mixnodes_per_layer + 1):
            nodes.append(NodePlan(f"mix-{layer}-{i}", "mixnode", port(), layer=layer))
    for j in range(1, gateways + 1):
        nodes.append(NodePlan(f"gateway-{j}", "gateway", port(), client_port=port()))
    return nodes


def count(n, word):
    """``1 gateway``, ``2 gateways``: *word* is the singular."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _address_order(node):
    # by host then port: on one host the ports count up, across hosts the addresses do
    try:
        host = (0, ipaddress.ip_address(node.address.host))
    except ValueError:
        host = (1, node.address.host)
    return host, node.address.port


def describe(topology, directory_url):
    """The topology as the lines nym-localnet prints."""
    lines = [f"directory  {directory_url}   (topology: {directory_url}/api/presence/topology)"]
    for layer in range(1, LAYERS + 1):
        for m in sorted((m for m in topology.mixnodes if m.layer == layer), key=_address_order):
            lines.append(f"layer {layer}    {m.address}  {encode_key(m.public_key)}")
    for g in topology.gateways:
        lines.append(f"gateway    {g.address} (clients at {g.client_listener})  {encode_key(g.public_key)}")
    return lines


async def poll_topology(reactor, directory, missing, timeout, poll=0.1, check=None):
    """Fetch the topology every *poll* s until ``missing(topology)`` is None.

    ``missing`` says what the topology still lacks; a directory that does
    not answer is retried too (it may not listen yet). After *timeout* s,
    LocalNetError with the last reason. ``check()``, run before each fetch,
    may raise to give up early.
    """
    deadline = reactor.seconds() + timeout
    while True:
        if check is not None:
            check()
        try:
            topology = await directory.get_topology()
        except Exception as e:
            why = f"the directory does not answer ({why_failed(e)})"
        else:
            why = missing(topology)
            if why is None:
                return topology
        if reactor.seconds() > deadline:
            raise LocalNetError(f"{why} after {timeout:.0f} s")
        await deferLater(reactor, poll, lambda: None)


async def poll_clients(reactor, directory, client_keys, timeout, poll=0.1):
    """The topology once its gateways list every key in *client_keys*
    (``poll_topology`` with that as what is missing)."""
    wanted = set(client_keys)

    def missing(topology):
        absent = len(wanted - set(topology.clients()))
        return f"{count(absent, 'client')} not in the topology" if absent else None
    return await poll_topology(reactor, directory, missing, timeout, poll)


def why_failed(error):
    """An exception's or a Failure's text, for one line of an error message."""
    if hasattr(error, "getErrorMessage"):
        return error.getErrorMessage()
    return str(error) or type(error).__name__
