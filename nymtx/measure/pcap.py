"""A capture of a real deployment, read as the adversary's view.

``nym-measure --pcap FILE --nodes TOPOLOGY`` reads a packet capture (libpcap
or pcapng, as tcpdump, tshark or dumpcap write them), reassembles every TCP
stream per direction, cuts the mix links' streams into their 1372-byte
Sphinx packets and the client–gateway links' into their channel messages
(``docs/gateway-protocol.md``), and names the ends with the public topology
(the directory's document: which address is which node). The result is a
:class:`~nymtx.measure.trace.View` like the one the in-node taps give, so
the attacks and the checks that need no truth run on it.

Only the standard library reads the bytes (``struct``, ``ipaddress``):
Ethernet (with 802.1Q tags), Linux cooked (SLL and SLL2), BSD loopback
(NULL and LOOP) and raw IP link types; IPv4 and IPv6 (extension headers
skipped; fragments are counted and left out); TCP with its sequence
numbers, so retransmissions, overlaps and reordering are undone. Bytes the
capture lacks (a dropped frame, a snap length shorter than a segment) are a
hole whose size the sequence numbers give: the packets it touches are left
out and counted, the stream goes on aligned after it. A stream whose start
(SYN) is not in the capture cannot be cut (a mix link has no framing to
find the boundaries by) and is counted apart.

Anything the reader cannot parse raises :class:`PcapError` with where and
why; it never crashes on the bytes (``tests/test_measure_pcap.py`` fuzzes
it). The format is specified in ``docs/anonymity.md`` ("A capture of a real
deployment").
"""

import collections
import heapq
import ipaddress
import json
import struct

import attrs

PACKET_SIZE = 1372          # nymtx.sphinx.PACKET_SIZE, every mix-link packet
# The private client–gateway link (docs/gateway-protocol.md): u16 length, then
# the message. Handshake messages are 96 (up) and 48 (down) bytes; every
# transport frame up is 99 and every one down 9869.
LENGTH_SIZE = 2
HANDSHAKE_UP, HANDSHAKE_DOWN = 96, 48
REQUEST_LENGTH, ANSWER_LENGTH = 99, 9869

# link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_TYPES = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6)   # 12, 14: DLT_RAW on some BSDs
LINK_TYPES = {LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet",
              LINKTYPE_RAW: "raw IP", 12: "raw IP", 14: "raw IP", LINKTYPE_LOOP: "OpenBSD loopback",
              LINKTYPE_LINUX_SLL: "Linux cooked", LINKTYPE_IPV4: "raw IPv4",
              LINKTYPE_IPV6: "raw IPv6", LINKTYPE_LINUX_SLL2: "Linux cooked v2"}

_PCAP_MAGIC = {b"\xa1\xb2\xc3\xd4": (">", 1e-6), b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
               b"\xa1\xb2\x3c\x4d": (">", 1e-9), b"\x4d\x3c\xb2\xa1": ("<", 1e-9)}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER = 0x1A2B3C4D
#: the largest frame accepted (libpcap's own bound, MAXIMUM_SNAPLEN)
MAX_FRAME = 262144
#: a stream's out-of-order bytes held at most, waiting for a hole to fill
MAX_PENDING = 64 << 20


class PcapError(ValueError):
    """A capture (or a topology) that cannot be read; the message says where and why."""


@attrs.frozen
class Frame:
    time: float
    linktype: int
    data: bytes
    length: int          # the frame's length on the wire (data may be shorter)


# ---- the file formats ------------------------------------------------------

def read_frames(data):
    """Every frame of a libpcap or pcapng capture in *data* (bytes), in file order.

    A record cut short at the very end (a capture stopped while writing) ends
    the list with the frames before it; anything else malformed raises
    PcapError.
    """
    data = bytes(data)
    if len(data) < 4:
        raise PcapError(f"not a capture: {len(data)} bytes, too short for a file header")
    if data[:4] in _PCAP_MAGIC:
        return list(_classic(data))
    if struct.unpack("<I", data[:4])[0] == _PCAPNG_SHB:
        return list(_pcapng(data))
    raise PcapError(f"not a pcap or pcapng file (it starts with {data[:4].hex()})")


def _classic(data):
    order, unit = _PCAP_MAGIC[data[:4]]
    if len(data) < 24:
        raise PcapError("a pcap file header is 24 bytes; the file has fewer")
    major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", data[4:24])
    if major != 2:
        raise PcapError(f"pcap version {major}: only version 2 is known")
    linktype = network & 0x0FFFFFFF    # the upper bits say whether frames carry an FCS
    at = 24
    while at < len(data):
        if len(data) - at < 16:
            return            # a record header cut short: the capture was stopped
        sec, frac, caplen, length = struct.unpack(order + "IIII", data[at:at + 16])
        if caplen > MAX_FRAME:
            raise PcapError(f"record at offset {at}: {caplen} bytes captured, more than"
                            f" {MAX_FRAME} (a corrupt file)")
        if len(data) - at - 16 < caplen:
            return            # the last frame cut short
        if unit == 1e-6 and frac >= 1_000_000 or unit == 1e-9 and frac >= 1_000_000_000:
            raise PcapError(f"record at offset {at}: a fraction of a second of {frac}")
        yield Frame(sec + frac * unit, linktype, data[at + 16:at + 16 + caplen],
                    max(length, caplen))
        at += 16 + caplen


def _pcapng(data):
    at = 0
    order = None
    interfaces = []
    while at < len(data):
        if len(data) - at < 12:
            if order is None:
                raise PcapError("a pcapng file shorter than its first block")
            return
        if order is None or struct.unpack("<I", data[at:at + 4])[0] == _PCAPNG_SHB:
            # a section header: its byte-order magic says how to read what follows
            if struct.unpack("<I", data[at:at + 4])[0] != _PCAPNG_SHB:
                raise PcapError("a pcapng file must start with a section header block")
            magic = data[at + 8:at + 12]
            if magic == struct.pack("<I", _PCAPNG_BYTE_ORDER):
                order = "<"
            elif magic == struct.pack(">I", _PCAPNG_BYTE_ORDER):
                order = ">"
            else:
                raise PcapError(f"section header at offset {at}: byte-order magic"
                                f" {magic.hex()}, not 1a2b3c4d")
            interfaces = []
        kind, total = struct.unpack(order + "II", data[at:at + 8])
        if total < 12 or total % 4:
            raise PcapError(f"block at offset {at}: length {total} (at least 12, a multiple of 4)")
        if total > len(data) - at:
            if kind == _PCAPNG_SHB:
                raise PcapError(f"section header at offset {at} runs past the end of the file")
            return            # the last block cut short
        if struct.unpack(order + "I", data[at + total - 4:at + total])[0] != total:
            raise PcapError(f"block at offset {at}: its trailing length is not {total}")
        body = data[at + 8:at + total - 4]
        if kind == _PCAPNG_SHB:
            if len(body) < 16:
                raise PcapError(f"section header at offset {at}: {len(body)} bytes of body")
            major = struct.unpack(order + "H", body[4:6])[0]
            if major != 1:
                raise PcapError(f"section header at offset {at}: pcapng version {major}")
        elif kind == 1:       # interface description
            if len(body) < 8:
                raise PcapError(f"interface block at offset {at}: {len(body)} bytes of body")
            linktype = struct.unpack(order + "H", body[:2])[0]
            unit, offset = 1e-6, 0
            for code, value in _options(body[8:], order, at):
                if code == 9 and len(value) >= 1:       # if_tsresol
                    v = value[0]
                    if (v & 0x7F) > 63:
                        raise PcapError(f"interface block at offset {at}: resolution {v:#x}")
                    unit = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
                elif code == 14 and len(value) >= 8:    # if_tsoffset, seconds
                    offset = struct.unpack(order + "q", value[:8])[0]
            interfaces.append((linktype, unit, offset))
        elif kind in (6, 2):  # enhanced packet (and the obsolete packet block)
            if kind == 6:
                if len(body) < 20:
                    raise PcapError(f"packet block at offset {at}: {len(body)} bytes of body")
                interface, high, low, caplen, length = struct.unpack(order + "IIIII", body[:20])
            else:
                if len(body) < 20:
                    raise PcapError(f"packet block at offset {at}: {len(body)} bytes of body")
                interface, _drops, high, low, caplen, length = struct.unpack(
                    order + "HHIIII", body[:20])
            if interface >= len(interfaces):
                raise PcapError(f"packet block at offset {at}: interface {interface},"
                                f" of {len(interfaces)} described")
            if caplen > len(body) - 20:
                raise PcapError(f"packet block at offset {at}: {caplen} bytes captured,"
                                f" {len(body) - 20} in the block")
            linktype, unit, offset = interfaces[interface]
            yield Frame(((high << 32) | low) * unit + offset, linktype,
                        body[20:20 + caplen], max(length, caplen))
        # other blocks (simple packets carry no time, statistics, names…) are skipped
        at += total


def _options(raw, order, at):
    i = 0
    while i + 4 <= len(raw):
        code, length = struct.unpack(order + "HH", raw[i:i + 4])
        if code == 0:
            return
        if i + 4 + length > len(raw):
            raise PcapError(f"block at offset {at}: option {code} runs past the block")
        yield code, raw[i + 4:i + 4 + length]
        i += 4 + (length + 3) // 4 * 4


# ---- link, network and transport layers -----------------------------------

@attrs.frozen
class Segment:
    time: float
    src: str              # IP address, as ipaddress prints it
    sport: int
    dst: str
    dport: int
    seq: int
    flags: int
    payload: bytes
    missing: int          # payload bytes the capture does not hold (snap length)


SYN, FIN, RST = 0x02, 0x01, 0x04


def _ethertype_payload(ethertype, data, where):
    if ethertype == 0x0800:
        return 4, data
    if ethertype == 0x86DD:
        return 6, data
    return None, None


def link_payload(frame):
    """(IP version, IP bytes) of a frame, or (None, None) for what is not IP;
    the frames of a Linux capture the capturing host sent to itself twice
    (the outgoing copy of a loopback packet) are not IP here."""
    lt, d = frame.linktype, frame.data
    if lt == LINKTYPE_ETHERNET:
        if len(d) < 14:
            return None, None
        ethertype, at = struct.unpack(">H", d[12:14])[0], 14
        while ethertype in (0x8100, 0x88A8, 0x9100) and len(d) >= at + 4:
            ethertype, at = struct.unpack(">H", d[at + 2:at + 4])[0], at + 4
        return _ethertype_payload(ethertype, d[at:], frame)
    if lt == LINKTYPE_LINUX_SLL:
        if len(d) < 16:
            return None, None
        return _ethertype_payload(struct.unpack(">H", d[14:16])[0], d[16:], frame)
    if lt == LINKTYPE_LINUX_SLL2:
        if len(d) < 20:
            return None, None
        return _ethertype_payload(struct.unpack(">H", d[:2])[0], d[20:], frame)
    if lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(d) < 4:
            return None, None
        family = struct.unpack(">I" if lt == LINKTYPE_LOOP else "<I", d[:4])[0]
        if lt == LINKTYPE_NULL and family > 0xFFFF:
            family = struct.unpack(">I", d[:4])[0]   # written on a big-endian host
        if family == 2:
            return 4, d[4:]
        if family in (10, 24, 28, 30):               # AF_INET6 on Linux and the BSDs
            return 6, d[4:]
        return None, None
    if lt in _RAW_TYPES:
        if not d:
            return None, None
        version = d[0] >> 4
        return (version, d) if version in (4, 6) else (None, None)
    raise PcapError(f"link type {lt} is not one this reader knows"
                    f" ({', '.join(sorted(set(LINK_TYPES.values())))})")


def tcp_segment(frame, counts):
    """The TCP segment a frame carries, or None (counted in *counts* by why)."""
    version, ip = link_payload(frame)
    if version is None:
        counts["frames that are not IP"] += 1
        return None
    lost = frame.length - len(frame.data)   # the snap length cut this much off the end
    if version == 4:
        if len(ip) < 20 or ip[0] >> 4 != 4 or (ip[0] & 0x0F) < 5:
            counts["malformed IP headers"] += 1
            return None
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        fragment = struct.unpack(">H", ip[6:8])[0]
        proto = ip[9]
        if total < header or len(ip) < header:
            counts["malformed IP headers"] += 1
            return None
        if fragment & 0x3FFF:      # more fragments, or an offset: not reassembled
            counts["IP fragments (left out)"] += 1
            return None
        src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
        missing = max(0, total - len(ip)) if lost > 0 else 0
        body = ip[header:total]
    else:
        if len(ip) < 40 or ip[0] >> 4 != 6:
            counts["malformed IP headers"] += 1
            return None
        total = 40 + struct.unpack(">H", ip[4:6])[0]
        proto, at = ip[6], 40
        src = str(ipaddress.IPv6Address(ip[8:24]))
        dst = str(ipaddress.IPv6Address(ip[24:40]))
        while proto in (0, 43, 60, 51, 44):
            if proto == 44:
                counts["IP fragments (left out)"] += 1
                return None
            if len(ip) < at + 2:
                counts["malformed IP headers"] += 1
                return None
            size = (ip[at + 1] + 2) * 4 if proto == 51 else (ip[at + 1] + 1) * 8
            proto, at = ip[at], at + size
        if at > total or at > len(ip):
            counts["malformed IP headers"] += 1
            return None
        missing = max(0, total - len(ip)) if lost > 0 else 0
        body = ip[at:total]
    if proto != 6:
        counts["IP packets that are not TCP"] += 1
        return None
    if len(body) < 20:
        counts["malformed TCP headers"] += 1
        return None
    sport, dport, seq, _ack, offset, flags = struct.unpack(">HHIIBB", body[:14])
    header = (offset >> 4) * 4
    if header < 20 or header > len(body):
        if header >= 20 and missing:
            counts["TCP headers cut by the snap length"] += 1
        else:
            counts["malformed TCP headers"] += 1
        return None
    return Segment(frame.time, src, sport, dst, dport, seq, flags, body[header:], missing)


class Stream:
    """One direction of one TCP connection, reassembled by sequence number.

    ``feed`` takes segments in capture order; *on_bytes(offset, time, data)*
    gets the stream's bytes in order (offset from the first byte after the
    SYN), and *on_hole(offset, size)* each run of bytes the capture lacks.
    """

    def __init__(self, on_bytes, on_hole):
        self.on_bytes, self.on_hole = on_bytes, on_hole
        self.next_seq = None        # the sequence number of the next byte wanted
        self.offset = 0             # the stream offset of that byte
        self.pending = []           # heap of (offset, time, data) out of order
        self.pending_bytes = 0
        self._count = 0
        self.ended = False          # FIN or RST seen
        self.unaligned = 0          # bytes of a stream whose SYN the capture lacks

    def _at(self, seq):
        """The stream offset of *seq* (sequence numbers wrap at 2**32)."""
        delta = (seq - self.next_seq) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        return self.offset + delta

    def feed(self, seg):
        if seg.flags & SYN:
            if self.next_seq is None:
                self.next_seq = (seg.seq + 1) & 0xFFFFFFFF
            return
        if self.next_seq is None:
            self.unaligned += len(seg.payload) + seg.missing
            return
        at = self._at(seg.seq)
        if seg.payload:
            self._push(at, seg.time, seg.payload, 0)
            self.pending_bytes += len(seg.payload)
        if seg.missing:
            # bytes the snap length cut off: a hole that no retransmission
            # in this capture may fill; skipped when the stream reaches it
            self._push(at + len(seg.payload), seg.time, None, seg.missing)
        if seg.flags & (FIN | RST):
            self.ended = True
        self._deliver(seg.time)
        if self.pending_bytes > MAX_PENDING:
            self.finish()    # a hole that never fills: skip it rather than hold it all

    def _push(self, at, time, data, missing):
        # the counter keeps equal offsets in arrival order (and never compares bytes)
        self._count += 1
        heapq.heappush(self.pending, (at, self._count, time, data, missing))

    def _deliver(self, now=None):
        # bytes held behind a hole reach the receiver when the hole fills:
        # their time is the filling segment's (*now*), not their own
        while self.pending:
            at, _, time, data, missing = self.pending[0]
            if now is not None:
                time = max(time, now)
            if at > self.offset:
                return
            heapq.heappop(self.pending)
            if data is None:
                if at + missing > self.offset:
                    # a cut-off run: nobody has the bytes, the stream skips them
                    self._skip(at + missing - self.offset)
                continue
            self.pending_bytes -= len(data)
            end = at + len(data)
            if end <= self.offset:
                continue     # a retransmission of bytes delivered already
            fresh = data[self.offset - at:]
            self.on_bytes(self.offset, time, fresh)
            self.offset = end
            self.next_seq = (self.next_seq + len(fresh)) & 0xFFFFFFFF

    def _skip(self, size):
        self.on_hole(self.offset, size)
        self.offset += size
        self.next_seq = (self.next_seq + size) & 0xFFFFFFFF

    def finish(self):
        """The capture ended: skip every hole still waiting, deliver the rest."""
        while self.pending:
            at = self.pending[0][0]
            if at > self.offset:
                self._skip(at - self.offset)
            self._deliver()


class PacketCutter:
    """A mix link's stream cut into PACKET_SIZE-byte packets: ``packets`` is a
    list of the times each packet's last byte was captured; ``damaged`` counts
    packets a hole touched (left out); ``tail`` is the bytes of an
    unfinished last packet."""

    def __init__(self, size=PACKET_SIZE):
        self.size = size
        self.packets = []
        self.damaged = 0
        self._hole_in = set()       # packet numbers a hole touched
        self.tail = 0

    def on_bytes(self, offset, time, data):
        end = offset + len(data)
        first_done = offset // self.size        # packets that end inside this run
        last_done = end // self.size
        for k in range(first_done, last_done):
            if (k + 1) * self.size <= offset:
                continue
            if k in self._hole_in:
                self._hole_in.discard(k)
                self.damaged += 1
            else:
                self.packets.append(time)
        self.tail = end % self.size

    def on_hole(self, offset, size):
        first, last = offset // self.size, (offset + size - 1) // self.size
        for k in range(first, last + 1):
            if (k + 1) * self.size <= offset + size:
                self.damaged += 1    # it ends inside the hole: no time for it
            else:
                self._hole_in.add(k)
        self.tail = (offset + size) % self.size


class ChannelCutter:
    """A client–gateway stream cut into its channel messages (u16 length,
    then the message): ``messages`` is a list of (time, length) for each
    whole one, at the time its last byte was captured. After a hole the
    boundaries are lost: ``broken`` is set and the rest is not cut."""

    def __init__(self):
        self.messages = []
        self.broken = None
        self._header = b""
        self._left = 0            # bytes of the current message's body still to come
        self._length = 0

    def on_bytes(self, offset, time, data):
        i = 0
        while i < len(data) and self.broken is None:
            if self._left:
                take = min(self._left, len(data) - i)
                self._left -= take
                i += take
                if not self._left:
                    self.messages.append((time, self._length))
                continue
            need = LENGTH_SIZE - len(self._header)
            self._header += data[i:i + need]
            i += min(need, len(data) - i)
            if len(self._header) == LENGTH_SIZE:
                self._length = struct.unpack(">H", self._header)[0]
                self._header = b""
                self._left = self._length
                if not self._left:
                    self.messages.append((time, 0))

    def on_hole(self, offset, size):
        if self.broken is None:
            self.broken = f"{size} bytes missing at offset {offset}"


# ---- the topology: which address is which node -----------------------------

@attrs.define
class Nodes:
    """The public topology as the reader needs it.

    ``mix[(ip, port)]`` and ``gateway_mix[(ip, port)]`` name the node that
    listens there for packets, ``gateway_client[(ip, port)]`` the gateway
    whose client listener it is; ``sources[ip]`` the node whose outgoing
    connections leave from *ip*; ``client_names[ip]`` a name for a client.
    """

    mix_layers: list        # per mixnode, in node order: its layer
    mix_names: list
    gateway_names: list
    mix: dict
    gateway_mix: dict
    gateway_client: dict
    sources: dict
    client_names: dict
    node_hosts: set = attrs.Factory(set)


def _host_port(text, where):
    text = str(text)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise PcapError(f"{where}: {text!r} is not ip:port")
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError as e:
        raise PcapError(f"{where}: {text!r}: {e}") from e


def load_nodes(data):
    """The nodes file: the directory's topology document
    (``GET /api/presence/topology``, ``docs/topology.md``), with optional
    ``"sources"`` and ``"clients"`` objects (docs/anonymity.md)."""
    from nymtx.topology import Topology, TopologyError
    try:
        doc = json.loads(data) if isinstance(data, (bytes, str)) else data
    except (ValueError, UnicodeDecodeError) as e:
        raise PcapError(f"the nodes file is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PcapError("the nodes file must be a JSON object (the directory's topology)")
    try:
        topology = Topology.from_json(doc)
    except TopologyError as e:
        raise PcapError(f"the nodes file: {e}") from e
    mixnodes = sorted(topology.mixnodes, key=lambda m: (m.layer, str(m.address)))
    if not mixnodes or not topology.gateways:
        raise PcapError("the nodes file lists no mixnodes or no gateways")
    mix, gateway_mix, gateway_client, by_key, by_listener = {}, {}, {}, {}, {}
    hosts = collections.defaultdict(set)
    names = []
    for j, m in enumerate(mixnodes):
        address = _host_port(m.address, f"mixnode {j}")
        name = f"mix {m.layer}.{j} {m.address}"
        names.append(name)
        mix[address] = j
        by_key[m.public_key] = ("mix", j)
        by_listener[f"{address[0]}:{address[1]}"] = ("mix", j)
        hosts[address[0]].add(("mix", j))
    gateway_names = []
    for k, g in enumerate(topology.gateways):
        address = _host_port(g.address, f"gateway {k}")
        client = _host_port(g.client_listener, f"gateway {k}")
        gateway_names.append(str(g.address))
        gateway_mix[address] = k
        gateway_client[client] = k
        by_key[g.public_key] = ("gateway", k)
        by_listener[f"{address[0]}:{address[1]}"] = ("gateway", k)
        hosts[address[0]].add(("gateway", k))
    # a node's connections leave from its own host unless the file says
    # otherwise; a host several nodes share names none of them
    sources = {h: next(iter(n)) for h, n in hosts.items() if len(n) == 1}
    extra = doc.get("sources", {})
    if not isinstance(extra, dict):
        raise PcapError("'sources' must map an IP address to a node (its pubKey or ip:port)")
    for ip, node in extra.items():
        try:
            ip = str(ipaddress.ip_address(str(ip)))
        except ValueError as e:
            raise PcapError(f"'sources': {e}") from e
        found = None
        if isinstance(node, str):
            found = by_listener.get(node)
            if found is None:
                try:
                    found = by_listener.get("%s:%d" % _host_port(node, "'sources'"))
                except PcapError:
                    from nymtx.keys import decode_key
                    try:
                        found = by_key.get(decode_key(node))
                    except Exception:
                        found = None
        if found is None:
            raise PcapError(f"'sources': {ip} -> {node!r} names no node of the topology")
        sources[ip] = found
    clients = doc.get("clients", {})
    if not isinstance(clients, dict):
        raise PcapError("'clients' must map an IP address to a client's name")
    client_names = {}
    for ip, name in clients.items():
        try:
            client_names[str(ipaddress.ip_address(str(ip)))] = str(name)
        except ValueError as e:
            raise PcapError(f"'clients': {e}") from e
    return Nodes(mix_layers=[m.layer for m in mixnodes], mix_names=names,
                 gateway_names=gateway_names, mix=mix, gateway_mix=gateway_mix,
                 gateway_client=gateway_client, sources=sources, client_names=client_names,
                 node_hosts=set(hosts) | set(sources))


# ---- the view --------------------------------------------------------------

@attrs.define
class Observed:
    """What a capture shows: the view, and what the reader made of the bytes."""

    view: object                  # a trace.View (targets: every hop into a gateway)
    stats: dict
    problems: list
    phases: list = attrs.Factory(list)
    link: dict = attrs.Factory(dict)


def _ip_key(ip):
    a = ipaddress.ip_address(ip)
    return (a.version, int(a))


def observe(frames, nodes):
    """The :class:`Observed` view of *frames* with the topology *nodes*."""
    import numpy as np
    from nymtx.measure.trace import Topology, View
    counts = collections.Counter()
    problems = []
    streams = {}      # (src, sport, dst, dport) -> (role, Stream, cutter, connection)
    first = None      # the time of the first segment of the network's traffic
    connections = []  # (role, listener index, initiator ip, first time)
    for frame in frames:
        seg = tcp_segment(frame, counts)
        if seg is None:
            continue
        counts["TCP segments"] += 1
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        entry = streams.get(key)
        if entry is not None and seg.flags & SYN and entry[1].next_seq is not None \
                and entry[1].ended:
            entry = None       # the 4-tuple is used again by a new connection
        if entry is None:
            there, back = (seg.dst, seg.dport), (seg.src, seg.sport)
            if there in nodes.mix:
                role, index, up = "mix", nodes.mix[there], True
            elif there in nodes.gateway_mix:
                role, index, up = "gateway mix", nodes.gateway_mix[there], True
            elif there in nodes.gateway_client:
                role, index, up = "client link", nodes.gateway_client[there], True
            elif back in nodes.gateway_client:
                role, index, up = "client link", nodes.gateway_client[back], False
            elif back in nodes.mix or back in nodes.gateway_mix:
                role, index, up = "mix back", None, False
            else:
                counts["segments of other traffic (left out)"] += 1
                continue
            peer = seg.src if up else seg.dst
            if role == "client link":
                cutter = ChannelCutter()
            else:
                cutter = PacketCutter()
            stream = Stream(cutter.on_bytes, cutter.on_hole)
            conn = (role, index, peer, up, seg.time)
            connections.append((conn, stream, cutter))
            entry = streams[key] = (role, stream, cutter, conn)
        entry[1].feed(seg)
        first = seg.time if first is None else min(first, seg.time)
    for conn, stream, cutter in connections:
        stream.finish()

    # ---- who is who: clients are the addresses that are no node's
    # (a host that nodes share, as 127.0.0.1 in a local network, is nobody:
    # its packets cannot be told apart)
    client_ips = set()
    for (role, index, peer, up, t), stream, cutter in connections:
        if role == "client link" or (role == "mix" and nodes.mix_layers[index] == 1
                                     and peer not in nodes.node_hosts):
            client_ips.add(peer)
    named = sorted(client_ips & set(nodes.client_names), key=lambda ip: nodes.client_names[ip])
    clients = named + sorted(client_ips - set(named), key=_ip_key)
    client_number = {ip: i for i, ip in enumerate(clients)}
    n = len(clients)
    first_gateway = n + len(nodes.mix_layers)

    def sender(ip):
        if ip in nodes.sources:
            kind, j = nodes.sources[ip]
            return n + j if kind == "mix" else first_gateway + j
        return client_number.get(ip, -1)

    hops = []         # (time, src, dst)
    pulls = []        # (time, client)
    client_gateway = {}
    link = {"channel messages up": collections.Counter(),
            "channel messages down": collections.Counter()}
    for (role, index, peer, up, t), stream, cutter in connections:
        if stream.unaligned:
            counts["bytes of streams whose start is not in the capture (not cut)"] += \
                stream.unaligned
        if role == "mix back":
            if isinstance(cutter, PacketCutter) and (cutter.packets or cutter.tail):
                problems.append(f"a node listening for packets sent {len(cutter.packets)}"
                                f" packets back to {peer}: mix links carry packets one way")
            continue
        if role in ("mix", "gateway mix"):
            dst = n + index if role == "mix" else first_gateway + index
            src = sender(peer)
            if src < 0:
                counts["packets from addresses the topology does not name (left out)"] += \
                    len(cutter.packets)
                continue
            hops += [(time, src, dst) for time in cutter.packets]
            counts["packets with bytes missing from the capture (left out)"] += cutter.damaged
            if cutter.tail:
                counts["streams ending inside a packet"] += 1
            continue
        # the client–gateway link
        client = client_number[peer]
        client_gateway.setdefault(client, index)
        sizes = link["channel messages up" if up else "channel messages down"]
        for _, length in cutter.messages:
            sizes[LENGTH_SIZE + length] += 1
        if cutter.broken:
            problems.append(f"the link of client {peer} to gateway {nodes.gateway_names[index]}"
                            f" ({'up' if up else 'down'}) cannot be cut further:"
                            f" {cutter.broken}")
        if not up:
            answers = [time for time, length in cutter.messages if length != HANDSHAKE_DOWN]
            # the first answer on a connection is to its register request
            # (the client's link registers on every connection)
            pulls += [(time, client) for time in answers[1:]]
    for key in ("channel messages up", "channel messages down"):
        link[key] = {str(size): c for size, c in sorted(link[key].items())}
    link["every frame one size each way (after the handshake)"] = all(
        len(set(link[key]) - {str(LENGTH_SIZE + h)}) <= 1 for key, h in (
            ("channel messages up", HANDSHAKE_UP), ("channel messages down", HANDSHAKE_DOWN)))

    times = [h[0] for h in hops] + [p[0] for p in pulls]
    start = first if first is not None else 0.0
    hops.sort()
    pulls.sort()
    hop_time = np.array([h[0] - start for h in hops], dtype=float)
    hop_src = np.array([h[1] for h in hops], dtype=np.int64)
    hop_dst = np.array([h[2] for h in hops], dtype=np.int64)
    topology = Topology(clients=[nodes.client_names.get(ip, ip) for ip in clients],
                        mix_layers=list(nodes.mix_layers), gateways=list(nodes.gateway_names),
                        client_gateway=[client_gateway.get(c, 0) for c in range(n)])
    view = View(topology=topology, hop_time=hop_time, hop_src=hop_src, hop_dst=hop_dst,
                hop_size=np.full(len(hops), PACKET_SIZE, dtype=np.int64),
                pull_time=np.array([p[0] - start for p in pulls], dtype=float),
                pull_client=np.array([p[1] for p in pulls], dtype=np.int64),
                # every answer is one size of ciphertext: no count shows
                pull_count=np.full(len(pulls), -1, dtype=np.int64),
                targets=np.nonzero(hop_dst >= first_gateway)[0],
                duration=float(max(times) - start) if times else 0.0)
    # (times count from the capture's first segment of the network's traffic)
    stats = {"frames": len(frames), **{k: v for k, v in sorted(counts.items())},
             "clients seen": n, "mix-link packets": len(hops),
             "packets into gateways": int(len(view.targets)),
             # a gateway sends only acks, one per packet that ends at it
             # (docs/surb.md §2.5): they are packets like any other here
             "packets from gateways into layer 1 (acks)": int(np.sum(hop_src >= first_gateway)),
             "pull answers": len(pulls),
             "connections": len(connections), "capture start (Unix s)": start}
    return Observed(view=view, stats=stats, problems=problems, link=link)


def read(path, nodes_path):
    """``observe`` the capture at *path* with the nodes file at *nodes_path*."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PcapError(f"cannot read the capture {path}: {e.strerror}") from e
    try:
        with open(nodes_path, "rb") as f:
            nodes = load_nodes(f.read())
    except OSError as e:
        raise PcapError(f"cannot read the nodes file {nodes_path}: {e.strerror}") from e
    try:
        frames = read_frames(data)
    except PcapError as e:
        raise PcapError(f"{path}: {e}") from e
    return observe(frames, nodes)


# ---- writing (for the tests, and for a capture made without tcpdump) -------

def pcap_header(linktype=LINKTYPE_ETHERNET, snaplen=MAX_FRAME, nanoseconds=False):
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(time, data, length=None, nanoseconds=False):
    sec = int(time)
    frac = int(round((time - sec) * (1e9 if nanoseconds else 1e6)))
    if frac >= (1_000_000_000 if nanoseconds else 1_000_000):
        sec, frac = sec + 1, 0
    return struct.pack("<IIII", sec, frac, len(data),
                       len(data) if length is None else length) + data
