"""The gateway's mix port admits only the last layer's mixnodes.

Anyone could connect to a gateway's mix port and send it single-hop
packets, skipping the mixnodes (issue 15: filling Bob's quota this way let
0 of 20 of Alice's messages through). ``LastLayerAdmission`` keeps the IP
addresses of the layer-3 mixnodes of the **signed** threshold topology
(refreshed every *interval* seconds through the gateway's
TrustedDirectoryClient) and ``AdmittingFactory`` refuses, before a byte is
read, a mix link from any other address.

Address-based admission proves where a connection comes from, not who
holds a key: it does not stop another program on a last-layer mixnode's
own host, or one spoofing its address. So the nodes use ``LinkAuthority``
instead (``guard_mixnode``, ``guard_mix_port``): Noise-authenticated mix
links (nymtx.trust.mixlink, docs/mix-link.md) admit a peer by the key it
proves. LastLayerAdmission and AdmittingFactory remain for a deployment
that wants the address check as well.
"""

import ipaddress

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from nymtx.topology import LAYERS

#: seconds between topology refreshes (the clients' default is 10 s too)
REFRESH_INTERVAL = 10.0
#: seconds between tries until the first topology arrives
FIRST_INTERVAL = 1.0
#: seconds at least between refreshes asked by an unknown key or address
MISS_INTERVAL = 1.0


def _ip(host):
    ip = ipaddress.ip_address(host)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class LastLayerAdmission(Service):
    """*directory*.get_topology() (a TrustedDirectoryClient's threshold
    topology) names who may connect; until it first answers, and once it
    fails with TopologyExpired, nobody may (fail closed)."""

    log = Logger()

    def __init__(self, clock, directory, interval=REFRESH_INTERVAL, layer=LAYERS):
        #: the layer whose mixnodes may connect: the last for a gateway, the
        #: previous one for a mixnode of layer 2 or 3
        self.layer = layer
        self.clock = clock
        self.directory = directory
        self.interval = interval
        self.allowed = frozenset()
        self.refused = 0
        self._loop = None
        self._problem = None
        self._warned = False
        self._inflight = set()  # refreshes under way

    def startService(self):
        super().startService()
        # every second until the first topology: the last layer's links are
        # refused (and back off) until the gateway knows them
        self._start_loop(min(FIRST_INTERVAL, self.interval), now=True)

    def _start_loop(self, interval, now):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.clock
        self._loop.start(interval, now=now)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # a request still under way would outlive the node (its directory
        # client is closed next): cut it, and say when it is gone
        inflight = list(self._inflight)
        for d in inflight:
            d.cancel()
        return DeferredList(inflight, consumeErrors=True) if inflight else None

    def refresh(self):
        inflight = self._inflight
        d = self.directory.get_topology()
        inflight.add(d)

        def done(result):
            inflight.discard(d)
            return result
        d.addBoth(done)
        d.addCallbacks(self._got, self._failed)
        return d

    def _got(self, topology):
        allowed = frozenset(_ip(m.address.host) for m in topology.mixnodes
                            if m.layer == self.layer)
        if allowed != self.allowed or self._problem is not None:
            self.log.info("mix port admits layer {layer}: {hosts}", layer=self.layer,
                          hosts=", ".join(sorted(map(str, allowed))) or "nobody")
        self.allowed, self._problem = allowed, None
        if self.running and self._loop is not None and self._loop.interval < self.interval:
            self._start_loop(self.interval, now=False)

    def _failed(self, failure):
        from nymtx.trust.client import TopologyExpired
        if failure.check(CancelledError):
            return  # stopped
        why = failure.getErrorMessage()
        if failure.check(TopologyExpired):
            # who the last layer is cannot be known any more
            self.allowed = frozenset()
        if why != self._problem:
            self.log.warn("mix port admission: no topology ({why}); {what}", why=why,
                          what="admitting nobody" if not self.allowed
                          else "keeping the last layer it knew")
        self._problem = why

    def admits(self, host):
        try:
            ok = _ip(host) in self.allowed
        except ValueError:
            ok = False
        if not ok:
            self.refused += 1
            if not self._warned:
                self._warned = True
                self.log.warn("mix port refused a link from {host}: not a layer-{layer}"
                              " mixnode of the signed topology (further refusals are"
                              " counted, not logged)", host=host, layer=self.layer)
        return ok


class AdmittingFactory:
    """Wraps the mix listener's inner factory: no protocol (the connection
    is closed) for a peer the admission does not admit."""

    def __init__(self, wrapped, admission, run_admission=False):
        self.wrapped = wrapped
        self.admission = admission
        # with *run_admission*, the admission runs while the port listens
        self.run_admission = run_admission

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def doStart(self):
        if self.run_admission and not self.admission.running:
            self.admission.startService()
        self.wrapped.doStart()

    def doStop(self):
        if self.run_admission and self.admission.running:
            self.admission.stopService()
        self.wrapped.doStop()

    def buildProtocol(self, addr):
        if not self.admission.admits(getattr(addr, "host", "")):
            return None
        return self.wrapped.buildProtocol(addr)


class LinkAuthority(LastLayerAdmission):
    """Who may open a mix link to this node, and the key of each node it
    sends to, by **key** from the signed threshold topology
    (nymtx.trust.mixlink): the static link key of every node is its
    identity key converted to X25519.

    ``admit(key)`` (the responder's check) admits the nodes of *layer*
    (None: nobody is authenticated here; a layer-1 node reads clients);
    ``initiator(address)`` (nymtx.links, for every next hop) is the link
    to the node of the topology at *address*. Fails closed as
    LastLayerAdmission: no topology, no keys."""

    def __init__(self, clock, directory, identity, layer=LAYERS, interval=REFRESH_INTERVAL):
        super().__init__(clock, directory, interval, layer=layer)
        from nymtx.trust.mixlink import LinkKeys
        self.identity = identity
        self.keys = LinkKeys(identity)
        #: link keys of the nodes of *layer*
        self.allowed_keys = frozenset()
        #: NodeAddress -> link key of every node of the topology
        self.peers = {}
        self._converted = {}  # identity key -> link key: a conversion per node, once
        self._asked = None    # when a miss last asked for a fresh topology

    def _link_key(self, identity_key):
        from nymtx.trust.mixlink import LinkError, link_public_key
        key = self._converted.get(identity_key)
        if key is None:
            try:
                key = link_public_key(identity_key)
            except LinkError:
                return None
            self._converted[identity_key] = key
        return key

    def _got(self, topology):
        peers, allowed = {}, set()
        for node in tuple(topology.mixnodes) + tuple(topology.gateways):
            if node.identity_key is None:
                continue  # an unsigned topology proves no key
            key = self._link_key(node.identity_key)
            if key is None:
                continue
            peers[node.address] = key
            if getattr(node, "layer", None) == self.layer:
                allowed.add(key)
        allowed = frozenset(allowed)
        if allowed != self.allowed_keys or self._problem is not None:
            if self.layer is None:
                self.log.info("mix links: {m} nodes known by key (this node reads"
                              " clients, unauthenticated)", m=len(peers))
            else:
                self.log.info("mix links: {n} layer-{layer} nodes may connect, {m} nodes"
                              " known by key", n=len(allowed), layer=self.layer,
                              m=len(peers))
        self.allowed_keys, self.peers, self._problem = allowed, peers, None
        if len(self._converted) > 4 * len(peers) + 64:
            live = {n.identity_key for n in tuple(topology.mixnodes) + tuple(topology.gateways)}
            self._converted = {k: v for k, v in self._converted.items() if k in live}
        if self.running and self._loop is not None and self._loop.interval < self.interval:
            self._start_loop(self.interval, now=False)

    def _failed(self, failure):
        from nymtx.trust.client import TopologyExpired
        if failure.check(CancelledError):
            return  # stopped
        if failure.check(TopologyExpired):
            self.allowed_keys, self.peers = frozenset(), {}
        why = failure.getErrorMessage()
        if why != self._problem:
            self.log.warn("mix links: no topology ({why}); {what}", why=why,
                          what="no node is known by key" if not self.peers
                          else "keeping the nodes it knew")
        self._problem = why

    def admit(self, key):
        """None if *key* (a proven static link key) may send here, else why not."""
        if key in self.allowed_keys:
            return None
        self.refused += 1
        self._miss()
        from nymtx.keys import encode_key
        return (f"key {encode_key(key)} is not a layer-{self.layer} node of the signed"
                " topology")

    def _miss(self):
        # a node that joined since the last refresh (every 10 s): ask again
        # now, at most once a second, so its link opens on the sender's next
        # try instead of up to 10 s later
        now = self.clock.seconds()
        if self.running and (self._asked is None or now - self._asked >= MISS_INTERVAL):
            self._asked = now
            self.refresh()

    def initiator(self, address):
        """A MixLink to the node at *address*; LinkError if the topology has none."""
        from nymtx.trust.mixlink import LinkError, MixLink
        key = self.peers.get(address)
        if key is None:
            self._miss()
            raise LinkError(f"no node of the signed topology is at {address}: its link key"
                            " is not known")
        return MixLink(True, self.keys, remote_key=key)


def _authenticate(limit, authority, clock, authenticate, run=True):
    from nymtx.trust.mixlink import AuthenticatingFactory
    limit.wrappedFactory = AuthenticatingFactory(limit.wrappedFactory, authority, clock,
                                                 authenticate=authenticate,
                                                 run_authority=run)
    return limit.wrappedFactory


def secure_mixnode(mixnode, directory, clock, interval=REFRESH_INTERVAL):
    """Authenticated mix links for *mixnode* (a MixnodeService whose
    *directory* is a SigningDirectoryClient over pinned directories): its
    links to next hops prove its identity key, and a node of layer 2 or 3
    admits only links proven by the previous layer's keys (layer 1 reads
    clients, unauthenticated). The authority runs while the port listens.
    Returns it."""
    authority = LinkAuthority(clock, directory, directory.identity,
                              layer=mixnode.layer - 1 if mixnode.layer >= 2 else None,
                              interval=interval)
    _authenticate(mixnode.factory, authority, clock, mixnode.layer >= 2)
    mixnode.links.secure = authority
    return authority


def secure_mix_port(gateway, directory, clock, interval=REFRESH_INTERVAL):
    """The gateway's mix port admits only mix links proven by a last-layer
    node's key; returns the LinkAuthority (a child service of *gateway*)."""
    authority = LinkAuthority(clock, directory, directory.identity, layer=LAYERS,
                              interval=interval)
    # the gateway runs it as its child, not the factory
    _authenticate(gateway.mix_listener.factory, authority, clock, True, run=False)
    authority.setServiceParent(gateway)
    return authority


#: what the taps call (a mixnode's or gateway's config with pinned keys)
guard_mixnode = secure_mixnode
guard_mix_port = secure_mix_port
