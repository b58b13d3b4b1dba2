"""``nym-localnet --directories N``: a set of signing directories.

With N > 1 every directory has an identity key (kept under
``<home>/localnet/directory[-i]/``, so a restarted network keeps its keys)
and signs its topology, admitting any node (a local network has no allow
list); every mixnode and gateway has an identity key beside its Sphinx key
and announces, signed, to each directory; whoever reads the topology (the
network's own wait, the clients) pins the directories' keys and needs a
majority of them. The hooks are called by nymtx.localnet.network.
"""

import os


import attrs

from nymtx.localnet.model import LocalNetError

#: more signing directories than this on one machine is a typo
MAX_DIRECTORIES = 9


def more_directories(nodes, directories):
    """*nodes* with directories 2..N added after the first (their ports after
    the plan's last, or 0 when the plan's are)."""
    if not 1 <= directories <= MAX_DIRECTORIES:
        raise LocalNetError(f"--directories must be 1 to {MAX_DIRECTORIES}, not {directories}")
    nodes = list(nodes)
    if directories == 1:
        return nodes
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
    from nymtx.localnet.network import _endpoint, _strport, node_keys
    from nymtx.mixnode.service import MixnodeService
    from nymtx.trust.wiring import hand_over, node_directory, node_identity
    reactor, timing = network.reactor, network.timing
    if node.kind == "directory":
        registry = SignedRegistry(reactor, directory_identity(network, node.name), None,
                                  expiry=timing.expiry)
        if node.name == "directory":
            network.registry = registry
        network.registries = dict(getattr(network, "registries", {}), **{node.name: registry})
        return DirectoryService(_endpoint(reactor, node.listen_host, node.port),
                                make_site(registry), f"{node.host}:{node.port}",
                                registry=registry)
    keys = node_keys(network.home, node.name)
    # the nodes do not pin the directories: their links stay plain (a
    # local network's nodes join within a second of each other, and each
    # first refusal of a node not yet in a topology costs its sender a
    # backoff; docs/mix-link.md, "Operating it")
    directory = node_directory(reactor, list(directory_urls(network).values()),
                               node_identity(_folder(network, node.name)))
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
            presence_interval=timing.presence_interval)
    hand_over(service, directory)
    return service


def trusted_reader(network):
    """A TrustedDirectoryClient over every directory, a majority needed."""
    from nymtx.trust.wiring import client_directory
    return client_directory(network.reactor, list(directory_urls(network).values()),
                            directory_keys(network))


def client_settings(network):
    """What ``init_client`` needs to trust this network's directories."""
    urls = list(directory_urls(network).values())
    return dict(directory_url=urls[0], more_directories=urls[1:],
                directory_keys=directory_keys(network))


__all__ = ["MAX_DIRECTORIES", "client_settings", "directory_keys", "directory_urls",
           "make_signed",
           "more_directories", "trusted_reader"]
