"""The process runner: ``nym-localnet --processes``, one OS process per node.

Each child is ``python -m nymtx.localnet --node NAME`` with the parent's
flags: it runs the one node of the same plan in a LocalNetwork, and stops
when its parent goes away. With mix links (the default), a mixnode's or
gateway's child prints the line ``READY_LINE`` once its node holds a
topology that lists every node of the plan; the parent takes that line
(it is not passed on) and the network is up once every node has said it.
"""

import os
import sys

from twisted.application.service import MultiService
from twisted.internet import defer, protocol
from twisted.logger import Logger

from nymtx.directory.client import DirectoryClient
from nymtx.localnet.model import LocalNetError, count, poll_topology

#: what a node's process prints when its node knows every other node (mix links)
READY_LINE = "nym-localnet-node: ready"


class _ChildOutput(protocol.ProcessProtocol):
    """Passes a node process's output through, each line prefixed by its name."""

    def __init__(self, name, network):
        self.name = name
        self.network = network
        self._out = b""  # a line of stdout not yet ended

    def _lines(self, data, stream):
        for line in data.decode("utf-8", "replace").splitlines():
            stream.write(f"[{self.name}] {line}\n")
        stream.flush()

    def outReceived(self, data):
        # whole lines only: READY_LINE may come in two reads
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        ready = READY_LINE.encode()
        if ready in lines:
            self.network.child_ready(self.name)
        lines = [line for line in lines if line != ready]
        if lines:
            self._lines(b"\n".join(lines), sys.stdout)

    def errReceived(self, data):
        self._lines(data, sys.stderr)

    def processEnded(self, reason):
        if self._out:
            self._lines(self._out, sys.stdout)
            self._out = b""
        code = reason.value.exitCode
        if code is None:
            # killed: say by which signal rather than "code None"
            code = f"signal {reason.value.signal}"
        self.network.child_ended(self.name, code)


class ProcessNetwork(MultiService):
    """One OS process per node (``--processes``), each running ``--node NAME``.

    ``start()`` spawns the directory, waits until it answers, spawns the
    other nodes and waits until the topology is complete (and, with mix
    links, until every node has printed READY_LINE); a node that exits
    before then fails it at once, naming the node. *options* ``insecure-links``
    true: plain links (as LocalNetwork's ``secure=False``).
    """

    log = Logger()

    def __init__(self, reactor, options):
        super().__init__()
        self.reactor = reactor
        self.options = options
        # with --directories N, directories 2..N after the plan's ports (trust hook)
        from nymtx.trust.localnet import more_directories
        self.directories = options.get("directories", 1)
        self.nodes = more_directories(options["plan"], self.directories)
        self.secure = not options.get("insecure-links", False)
        self.signed = self.secure or self.directories > 1
        self.home = options.get("home")
        self.ready = set()  # nodes whose process printed READY_LINE
        self.directory_urls = {n.name: f"http://{n.host}:{n.port}" for n in self.nodes
                               if n.kind == "directory"}
        self.directory_url = f"http://{self.nodes[0].host}:{self.nodes[0].port}"
        self.children = {}
        self.exit_codes = {}
        self._all_ended = None
        self._ended_waiters = {}  # name -> [Deferred] fired when that child ends

    def _command(self, node):
        """The child's argv: its executable first."""
        return [sys.executable, "-m", "nymtx.localnet", "--node", node.name,
                "--home", self.options["home"],
                "--base-port", str(self.options["base-port"]),
                "--mixnodes-per-layer", str(self.options["mixnodes-per-layer"]),
                "--gateways", str(self.options["gateways"]),
                "--directories", str(self.directories)] + self._flags()

    def _flags(self):
        level = self.options.get("log-level")
        return (["--log-level", level] if level else []) + (
            [] if self.secure else ["--insecure-links"])

    def child_ready(self, name):
        self.ready.add(name)

    def _spawn(self, node):
        args = self._command(node)
        self.children[node.name] = self.reactor.spawnProcess(
            _ChildOutput(node.name, self), args[0], args, env=os.environ)

    def child_ended(self, name, code):
        self.exit_codes[name] = code
        self.ready.discard(name)
        self.children.pop(name, None)
        for waiter in self._ended_waiters.pop(name, []):
            waiter.callback(code)
        if not self.children and self._all_ended is not None:
            self._all_ended.callback(None)

    def _check_children(self):
        for name, code in self.exit_codes.items():
            how = f"was killed by {code}" if isinstance(code, str) else f"exited with code {code}"
            raise LocalNetError(f"{name} {how} before the network was up (its output is above)")

    async def start(self):
        if self.signed:
            # made here, before any node: each pins them
            from nymtx.trust.localnet import prepare_keys
            prepare_keys(self)
        directory = DirectoryClient(self.directory_url, reactor=self.reactor)
        try:
            # the directories first: the other nodes announce to their URLs
            directories = [n for n in self.nodes if n.kind == "directory"]
            for node in directories:
                self._spawn(node)
            for node in directories:
                url = DirectoryClient(f"http://{node.host}:{node.port}", reactor=self.reactor)
                try:
                    await poll_topology(self.reactor, url, lambda topology: None, 60.0,
                                        check=self._check_children)
                finally:
                    await url.close()
            for node in self.nodes:
                if node.kind != "directory":
                    self._spawn(node)
            mixnodes = sum(1 for n in self.nodes if n.kind == "mixnode")
            gateways = sum(1 for n in self.nodes if n.kind == "gateway")

            def missing(t):
                if len(t.mixnodes) >= mixnodes and len(t.gateways) >= gateways:
                    return None
                return (f"the topology is still incomplete: {len(t.mixnodes)} of"
                        f" {count(mixnodes, 'mixnode')}, {len(t.gateways)} of"
                        f" {count(gateways, 'gateway')}")
            topology = await poll_topology(self.reactor, directory, missing, 60.0,
                                           check=self._check_children)
            if self.secure:
                await self._wait_for_ready()
            return topology
        finally:
            await directory.close()

    async def _wait_for_ready(self, timeout=60.0, poll=0.05):
        """Until every mixnode's and gateway's process has printed READY_LINE."""
        from twisted.internet.task import deferLater
        names = {n.name for n in self.nodes if n.kind != "directory"}
        deadline = self.reactor.seconds() + timeout
        while not names <= self.ready:
            self._check_children()
            if self.reactor.seconds() > deadline:
                raise LocalNetError(f"{', '.join(sorted(names - self.ready))} still not"
                                    " holding a topology with every node after"
                                    f" {timeout:.0f} s")
            await deferLater(self.reactor, poll, lambda: None)

    def node(self, name):
        for node in self.nodes:
            if node.name == name:
                return node
        raise LocalNetError(f"{name!r} is not a node of this network")

    def kill(self, name, signal="KILL"):
        """Send *signal* to one node's process; fires with its exit status.

        For fault tests: a SIGKILL leaves no chance to flush or say goodbye,
        as a crash or a power cut would.
        """
        transport = self.children.get(self.node(name).name)
        if transport is None:
            return defer.fail(LocalNetError(f"{name} is not running"))
        ended = defer.Deferred()
        self._ended_waiters.setdefault(name, []).append(ended)
        transport.signalProcess(signal)
        return ended

    def restart(self, name):
        """Start a node that ended again, on the same home (keys, stores)."""
        node = self.node(name)
        if name in self.children:
            raise LocalNetError(f"{name} is still running")
        self.exit_codes.pop(name, None)
        self.ready.discard(name)
        self._spawn(node)

    def stopService(self):
        super().stopService()
        if not self.children:
            return defer.succeed(None)
        self._all_ended = defer.Deferred()
        for transport in list(self.children.values()):
            try:
                transport.signalProcess("TERM")
            except Exception:
                pass  # already gone
        return self._all_ended


class ParentWatch(protocol.Protocol):
    """A --node child stops when its parent goes away (its stdin closes)."""

    def __init__(self, reactor):
        self.reactor = reactor

    def connectionLost(self, reason):
        if self.reactor.running:
            self.reactor.stop()
