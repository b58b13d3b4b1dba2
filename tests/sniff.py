"""A loopback capture the way tcpdump makes one (an AF_PACKET socket: the
kernel's own frames), for the pcap reader's tests; root or CAP_NET_RAW."""

import socket
import struct
import threading
import time

from nymtx.measure import pcap

PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35    # Linux; its control message type is the same number    # a loopback frame's sending copy: libpcap drops it too


def can_sniff():
    """None if a loopback capture can be made here, else why not."""
    if not hasattr(socket, "AF_PACKET"):
        return "no AF_PACKET sockets (not Linux)"
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except OSError as e:
        return f"no packet socket ({e.strerror}: it needs root or CAP_NET_RAW)"
    s.close()
    return None


class Sniffer:
    """Captures every frame on ``lo`` in a thread until ``stop()``."""

    def __init__(self, interface="lo"):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)   # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind((interface, 0))
        # the kernel's time of each frame, as tcpdump records it (the
        # thread's own clock would lag whenever the reactor holds the GIL)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.1)
        self.frames = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(1 << 18, 64)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING or not self._ours(data):
                continue
            when = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    when = sec + nsec / 1e9
            self.frames.append((when, data))

    @staticmethod
    def _ours(data):
        # every connection of a measured network has a client's (127.1.x.x),
        # a mixnode's (127.2.x.x) or a gateway's (127.3.x.x: its acks into
        # layer 1) address at one end: other traffic on the loopback (other
        # tests') is not kept in memory
        ours = (b"\x7f\x01", b"\x7f\x02", b"\x7f\x03")
        return (len(data) >= 34 and data[12:14] == b"\x08\x00"
                and (data[26:28] in ours or data[30:32] in ours))

    def stop(self):
        self._stop = True
        self._thread.join()
        self.sock.close()

    def write(self, path, ports):
        """A pcap of the frames of TCP connections to or from *ports* (as
        ``tcpdump -w path 'tcp port A or ...'``); returns how many."""
        kept = 0
        with open(path, "wb") as f:
            f.write(pcap.pcap_header(pcap.LINKTYPE_ETHERNET))
            for t, data in self.frames:
                if len(data) < 34 or data[12:14] != b"\x08\x00" or data[23] != 6:
                    continue
                at = 14 + (data[14] & 0x0F) * 4
                sport, dport = struct.unpack(">HH", data[at:at + 4])
                if sport in ports or dport in ports:
                    f.write(pcap.pcap_record(t, data))
                    kept += 1
        return kept
