"""Framing of the mix links, and the bounds every listener puts on its peers.

Client→mixnode, mixnode→mixnode and mixnode→gateway links all carry
1372-byte packets with no other framing, as nym v0.5 does.

Anyone on the network can connect to a listener, so each one is bounded
(:class:`BoundedFactory`): a number of connections at once, past which an
accepted socket is closed straight away, and an idle timeout
(:class:`IdleTimeout`), after which a silent peer is cut off. Without them a
peer could hold connections until the process runs out of file
descriptors, and then the node can neither accept its real peers nor dial
its next hops.
"""

import resource

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from nymtx.sphinx import PACKET_SIZE

#: File descriptors a node keeps for itself besides its listeners' connections
#: (outgoing links, the database, log files, the directory client).
FD_RESERVE = 64


def raise_fd_limit(resource_module=resource):
    """Raise the soft limit on open files to the hard one; returns the soft limit.

    The usual soft limit (1024) is far below what a busy node needs, and the
    hard limit is what the operator allowed; a process may raise its own.
    """
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    if hard == resource_module.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource_module.RLIM_INFINITY else hard
        try:
            resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_budget(wanted, reserved, fd_limit):
    """How many connections a listener may take with *fd_limit* descriptors.

    *reserved* are the descriptors the node needs for everything else. A
    listener never gets less than half the limit, so a node configured with
    more peers than descriptors still accepts connections.
    """
    return max(1, min(wanted, max(fd_limit - reserved - FD_RESERVE, fd_limit // 2)))


class IdleTimeout(TimeoutMixin):
    """Closes a connection its factory's ``idle_timeout`` seconds after its last byte.

    The timer runs on the factory's ``clock``; ``dataReceived`` must call
    ``resetTimeout()``. The connection is aborted, not closed: a peer that
    is idle may also be one that never reads, and a graceful close would
    wait on it for ever.
    """

    def start_idle_timeout(self):
        self.callLater = self.factory.clock.callLater
        self.setTimeout(self.factory.idle_timeout)

    def timeoutConnection(self):
        self.transport.abortConnection()


class BoundedFactory(Factory):
    """A listener's factory: at most ``max_connections`` connections at once.

    Past the bound ``buildProtocol`` returns None, and Twisted closes the
    accepted socket at once: the peer sees the connection reset, and the
    descriptor is free again before the next accept. The bound is logged
    once each time it is reached, not once per refused connection, which
    would be a log line per connection attempt of a flood. Protocols add
    themselves to ``connections`` when made and remove themselves when lost.
    """

    noisy = False
    log = Logger()
    #: what the log line calls this listener
    kind = "listener"

    def __init__(self, clock, max_connections, idle_timeout):
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, not {idle_timeout}")
        self.clock = clock
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections = set()
        #: connections closed at once because the listener was full
        self.refused = 0
        self._full = False

    def buildProtocol(self, addr):
        if len(self.connections) >= self.max_connections:
            self.refused += 1
            if not self._full:
                self._full = True
                self.log.warn(
                    "{kind} has {n} connections, its maximum: refusing new ones"
                    " until some close", kind=self.kind, n=self.max_connections)
            return None
        self._full = False
        return self.makeProtocol(addr)

    def makeProtocol(self, addr):
        p = self.protocol()
        p.factory = self
        return p


class PacketReceiver(Protocol):
    """Cuts the byte stream into packets and calls ``packetReceived`` for each."""

    packet_size = PACKET_SIZE

    def __init__(self):
        self._buffer = bytearray()

    def dataReceived(self, data):
        buf = self._buffer
        buf += data
        size = self.packet_size
        if len(buf) < size:
            return
        whole = len(buf) - len(buf) % size
        chunk = bytes(buf[:whole])
        del buf[:whole]
        for start in range(0, whole, size):
            self.packetReceived(chunk[start:start + size])
            if self.transport is not None and getattr(self.transport, "disconnecting", False):
                return

    def packetReceived(self, packet):
        raise NotImplementedError


class BoundedPacketReceiver(IdleTimeout, PacketReceiver):
    """A PacketReceiver of a :class:`BoundedFactory`'s listener.

    Only whole packets count as activity: a peer that sends part of a packet
    and stops, or dribbles a byte at a time, is still timed out.
    """

    def connectionMade(self):
        self.factory.connections.add(self)
        self.start_idle_timeout()

    def connectionLost(self, reason):
        self.setTimeout(None)
        self.factory.connections.discard(self)

    def dataReceived(self, data):
        buf = self._buffer
        if len(buf) + len(data) >= self.packet_size:
            self.resetTimeout()
        PacketReceiver.dataReceived(self, data)
