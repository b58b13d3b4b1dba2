"""Framing of the mix links: fixed-size Sphinx packets back to back.

Client→mixnode, mixnode→mixnode and mixnode→gateway links all carry
1372-byte packets with no other framing, as nym v0.5 does.
"""

from twisted.internet.protocol import Protocol

from nymtx.sphinx import PACKET_SIZE


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
