"""The in-process network: every node of a plan as a child service of one MultiService.

The end-to-end tests and the quick start embed ``LocalNetwork``; the
``nym-localnet`` command and twistd plugin run it too. Node keys and gateway
mailboxes are kept under ``<home>/localnet/<node>/``, so a restarted network
keeps its identities and its clients' registrations.
"""

import os

import attrs
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger

from nymtx.directory.client import DirectoryClient
from nymtx.directory.registry import Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import DirectoryService
from nymtx.gateway.private_server import RegistrationLimit
from nymtx.gateway.service import GatewayService
from nymtx.keys import KeyFormatError, KeyPair
from nymtx.localnet.model import (
    LocalNetError, Timing, count, describe, poll_clients, poll_topology, why_failed)
from nymtx.mixnode.service import MixnodeService
from nymtx.observer import OneShot


def node_keys(home, name):
    """The node's key pair, made on first use and kept under *home*."""
    directory = os.path.join(home, "localnet", name)
    try:
        return KeyPair.load(directory)
    except KeyFormatError:
        if os.path.exists(os.path.join(directory, "private_sphinx.key")):
            raise
    keys = KeyPair.generate()
    keys.save(directory)
    return keys


def _endpoint(reactor, host, port):
    return TCP4ServerEndpoint(reactor, port, interface=host)


#: registrations a local gateway takes at once, from any one address
LOCAL_REGISTRATIONS = 100_000


def local_admission(reactor):
    """A local gateway's registration limits: every local client registers
    from one loopback address, many at once, and the limits against floods
    from outside would keep all but the first few out for minutes."""
    return RegistrationLimit(reactor, per_source_burst=LOCAL_REGISTRATIONS,
                             total_burst=LOCAL_REGISTRATIONS)


def _strport(host, port):
    return f"tcp:{port}:interface={host}"


class LocalNetwork(MultiService):
    """The nodes of *plan* in this process.

    ``whenReady()`` fires with the directory's URL once the directory lists
    every mixnode and gateway (and, with mix links, once every node holds a
    topology listing every other); it fails with LocalNetError if a node
    cannot listen. ``stop_node(name)`` / ``start_node(name)`` stop and
    restart one node, for tests of failures.

    *secure* (the default): every directory signs (also a single one), every
    node pins the directories' keys and speaks authenticated mix links
    (docs/mix-link.md). ``secure=False`` is the network as it was before
    them (``--insecure-links``): plain links, and with one directory the
    seed's unsigned one.
    """

    log = Logger()

    def __init__(self, reactor, home, nodes, timing=Timing(), only=None, directories=1,
                 secure=True):
        super().__init__()
        self.reactor = reactor
        self.home = str(home)
        from nymtx.trust.localnet import more_directories
        self.nodes = {n.name: n for n in more_directories(nodes, directories)}
        self.secure = secure
        # the directories sign, and the nodes announce to each (issue 15)
        self.signed = secure or directories > 1
        #: node name -> its LinkAuthority (mix links on)
        self.authorities = {}
        #: with *only* a mixnode or gateway and mix links on: whether it came
        #: to know every node of the plan at start
        self.links_ready = None
        self.links_timeout = 60.0
        self.directory_urls = {}
        self.timing = timing
        self.only = only
        self.node_services = {}
        self.directory_url = None
        self.registry = None
        directory = self.nodes["directory"]
        if directory.port:
            self.directory_url = f"http://{directory.host}:{directory.port}"
        self._ready = OneShot()

    # ---- building -------------------------------------------------------

    def _make(self, node):
        if self.signed:
            from nymtx.trust.localnet import make_signed
            return make_signed(self, node)
        if node.kind == "directory":
            self.registry = Registry(self.reactor, expiry=self.timing.expiry)
            return DirectoryService(_endpoint(self.reactor, node.listen_host, node.port),
                                    make_site(self.registry), f"{node.host}:{node.port}",
                                    registry=self.registry)
        keys = node_keys(self.home, node.name)
        if node.kind == "mixnode":
            return MixnodeService(
                self.reactor, keys, node.layer, _strport(node.listen_host, node.port), node.host,
                self.directory_url, presence_interval=self.timing.presence_interval,
                metrics_interval=self.timing.metrics_interval)
        return GatewayService(
            self.reactor, keys, os.path.join(self.home, "localnet", node.name, "data"),
            _strport(node.listen_host, node.port), _strport(node.listen_host, node.client_port),
            node.host, self.directory_url,
            presence_interval=self.timing.presence_interval,
            admission=local_admission(self.reactor))

    async def _start_node(self, node):
        service = self._make(node)
        service.setName(node.name)
        try:
            # a node may bind as it starts (in privilegedStartService), and
            # raise right here, or later through whenListening()
            service.setServiceParent(self)
            self.node_services[node.name] = service
            bound = await service.whenListening()
        except Exception as e:
            raise LocalNetError(f"{node.name} could not listen: {why_failed(e)}")
        if node.kind == "directory":
            port = bound.getHost().port
            self.directory_urls[node.name] = f"http://{node.host}:{port}"
            self.directory_url = self.directory_urls.get("directory", self.directory_url)
            self.nodes[node.name] = attrs.evolve(node, port=port)
        elif node.kind == "gateway":
            # A restarted node comes back on the same ports, as a real one would.
            self.nodes[node.name] = attrs.evolve(node, port=bound[0], client_port=bound[1])
        else:
            self.nodes[node.name] = attrs.evolve(node, port=bound.getHost().port)
        return bound

    # ---- running --------------------------------------------------------

    def startService(self):
        super().startService()
        # A restart needs a fresh result, but waiters from before the first
        # start (makeService's, under twistd) must keep theirs.
        if self._ready.fired:
            self._ready = OneShot()
        ready = defer.Deferred.fromCoroutine(self._start_all())
        ready.addErrback(self._failed)
        ready.addBoth(self._ready.fire)

    def _failed(self, failure):
        self.log.error("local network failed: {why}", why=failure.getErrorMessage())
        return failure

    async def _start_all(self):
        nodes = [n for n in self.nodes.values() if self.only in (None, n.name)]
        # The directory first: the other nodes announce themselves to its URL,
        # and with port 0 that URL is known only once it listens.
        directory = [n for n in nodes if n.kind == "directory"]
        for node in directory:
            await self._start_node(node)
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(self._start_node(n))
             for n in nodes if n.kind != "directory"], consumeErrors=True)
        problems = [value.getErrorMessage() for ok, value in results if not ok]
        if problems:
            raise LocalNetError("; ".join(problems))
        if self.only is None:
            topology = await self.wait_for_topology()
            await self.wait_for_links()
            # under twistd nobody reads whenReady(): the log is the announcement
            for line in describe(topology, self.directory_url):
                self.log.info("local network ready: {line}", line=line)
        elif self.secure and self.nodes[self.only].kind != "directory":
            # a node of --processes or --netns: ready once it knows every
            # node of the plan (the parent waits for each to say so). A node
            # restarted while another is down never will: it runs on all
            # the same (its parent is not waiting any more), and says so
            try:
                await self.wait_for_links(timeout=self.links_timeout)
                self.links_ready = True
            except LocalNetError as e:
                self.log.warn("{node} runs, but: {why}", node=self.only, why=str(e))
                self.links_ready = False
        return self.directory_url

    def whenReady(self):
        """Fires with the directory URL once the topology is complete."""
        return self._ready.when_fired()

    async def wait_for_topology(self, timeout=30.0, poll=0.1):
        """The topology once every running node of the plan is in it."""
        directory = self._reader()
        try:
            return await self._wait_for_topology(directory, timeout, poll)
        finally:
            await directory.close()

    async def _wait_for_topology(self, directory, timeout, poll):
        want_mix = {self.node_services[n].keys.public_key for n in self.node_services
                    if self.nodes[n].kind == "mixnode" and self.node_services[n].running}
        want_gw = {self.node_services[n].keys.public_key for n in self.node_services
                   if self.nodes[n].kind == "gateway" and self.node_services[n].running}

        def missing(topology):
            have_mix = {m.public_key for m in topology.mixnodes}
            have_gw = {g.public_key for g in topology.gateways}
            if want_mix <= have_mix and want_gw <= have_gw:
                return None
            return (f"the topology is still incomplete:"
                    f" {count(len(want_mix - have_mix), 'mixnode')} and"
                    f" {count(len(want_gw - have_gw), 'gateway')} not announced yet")
        return await poll_topology(self.reactor, directory, missing, timeout, poll)

    async def wait_for_links(self, timeout=30.0, poll=0.1):
        """With mix links: until every running node's LinkAuthority knows
        every running node (nymtx.trust.localnet.wait_for_links)."""
        if not self.secure:
            return
        from nymtx.trust.localnet import peer_addresses, wait_for_links
        running = {n for n, s in self.node_services.items() if s.running}
        if self.only is not None:
            # this process runs one node; the plan's fixed ports name the rest
            names, peers = [self.only], peer_addresses(self).values()
        else:
            names, peers = sorted(running), peer_addresses(self, running).values()
        await wait_for_links(self, names, peers, timeout, poll)

    async def wait_for_clients(self, client_keys, timeout=30.0, poll=0.1):
        """The topology once the gateways list every key in *client_keys*."""
        directory = self._reader()
        try:
            return await poll_clients(self.reactor, directory, client_keys, timeout, poll)
        finally:
            await directory.close()

    def _reader(self):
        if self.signed:
            from nymtx.trust.localnet import trusted_reader
            return trusted_reader(self)
        return DirectoryClient(self.directory_url, reactor=self.reactor)

    async def stop_node(self, name):
        """Stop one node; ``start_node(name)`` brings it back on the same ports."""
        service = self.node_services.pop(name)
        await defer.maybeDeferred(service.disownServiceParent)
        return service

    async def start_node(self, name):
        return await self._start_node(self.nodes[name])
