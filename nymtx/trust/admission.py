"""The gateway's mix port admits only the last layer's mixnodes.

Anyone could connect to a gateway's mix port and send it single-hop
packets, skipping the mixnodes (issue 15: filling Bob's quota this way let
0 of 20 of Alice's messages through). ``LastLayerAdmission`` keeps the IP
addresses of the layer-3 mixnodes of the **signed** threshold topology
(refreshed every *interval* seconds through the gateway's
TrustedDirectoryClient) and ``AdmittingFactory`` refuses, before a byte is
read, a mix link from any other address.

This is address-based: it proves where a connection comes from, not who
holds a key. Two things it does not stop, which a Noise-authenticated mix
link would (docs/trust.md, "Mix-port admission"): another program on a
last-layer mixnode's own host (or one spoofing its address on the path),
and, on one machine, anything on 127.0.0.1 when a mixnode is listed there.
"""

import ipaddress

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from nymtx.topology import LAYERS

#: seconds between topology refreshes (the clients' default is 10 s too)
REFRESH_INTERVAL = 10.0
#: seconds between tries until the first topology arrives
FIRST_INTERVAL = 1.0


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

    def refresh(self):
        d = self.directory.get_topology()
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


def guard_mixnode(mixnode, directory, clock, interval=REFRESH_INTERVAL):
    """Admit to a layer-2 or -3 *mixnode* only the previous layer's mixnodes
    (layer 1 takes packets from clients, so anyone); returns the admission,
    or None for layer 1. It runs while the node's port listens."""
    if mixnode.layer < 2:
        return None
    admission = LastLayerAdmission(clock, directory, interval, layer=mixnode.layer - 1)
    limit = mixnode.factory
    limit.wrappedFactory = AdmittingFactory(limit.wrappedFactory, admission,
                                            run_admission=True)
    return admission


def guard_mix_port(gateway, directory, clock, interval=REFRESH_INTERVAL):
    """Put LastLayerAdmission in front of *gateway*'s mix listener; returns it."""
    admission = LastLayerAdmission(clock, directory, interval)
    limit = gateway.mix_listener.factory
    limit.wrappedFactory = AdmittingFactory(limit.wrappedFactory, admission)
    admission.setServiceParent(gateway)
    return admission
