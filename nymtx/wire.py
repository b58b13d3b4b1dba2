"""Framing of the mix links, and the packet receiver every packet listener uses.

Client→mixnode, mixnode→mixnode and mixnode→gateway links all carry
1372-byte packets with no other framing, as nym v0.5 does.

The bounds every listener puts on its peers (connections at once, deadlines,
the open-files budget) live in :mod:`nymtx.listening`; the names
``connection_budget`` and ``raise_fd_limit`` are kept here for old callers.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from nymtx.listening import FD_RESERVE, activity, connection_budget, raise_fd_limit
from nymtx.sphinx import PACKET_SIZE

__all__ = ["FD_RESERVE", "connection_budget", "raise_fd_limit", "PacketReceiver",
           "BoundedPacketReceiver", "BoundedFactory", "IdleTimeout"]


# The old bounds, kept only for nymtx.gateway.private_server (issue 10, not
# wired yet), which was written on them; every listener that runs uses
# nymtx.listening.ConnectionLimit. Move it there and delete these.
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


class BoundedPacketReceiver(PacketReceiver):
    """A PacketReceiver behind a :class:`nymtx.listening.ConnectionLimit`.

    Only whole packets count as activity for the idle timeout: a peer that
    sends part of a packet and stops, or dribbles a byte at a time, is still
    timed out.
    """

    reports_activity = True

    def dataReceived(self, data):
        if len(self._buffer) + len(data) >= self.packet_size:
            activity(self.transport)
        PacketReceiver.dataReceived(self, data)
