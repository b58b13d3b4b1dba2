"""A signed local network: ``nym-localnet`` (and ``--directories N``).

Every directory has an identity key (kept under
``<home>/localnet/directory[-i]/``, so a restarted network keeps its keys)
and signs its topology, admitting any node (a local network has no allow
list); every mixnode and gateway has an identity key beside its Sphinx key
and announces, signed, to each directory; whoever reads the topology (the
network's own wait, the nodes, the clients) pins the directories' keys and
needs a majority of them. Unless the network is made with plain links
(``--insecure-links``), every node pins the keys too and speaks
authenticated mix links (docs/mix-link.md): the network is ready only once
every node holds a topology that lists every other node, so that no link
is refused at start. The hooks are called by nymtx.localnet.network.
"""

import os

import attrs
from twisted.internet.task import deferLater

from nymtx.addressing import NodeAddress
from nymtx.localnet.model import LocalNetError, count, why_failed

#: more signing directories than this on one machine is a typo
MAX_DIRECTORIES = 9
#: seconds between a local directory's signings (a public one's is 1 s): its
#: document of a few nodes costs a millisecond to sign, and the nodes read
#: the topology as they start, before the others have announced; a document
#: signed then and kept for a second delayed every start by that second
LOCAL_RESIGN_INTERVAL = 0.1


def more_directories(nodes, directories):
    """*nodes* with directories 2..N added after the first (their ports after
    the plan's last, or 0 when the plan's are)."""
    if not 1 <= directories <= MAX_DIRECTORIES:
        raise LocalNetError(f"--directories must be 1 to {MAX_DIRECTORIES}, not {directories}")
    nodes = list(nodes)
    present = sum(1 for n in nodes if n.kind == "directory")
    if directories == present:
        # a plan that has them already: a node of --netns reads its plan so
        return nodes
    if present != 1:
        raise LocalNetError(f"the plan has {present} directories, not 1 or {directories}")
    last = max(max(n.port, n.client_port) for n in nodes)
    first = [n for n in nodes if n.kind == "directory"]
    extra = [attrs.evolve(first[0], name=f"directory-{i}", port=last + i - 1 if last else 0)
             for i in range(2, directories + 1)]
    if last and extra[-1].port > 65535:
        raise LocalNetError(f"no room for {directories} directories above port {last}")
    rest = [n for n in nodes if n.kind != "directory"]
    return first + extra + rest


def _folder(network, name):
    return os.path.join(network.home, "localnet", name)


def directory_identity(network, name):
    from nymtx.trust.identity import IdentityKey
    return IdentityKey.load_or_generate(_folder(network, name))


def _nodes(network):
    nodes = network.nodes
    return list(nodes.values()) if isinstance(nodes, dict) else list(nodes)


def directory_urls(network):
    """name -> URL of each directory: those this process started, else (a
    node of ``--processes``, whose directories run elsewhere) the plan's
    fixed ports."""
    if getattr(network, "directory_urls", None):
        return dict(network.directory_urls)
    return {n.name: f"http://{n.host}:{n.port}" for n in _nodes(network)
            if n.kind == "directory" and n.port}


def directory_keys(network):
    """The base58 keys of the network's directories, in the order of
    ``directory_urls``: what a client pins."""
    return [directory_identity(network, n.name).public_text
            for n in _nodes(network) if n.kind == "directory"]


def make_signed(network, node):
    """The service for *node* of a network of signing directories."""
    from nymtx.directory.resource import make_site
    from nymtx.directory.service import DirectoryService
    from nymtx.directory.signed import SignedRegistry
    from nymtx.gateway.service import GatewayService
    from nymtx.localnet.network import _endpoint, _strport, local_admission, node_keys
    from nymtx.mixnode.service import MixnodeService
    from nymtx.trust.wiring import hand_over, node_directory, node_identity
    reactor, timing = network.reactor, network.timing
    if node.kind == "directory":
        registry = SignedRegistry(reactor, directory_identity(network, node.name), None,
                                  expiry=timing.expiry,
                                  resign_interval=LOCAL_RESIGN_INTERVAL)
        if node.name == "directory":
            network.registry = registry
        network.registries = dict(getattr(network, "registries", {}), **{node.name: registry})
        return DirectoryService(_endpoint(reactor, node.listen_host, node.port),
                                make_site(registry), f"{node.host}:{node.port}",
                                registry=registry)
    keys = node_keys(network.home, node.name)
    # with mix links the node pins the directories (a majority needed) and
    # reads its peers' link keys from the signed topology; with plain links
    # (--insecure-links) it only announces, signed
    pins = directory_keys(network) if network.secure else ()
    directory = node_directory(reactor, list(directory_urls(network).values()),
                               node_identity(_folder(network, node.name)), pins)
    if node.kind == "mixnode":
        service = MixnodeService(
            reactor, keys, node.layer, _strport(node.listen_host, node.port), node.host,
            directory=directory,
            presence_interval=timing.presence_interval,
            metrics_interval=timing.metrics_interval)
    else:
        service = GatewayService(
            reactor, keys, os.path.join(_folder(network, node.name), "data"),
            _strport(node.listen_host, node.port), _strport(node.listen_host, node.client_port),
            node.host, directory=directory,
            presence_interval=timing.presence_interval,
            admission=local_admission(reactor))
    hand_over(service, directory)
    if network.secure:
        from nymtx.trust.admission import guard_mix_port, guard_mixnode
        guard = guard_mixnode if node.kind == "mixnode" else guard_mix_port
        network.authorities[node.name] = guard(service, directory, reactor)
    return service


def peer_addresses(network, names=None):
    """The mix addresses of the network's mixnodes and gateways (of *names*
    if given) as the topology lists them: what each node's LinkAuthority
    must know before a link opens. A node planned on port 0 counts once it
    listens (its port known)."""
    return {n.name: NodeAddress(n.host, n.port) for n in _nodes(network)
            if n.kind in ("mixnode", "gateway") and n.port
            and (names is None or n.name in names)}


async def wait_for_links(network, names, peers, timeout=30.0, poll=0.1):
    """Until the LinkAuthority of every node in *names* knows the link key
    of every address in *peers*: then no node of the network refuses
    another's link for want of a fresher topology (a refusal costs the
    sender its backoff: docs/mix-link.md, "Operating it"). Each authority
    is asked for a fresh topology every *poll* s until then (it would
    otherwise refresh every 10 s once it has its first). LocalNetError
    naming the nodes still short after *timeout* s."""
    reactor = network.reactor
    deadline = reactor.seconds() + timeout
    wanted = set(peers)
    while True:
        short = {}
        for name in names:
            authority = network.authorities.get(name)
            if authority is None:
                continue
            missing = wanted - set(authority.peers)
            if missing:
                short[name] = missing
        if not short:
            return
        if reactor.seconds() > deadline:
            worst = max(len(m) for m in short.values())
            raise LocalNetError(
                f"{', '.join(sorted(short))} still not holding a topology with every node"
                f" ({count(worst, 'node')} missing) after {timeout:.0f} s")
        for name in short:
            try:
                await network.authorities[name].refresh()
            except Exception as e:
                # logged by the authority; the deadline says the rest
                network.log.debug("{name}: topology refresh failed: {why}", name=name,
                                  why=why_failed(e))
        if any(wanted - set(network.authorities[n].peers) for n in short):
            await deferLater(reactor, poll, lambda: None)


def trusted_reader(network):
    """A TrustedDirectoryClient over every directory, a majority needed."""
    from nymtx.trust.wiring import client_directory
    return client_directory(network.reactor, list(directory_urls(network).values()),
                            directory_keys(network))


def prepare_keys(network):
    """Make every directory's identity key now (as the directory itself
    would on its first start): a parent of ``--processes`` prints them, and
    its nodes pin them, whichever process starts first."""
    for n in _nodes(network):
        if n.kind == "directory":
            directory_identity(network, n.name)


def client_settings(network):
    """What ``init_client`` needs to trust this network's directories."""
    urls = list(directory_urls(network).values())
    return dict(directory_url=urls[0], more_directories=urls[1:],
                directory_keys=directory_keys(network))


def init_line(network):
    """The ``nym-client init`` flags that pin this network's directories."""
    trust = client_settings(network)
    line = "--directory " + trust["directory_url"]
    if trust["more_directories"]:
        line += " --directories " + ",".join(trust["more_directories"])
    return line + " --directory-keys " + ",".join(trust["directory_keys"])


__all__ = ["MAX_DIRECTORIES", "client_settings", "directory_keys", "directory_urls",
           "init_line", "make_signed", "more_directories", "peer_addresses", "prepare_keys",
           "trusted_reader", "wait_for_links"]
