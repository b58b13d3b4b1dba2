"""``nym-measure --processes``: one OS process per node, each tapped inside.

The parent runs the clients and the workload, as in one process; each node
runs in a child, ``python -m nymtx.measure.processes --node NAME …``, which
is ``nym-localnet --processes``'s child (the node of the same plan, in a
:class:`~nymtx.localnet.LocalNetwork` restricted to it) with the same taps
as :class:`nymtx.measure.network.TappedNetwork` installed on its listeners.
The taps write their records to a file of their own (``<home>/taps/NAME.tap``,
the **tap record format** below and in docs/anonymity.md); once every child
has stopped, the parent reads the files and names the ends (a peer is the
connection's source address, mapped to a client, a mixnode or a gateway as in one
process) into the same :class:`~nymtx.measure.network.Capture`.

Every process reads the same clock (``time.time``, the reactor's
``seconds``), so the records of several processes go on one time line.

Tap record format (all integers big-endian)::

    file    = "nymtap1\\n" · record*
    record  = kind (u8) · time (f64, Unix seconds) · peer length (u8) · peer (ASCII) · body
    kind 1  packet: size (u32) · the packet's bytes         (a mix-link packet, as cut)
    kind 2  chunk:  direction (u8: 0 up, 1 down) · size (u32) (client–gateway link)
    kind 3  pull answer: messages (u32) · client key (32 bytes) · size (u32) · bytes
    kind 4  problem: the tap's own complaint, UTF-8 (peer empty), size (u16) before it

*peer* is the connection's source address (an IP address as text). A record
cut short at the end of a file (a node killed while writing) is reported,
the records before it kept.
"""

import argparse
import math
import os
import random
import socket
import struct
import sys

from twisted.internet import defer, protocol

from nymtx.localnet.model import LocalNetError, Timing, plan, poll_clients
from nymtx.localnet.processes import ProcessNetwork
from nymtx.measure.network import DOWN, UP, Recorder

MAGIC = b"nymtap1\n"
PACKET, CHUNK, PULL, PROBLEM = 1, 2, 3, 4
KEY_SIZE = 32
_HEAD = struct.Struct(">BdB")


class TapFileError(ValueError):
    """A tap file that cannot be read; the message says where and why."""


def encode(kind, time, peer, body):
    peer = peer.encode("ascii")
    return _HEAD.pack(kind, time, len(peer)) + peer + body


def encode_packet(time, peer, packet):
    return encode(PACKET, time, peer, struct.pack(">I", len(packet)) + packet)


def encode_chunk(time, peer, direction, size):
    return encode(CHUNK, time, peer, struct.pack(">BI", direction, size))


def encode_pull(time, peer, data, messages, key):
    key = bytes(key or bytes(KEY_SIZE))
    return encode(PULL, time, peer, struct.pack(">I", messages) + key
                  + struct.pack(">I", len(data)) + data)


def encode_problem(text):
    text = text.encode("utf-8")[:0xFFFF]
    return encode(PROBLEM, 0.0, "", struct.pack(">H", len(text)) + text)


def read_records(data):
    """(records, note): every record of a tap file, each ``(kind, time, peer,
    …fields)``, and None or what cut the file short. TapFileError for a
    file that is not one, or a record that cannot be."""
    data = bytes(data)
    if data[:len(MAGIC)] != MAGIC:
        raise TapFileError(f"not a tap file (it starts with {data[:8]!r})")
    at, out = len(MAGIC), []

    def need(n):
        if len(data) - at < n:
            raise _Short()
    while at < len(data):
        start = at
        try:
            need(_HEAD.size)
            kind, time, size = _HEAD.unpack_from(data, at)
            at += _HEAD.size
            if kind not in (PACKET, CHUNK, PULL, PROBLEM):
                raise TapFileError(f"record at offset {start}: kind {kind}")
            if not math.isfinite(time):
                raise TapFileError(f"record at offset {start}: time {time}")
            need(size)
            try:
                peer = data[at:at + size].decode("ascii")
            except UnicodeDecodeError:
                raise TapFileError(f"record at offset {start}: its peer is not ASCII")
            at += size
            if kind == PACKET:
                need(4)
                (n,) = struct.unpack_from(">I", data, at)
                need(4 + n)
                out.append((kind, time, peer, data[at + 4:at + 4 + n]))
                at += 4 + n
            elif kind == CHUNK:
                need(5)
                direction, n = struct.unpack_from(">BI", data, at)
                if direction not in (UP, DOWN):
                    raise TapFileError(f"record at offset {start}: direction {direction}")
                out.append((kind, time, peer, direction, n))
                at += 5
            elif kind == PULL:
                need(4 + KEY_SIZE + 4)
                (messages,) = struct.unpack_from(">I", data, at)
                key = data[at + 4:at + 4 + KEY_SIZE]
                (n,) = struct.unpack_from(">I", data, at + 4 + KEY_SIZE)
                at += 8 + KEY_SIZE
                need(n)
                out.append((kind, time, peer, data[at:at + n], messages, key))
                at += n
            else:
                need(2)
                (n,) = struct.unpack_from(">H", data, at)
                need(2 + n)
                out.append((kind, time, peer,
                            data[at + 2:at + 2 + n].decode("utf-8", "replace")))
                at += 2 + n
        except _Short:
            return out, f"a record cut short at offset {start} (the node stopped while writing)"
    return out, None


class _Short(Exception):
    pass


class _Sink:
    """A list-like the Recorder appends to: each record goes to the file."""

    def __init__(self, file, encoder):
        self._file, self._encode = file, encoder

    def append(self, record):
        self._file.write(self._encode(record))


class FileRecorder(Recorder):
    """The taps of one node process: every record written to *file*.

    The child knows no client numbers: a peer is its address, mapped by the
    parent; a pull answer carries the key its channel proved."""

    def __init__(self, reactor, file):
        super().__init__(reactor)
        file.write(MAGIC)
        self.packets = _Sink(file, lambda r: encode_packet(r[0], r[2], r[3]))
        self.chunks = _Sink(file, lambda r: encode_chunk(r[0], r[1], r[2], r[3]))
        self.pulls = _Sink(file, lambda r: encode_pull(r[0], r[1], r[2], r[3], r[4]))
        self.problems = _Sink(file, encode_problem)

    def source(self, host):
        return host

    def key_for(self, client, proven):
        return proven


# ---- the parent --------------------------------------------------------------

def free_base_port(needed, host="127.0.0.1"):
    """The first of *needed* consecutive ports free on *host* now, under
    Linux's ephemeral range (so no outgoing connection takes one meanwhile)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - needed)
        ok = True
        for port in range(base, base + needed):
            probe = socket.socket()
            try:
                probe.bind((host, port))
            except OSError:
                ok = False
                break
            finally:
                probe.close()
        if ok:
            return base
    raise LocalNetError(f"no run of {needed} free ports found for the node processes")


class _ToStderr(protocol.ProcessProtocol):
    """A node process's output, each line prefixed by its name, on stderr
    (stdout is the command's: the report's path, or its JSON)."""

    def __init__(self, name, network):
        self.name, self.network = name, network

    def outReceived(self, data):
        for line in data.decode("utf-8", "replace").splitlines():
            sys.stderr.write(f"[{self.name}] {line}\n")
        sys.stderr.flush()

    errReceived = outReceived

    def processEnded(self, reason):
        code = reason.value.exitCode
        self.network.child_ended(self.name, f"signal {reason.value.signal}"
                                 if code is None else code)


class _Children(ProcessNetwork):
    def __init__(self, reactor, options, timing, tap_dir):
        super().__init__(reactor, options)
        self.timing, self.tap_dir = timing, tap_dir

    def _command(self, node):
        o = self.options
        command = [sys.executable, "-m", "nymtx.measure.processes", "--node", node.name,
                   "--home", o["home"], "--base-port", str(o["base-port"]),
                   "--mixnodes-per-layer", str(o["mixnodes-per-layer"]),
                   "--gateways", str(o["gateways"]),
                   "--timing", ",".join(repr(x) for x in (
                       self.timing.presence_interval, self.timing.metrics_interval,
                       self.timing.expiry))]
        if node.kind != "directory":
            command += ["--taps", os.path.join(self.tap_dir, f"{node.name}.tap")]
        return command

    def _spawn(self, node):
        args = self._command(node)
        self.children[node.name] = self.reactor.spawnProcess(
            _ToStderr(node.name, self), args[0], args, env=os.environ)


class ProcessNodes:
    """The nodes of a measurement, one process each: what
    :func:`nymtx.measure.network.capture` needs of a network
    (``startService``, ``whenReady``, names, ports, keys, ``stopService``),
    and ``collect``, which reads the tap files once the nodes have stopped."""

    def __init__(self, reactor, home, settings, timing):
        from nymtx.topology import LAYERS
        self.reactor, self.home = reactor, home
        needed = 1 + LAYERS * settings.mixnodes_per_layer + 2 * settings.gateways
        base = free_base_port(needed)
        nodes = plan(settings.mixnodes_per_layer, settings.gateways, base)
        self.nodes = {n.name: n for n in nodes}
        mixnodes = [n for n in nodes if n.kind == "mixnode"]
        self.mixnode_names = [n.name for n in sorted(mixnodes, key=lambda n: (n.layer, n.name))]
        self.gateway_names = [n.name for n in nodes if n.kind == "gateway"]
        self.first_mix = settings.clients
        self.tap_dir = os.path.join(home, "taps")
        os.makedirs(os.path.join(home, "localnet"), mode=0o700, exist_ok=True)
        os.makedirs(self.tap_dir, exist_ok=True)
        self.children = _Children(reactor, {
            "plan": nodes, "home": home, "base-port": base,
            "mixnodes-per-layer": settings.mixnodes_per_layer, "gateways": settings.gateways,
            "insecure-links": True},
            timing, self.tap_dir)
        self.directory_url = self.children.directory_url
        self._ready = None

    def startService(self):
        self.children.startService()
        self._ready = defer.Deferred.fromCoroutine(self.children.start())
        self._ready.addCallback(lambda _: self.directory_url)

    def whenReady(self):
        return self._ready

    async def stopService(self):
        await self.children.stopService()

    def node_number(self, name):
        if name in self.mixnode_names:
            return self.first_mix + self.mixnode_names.index(name)
        if name in self.gateway_names:
            return self.first_mix + len(self.mixnode_names) + self.gateway_names.index(name)
        return -1

    def gateway_key(self, name):
        from nymtx.keys import KeyPair
        return KeyPair.load(os.path.join(self.home, "localnet", name)).public_text

    async def wait_for_clients(self, client_keys, timeout=30.0, poll=0.1):
        from nymtx.directory.client import DirectoryClient
        directory = DirectoryClient(self.directory_url, reactor=self.reactor)
        try:
            return await poll_clients(self.reactor, directory, client_keys, timeout, poll)
        finally:
            await directory.close()

    def collect(self, recorder):
        """Read every node's tap file into *recorder*'s lists, as if the taps
        had been in this process: peers named, pull answers checked against
        the key of the client at that address."""
        for name in self.mixnode_names + self.gateway_names:
            node = self.node_number(name)
            path = os.path.join(self.tap_dir, f"{name}.tap")
            try:
                with open(path, "rb") as f:
                    records, note = read_records(f.read())
            except (OSError, TapFileError) as e:
                recorder.problems.append(f"{name}: its tap records cannot be read: {e}")
                continue
            if note:
                recorder.problems.append(f"{name}: {note}")
            for r in records:
                kind, time, peer = r[:3]
                if kind == PACKET:
                    recorder.packets.append((time, node, recorder.source(peer), r[3]))
                elif kind == CHUNK:
                    recorder.chunks.append((time, recorder.source(peer), r[3], r[4]))
                elif kind == PULL:
                    client = recorder.source(peer)
                    if recorder.key_of.get(client) != r[5]:
                        recorder.problems.append(
                            f"{name} answered a pull of client {r[5].hex()[:8]} on a"
                            f" connection from {peer}")
                    recorder.pulls.append((time, client, r[3], r[4], r[5]))
                else:
                    recorder.problems.append(f"{name}: {r[3]}")
        for records in (recorder.packets, recorder.chunks, recorder.pulls):
            records.sort(key=lambda r: r[0])


# ---- the child ---------------------------------------------------------------

def child_main(argv=None):
    """One node of the plan, its taps writing to ``--taps`` (the directory: none)."""
    parser = argparse.ArgumentParser(prog="python -m nymtx.measure.processes")
    parser.add_argument("--node", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--mixnodes-per-layer", type=int, default=1)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--timing", default=None)
    parser.add_argument("--taps", default=None)
    args = parser.parse_args(argv)
    import signal

    from twisted.internet import reactor, stdio
    from twisted.internet.task import LoopingCall

    from nymtx.localnet import LocalNetwork
    from nymtx.localnet.processes import ParentWatch
    from nymtx.measure.network import TappedNetwork

    nodes = plan(args.mixnodes_per_layer, args.gateways, args.base_port)
    if args.node not in {n.name for n in nodes}:
        parser.error(f"--node {args.node!r} is not a node of this plan")
    timing = Timing(*(float(x) for x in args.timing.split(","))) if args.timing else Timing()
    outcome = {"code": 0}
    if args.taps:
        taps = open(args.taps, "wb")
        network = TappedNetwork(reactor, args.home, nodes, FileRecorder(reactor, taps), 0,
                                timing=timing, only=args.node)
        # at most half a second of records is lost if the node is killed
        flushing = LoopingCall(taps.flush)
        reactor.callWhenRunning(flushing.start, 0.5, now=False)
        # written whole once the node has stopped (its last packets included)
        reactor.addSystemEventTrigger("after", "shutdown", taps.close)
    else:
        network = LocalNetwork(reactor, args.home, nodes, timing=timing, only=args.node,
                               secure=False)

    def fail(failure):
        print(f"{args.node}: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        outcome["code"] = 1
        if reactor.running:
            reactor.stop()

    def start():
        network.startService()
        network.whenReady().addErrback(fail)
    # Ctrl-C reaches the process group: only the parent acts on it (and then
    # stops its children with SIGTERM); a child stops too when its parent goes
    reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    stdio.StandardIO(ParentWatch(reactor), reactor=reactor)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: network.stopService() if network.running else None)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(child_main())
