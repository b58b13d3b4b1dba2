"""Framing of the mix links, and the packet receiver every packet listener uses.

Client→mixnode, mixnode→mixnode and mixnode→gateway links all carry
1372-byte packets with no other framing, as nym v0.5 does.

The bounds every listener puts on its peers (connections at once, deadlines,
the open-files budget) live in :mod:`nymtx.listening`; the names
``connection_budget`` and ``raise_fd_limit`` are kept here for old callers.
"""

from twisted.internet.protocol import Protocol

from nymtx.listening import FD_RESERVE, activity, connection_budget, raise_fd_limit
from nymtx.sphinx import PACKET_SIZE

__all__ = ["FD_RESERVE", "connection_budget", "raise_fd_limit", "PacketReceiver",
           "BoundedPacketReceiver", "no_delay"]


def no_delay(transport):
    """Turn Nagle's algorithm off on *transport*'s socket, if it has one.

    A mix link or a client link writes one packet (or one frame) at a time,
    each due the moment its delay ends: Nagle would hold a small write until
    the previous one is acknowledged, adding up to a delayed-ACK timeout
    (tens of ms) per hop. nym-measure saw nodes 15-28 ms late per hop with
    it, 5 ms without. Memory transports (tests) have no socket: skipped.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is None:
        return
    try:
        set_no_delay(True)
    except OSError:
        pass  # not a TCP socket after all (a UNIX socket), or already closed


class PacketReceiver(Protocol):
    """Cuts the byte stream into packets and calls ``packetReceived`` for each.

    Whole packets go first to ``packetsReceived`` (the packets of one read,
    laid end to end), which calls ``packetReceived`` for each until the
    connection is closing; a receiver that takes them in one piece
    overrides it.
    """

    packet_size = PACKET_SIZE

    def __init__(self):
        self._buffer = bytearray()

    def dataReceived(self, data):
        buf = self._buffer
        size = self.packet_size
        if buf:
            if len(buf) + len(data) < size:
                buf += data
                return
            buf += data
            data = bytes(buf)
            buf.clear()
        n = len(data)
        whole = n - n % size
        if whole < n:
            buf += memoryview(data)[whole:]
            data = data[:whole]
        if whole:
            self.packetsReceived(data)

    def packetsReceived(self, packets):
        size = self.packet_size
        for start in range(0, len(packets), size):
            self.packetReceived(packets[start:start + size])
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
