"""A whole mixnet on 127.0.0.1: a directory, 3 layers of mixnodes, gateways.

``nym-localnet`` runs it in this process (the default) or one OS process per
node (``--processes``); the end-to-end tests and the quick start embed
``LocalNetwork`` directly. Node keys and gateway mailboxes are kept under
``<home>/localnet/<node>/``, so a restarted network keeps its identities and
its clients' registrations.
"""

import json
import os
import sys

import attrs
from twisted.application.service import MultiService
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from nymtx.directory.client import DirectoryClient
from nymtx.directory.registry import Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import DirectoryService
from nymtx.gateway.service import GatewayService
from nymtx.keys import KeyFormatError, KeyPair, encode_key
from nymtx.mixnode.service import MixnodeService
from nymtx.observer import OneShot
from nymtx.paths import nym_root
from nymtx.topology import LAYERS

HOST = "127.0.0.1"


class LocalNetError(Exception):
    """The local network could not start; the message says which node and why."""


@attrs.frozen
class Timing:
    """How fast the nodes talk to the directory (seconds)."""

    presence_interval: float = 1.5
    metrics_interval: float = 1.0
    expiry: float = 10.0


@attrs.frozen
class NodePlan:
    """One node of the network: its name, kind, layer and ports (0 = any)."""

    name: str
    kind: str  # "directory", "mixnode" or "gateway"
    port: int
    layer: int = 0
    client_port: int = 0


#: more would be thousands of sockets (and, with --processes, processes) on one machine
MAX_PER_LAYER = 50
MAX_GATEWAYS = 20


def plan(mixnodes_per_layer=1, gateways=1, base_port=8080):
    """Every node, with ports counted up from *base_port* (all 0 if it is 0)."""
    if not 1 <= mixnodes_per_layer <= MAX_PER_LAYER:
        raise LocalNetError(f"--mixnodes-per-layer must be 1 to {MAX_PER_LAYER},"
                            f" not {mixnodes_per_layer}")
    if not 1 <= gateways <= MAX_GATEWAYS:
        raise LocalNetError(f"--gateways must be 1 to {MAX_GATEWAYS}, not {gateways}")
    needed = 1 + LAYERS * mixnodes_per_layer + 2 * gateways
    if base_port and base_port + needed - 1 > 65535:
        raise LocalNetError(f"--base-port {base_port} leaves no room for {needed} ports:"
                            f" the last would be {base_port + needed - 1}")
    ports = iter(range(base_port, base_port + needed)) if base_port else None

    def port():
        return next(ports) if ports else 0

    nodes = [NodePlan("directory", "directory", port())]
    for layer in range(1, LAYERS + 1):
        for i in range(1, mixnodes_per_layer + 1):
            nodes.append(NodePlan(f"mix-{layer}-{i}", "mixnode", port(), layer=layer))
    for j in range(1, gateways + 1):
        nodes.append(NodePlan(f"gateway-{j}", "gateway", port(), client_port=port()))
    return nodes


def node_keys(home, name):
    """The node's key pair, made on first use and kept under *home*."""
    directory = os.path.join(home, "localnet", name)
    try:
        return KeyPair.load(directory)
    except KeyFormatError:
        if os.path.exists(os.path.join(directory, "private_sphinx.key")):
            raise
    keys = KeyPair.generate()
    keys.save(directory)
    return keys


def _endpoint(reactor, port):
    return TCP4ServerEndpoint(reactor, port, interface=HOST)


def _strport(port):
    return f"tcp:{port}:interface={HOST}"


class LocalNetwork(MultiService):
    """The nodes of *plan* in this process.

    ``whenReady()`` fires with the directory's URL once the directory lists
    every mixnode and gateway; it fails with LocalNetError if a node cannot
    listen. ``stop_node(name)`` / ``start_node(name)`` stop and restart one
    node, for tests of failures.
    """

    log = Logger()

    def __init__(self, reactor, home, nodes, timing=Timing(), only=None):
        super().__init__()
        self.reactor = reactor
        self.home = str(home)
        self.nodes = {n.name: n for n in nodes}
        self.timing = timing
        self.only = only
        self.node_services = {}
        self.directory_url = None
        self.registry = None
        directory = self.nodes["directory"]
        if directory.port:
            self.directory_url = f"http://{HOST}:{directory.port}"
        self._ready = OneShot()

    # ---- building -------------------------------------------------------

    def _make(self, node):
        if node.kind == "directory":
            self.registry = Registry(self.reactor, expiry=self.timing.expiry)
            return DirectoryService(_endpoint(self.reactor, node.port),
                                    make_site(self.registry), f"{HOST}:{node.port}",
                                    registry=self.registry)
        keys = node_keys(self.home, node.name)
        if node.kind == "mixnode":
            return MixnodeService(
                self.reactor, keys, node.layer, _strport(node.port), HOST,
                self.directory_url, presence_interval=self.timing.presence_interval,
                metrics_interval=self.timing.metrics_interval)
        return GatewayService(
            self.reactor, keys, os.path.join(self.home, "localnet", node.name, "data"),
            _strport(node.port), _strport(node.client_port), HOST, self.directory_url,
            presence_interval=self.timing.presence_interval)

    async def _start_node(self, node):
        service = self._make(node)
        service.setName(node.name)
        try:
            # a node may bind as it starts (in privilegedStartService), and
            # raise right here, or later through whenListening()
            service.setServiceParent(self)
            self.node_services[node.name] = service
            bound = await service.whenListening()
        except Exception as e:
            raise LocalNetError(f"{node.name} could not listen: {_why(e)}")
        if node.kind == "directory":
            port = bound.getHost().port
            self.directory_url = f"http://{HOST}:{port}"
            self.nodes[node.name] = attrs.evolve(node, port=port)
        elif node.kind == "gateway":
            # A restarted node comes back on the same ports, as a real one would.
            self.nodes[node.name] = attrs.evolve(node, port=bound[0], client_port=bound[1])
        else:
            self.nodes[node.name] = attrs.evolve(node, port=bound.getHost().port)
        return bound

    # ---- running --------------------------------------------------------

    def startService(self):
        super().startService()
        # A restart needs a fresh result, but waiters from before the first
        # start (makeService's, under twistd) must keep theirs.
        if self._ready.fired:
            self._ready = OneShot()
        ready = defer.Deferred.fromCoroutine(self._start_all())
        ready.addErrback(self._failed)
        ready.addBoth(self._ready.fire)

    def _failed(self, failure):
        self.log.error("local network failed: {why}", why=failure.getErrorMessage())
        return failure

    async def _start_all(self):
        nodes = [n for n in self.nodes.values() if self.only in (None, n.name)]
        # The directory first: the other nodes announce themselves to its URL,
        # and with port 0 that URL is known only once it listens.
        directory = [n for n in nodes if n.kind == "directory"]
        for node in directory:
            await self._start_node(node)
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(self._start_node(n))
             for n in nodes if n.kind != "directory"], consumeErrors=True)
        problems = [value.getErrorMessage() for ok, value in results if not ok]
        if problems:
            raise LocalNetError("; ".join(problems))
        if self.only is None:
            topology = await self.wait_for_topology()
            # under twistd nobody reads whenReady(): the log is the announcement
            for line in describe(topology, self.directory_url):
                self.log.info("local network ready: {line}", line=line)
        return self.directory_url

    def whenReady(self):
        """Fires with the directory URL once the topology is complete."""
        return self._ready.when_fired()

    async def wait_for_topology(self, timeout=30.0, poll=0.1):
        """The topology once every running node of the plan is in it."""
        directory = DirectoryClient(self.directory_url, reactor=self.reactor)
        try:
            return await self._wait_for_topology(directory, timeout, poll)
        finally:
            await directory.close()

    async def _wait_for_topology(self, directory, timeout, poll):
        want_mix = {self.node_services[n].keys.public_key for n in self.node_services
                    if self.nodes[n].kind == "mixnode" and self.node_services[n].running}
        want_gw = {self.node_services[n].keys.public_key for n in self.node_services
                   if self.nodes[n].kind == "gateway" and self.node_services[n].running}

        def missing(topology):
            have_mix = {m.public_key for m in topology.mixnodes}
            have_gw = {g.public_key for g in topology.gateways}
            if want_mix <= have_mix and want_gw <= have_gw:
                return None
            return (f"the topology is still incomplete: {len(want_mix - have_mix)} mixnodes"
                    f" and {len(want_gw - have_gw)} gateways not announced yet")
        return await poll_topology(self.reactor, directory, missing, timeout, poll)

    async def wait_for_clients(self, client_keys, timeout=30.0, poll=0.1):
        """The topology once the gateways list every key in *client_keys*."""
        directory = DirectoryClient(self.directory_url, reactor=self.reactor)
        wanted = set(client_keys)

        def missing(topology):
            absent = len(wanted - set(topology.clients()))
            return f"{absent} client(s) not in the topology" if absent else None
        try:
            return await poll_topology(self.reactor, directory, missing, timeout, poll)
        finally:
            await directory.close()

    async def stop_node(self, name):
        """Stop one node; ``start_node(name)`` brings it back on the same ports."""
        service = self.node_services.pop(name)
        await defer.maybeDeferred(service.disownServiceParent)
        return service

    async def start_node(self, name):
        return await self._start_node(self.nodes[name])


async def poll_topology(reactor, directory, missing, timeout, poll=0.1, check=None):
    """Fetch the topology every *poll* s until ``missing(topology)`` is None.

    ``missing`` says what the topology still lacks; a directory that does
    not answer is retried too (it may not listen yet). After *timeout* s,
    LocalNetError with the last reason. ``check()``, run before each fetch,
    may raise to give up early.
    """
    deadline = reactor.seconds() + timeout
    while True:
        if check is not None:
            check()
        try:
            topology = await directory.get_topology()
        except Exception as e:
            why = f"the directory does not answer ({_why(e)})"
        else:
            why = missing(topology)
            if why is None:
                return topology
        if reactor.seconds() > deadline:
            raise LocalNetError(f"{why} after {timeout:.0f} s")
        await deferLater(reactor, poll, lambda: None)


def _why(error):
    if hasattr(error, "getErrorMessage"):
        return error.getErrorMessage()
    return str(error) or type(error).__name__


def describe(topology, directory_url):
    """The topology as the lines nym-localnet prints."""
    lines = [f"directory  {directory_url}   (topology: {directory_url}/api/presence/topology)"]
    for layer in range(1, LAYERS + 1):
        for m in sorted((m for m in topology.mixnodes if m.layer == layer), key=lambda m: m.address.port):
            lines.append(f"layer {layer}    {m.address}  {encode_key(m.public_key)}")
    for g in topology.gateways:
        lines.append(f"gateway    {g.address} (clients at {g.client_listener})  {encode_key(g.public_key)}")
    return lines


# The coercers raise UsageError, not ValueError: twisted.python.usage would
# put "Parameter type enforcement failed:" before a ValueError's message.
def _count(name, most):
    def coerce(text):
        try:
            value = int(text)
        except ValueError:
            raise usage.UsageError(f"{name} must be a whole number, not {text!r}")
        if not 1 <= value <= most:
            raise usage.UsageError(f"{name} must be 1 to {most}, not {value}")
        return value
    coerce.coerceDoc = f"(1 to {most})"
    return coerce


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise usage.UsageError(f"--base-port must be a port number, not {text!r}")
    if not 0 <= value <= 65535:
        raise usage.UsageError(f"--base-port must be 0 to 65535, not {value}")
    return value


class Options(usage.Options):
    synopsis = "[--mixnodes-per-layer N] [--gateways N] [--base-port PORT] [--home DIR] [--processes]"
    longdesc = ("Starts a directory, 3 layers of mixnodes and the gateways on 127.0.0.1, "
                "waits until the topology is complete, prints it, and runs until interrupted.")
    optFlags = [
        ["processes", None, "run one OS process per node (not under twistd)"],
    ]
    optParameters = [
        ["mixnodes-per-layer", None, 1, "mixnodes in each of the 3 layers",
         _count("--mixnodes-per-layer", MAX_PER_LAYER)],
        ["gateways", None, 1, "number of gateways", _count("--gateways", MAX_GATEWAYS)],
        ["base-port", None, 8080, "the directory's port; the nodes take the ports after it"
         " (0: any free ports, in one process only)", _port],
        ["home", None, None, "where node keys and mailboxes live (default: $NYM_HOME or ~/.nym)"],
        ["node", None, None, "(internal, with --processes) run only this node"],
    ]

    def opt_help(self):
        print(str(self))
        raise SystemExit(0)

    def postOptions(self):
        if self["processes"] and self["base-port"] == 0:
            raise usage.UsageError("--processes needs a fixed --base-port, not 0")
        try:
            self["plan"] = plan(self["mixnodes-per-layer"], self["gateways"], self["base-port"])
        except LocalNetError as e:
            raise usage.UsageError(str(e))
        if self["node"] is not None and self["node"] not in {n.name for n in self["plan"]}:
            raise usage.UsageError(f"--node {self['node']!r} is not a node of this network")
        self["home"] = str(nym_root(self["home"]))
        place = os.path.join(self["home"], "localnet")
        try:
            os.makedirs(place, mode=0o700, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"--home {self['home']}: cannot create {place}: {e.strerror}")


def makeService(options, reactor=None):
    """The twistd tapname ``nym-localnet``: the whole network in one process."""
    if reactor is None:
        from twisted.internet import reactor
    network = LocalNetwork(reactor, options["home"], options["plan"], only=options["node"])
    if options["processes"]:
        network.log.warn("--processes is for the nym-localnet command; under twistd the"
                         " network runs in this one process")
    # Under twistd nobody waits on whenReady(): a network that cannot start
    # must not leave twistd running with half of it. twistd starts services
    # before it runs the reactor, so the failure may come before it runs.
    def stop(failure):
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)
    network.whenReady().addErrback(stop)
    return network


class _ChildOutput(protocol.ProcessProtocol):
    """Passes a node process's output through, each line prefixed by its name."""

    def __init__(self, name, network):
        self.name = name
        self.network = network

    def _lines(self, data, stream):
        for line in data.decode("utf-8", "replace").splitlines():
            stream.write(f"[{self.name}] {line}\n")
        stream.flush()

    def outReceived(self, data):
        self._lines(data, sys.stdout)

    def errReceived(self, data):
        self._lines(data, sys.stderr)

    def processEnded(self, reason):
        self.network.child_ended(self.name, reason.value.exitCode)


class ProcessNetwork(MultiService):
    """One OS process per node (``--processes``), each running ``--node NAME``.

    ``start()`` spawns the directory, waits until it answers, spawns the
    other nodes and waits until the topology is complete; a node that exits
    before then fails it at once, naming the node.
    """

    log = Logger()

    def __init__(self, reactor, options):
        super().__init__()
        self.reactor = reactor
        self.options = options
        self.nodes = options["plan"]
        self.directory_url = f"http://{HOST}:{self.nodes[0].port}"
        self.children = {}
        self.exit_codes = {}
        self._all_ended = None

    def _spawn(self, node):
        args = [sys.executable, "-m", "nymtx.localnet", "--node", node.name,
                "--home", self.options["home"],
                "--base-port", str(self.options["base-port"]),
                "--mixnodes-per-layer", str(self.options["mixnodes-per-layer"]),
                "--gateways", str(self.options["gateways"])]
        self.children[node.name] = self.reactor.spawnProcess(
            _ChildOutput(node.name, self), sys.executable, args, env=os.environ)

    def child_ended(self, name, code):
        self.exit_codes[name] = code
        self.children.pop(name, None)
        if not self.children and self._all_ended is not None:
            self._all_ended.callback(None)

    def _check_children(self):
        for name, code in self.exit_codes.items():
            raise LocalNetError(f"{name} exited with code {code} before the network was up"
                                " (its output is above)")

    async def start(self):
        directory = DirectoryClient(self.directory_url, reactor=self.reactor)
        try:
            self._spawn(self.nodes[0])
            await poll_topology(self.reactor, directory, lambda topology: None, 60.0,
                                check=self._check_children)
            for node in self.nodes[1:]:
                self._spawn(node)
            mixnodes = sum(1 for n in self.nodes if n.kind == "mixnode")
            gateways = sum(1 for n in self.nodes if n.kind == "gateway")

            def missing(t):
                if len(t.mixnodes) >= mixnodes and len(t.gateways) >= gateways:
                    return None
                return (f"the topology is still incomplete: {len(t.mixnodes)} of {mixnodes}"
                        f" mixnodes, {len(t.gateways)} of {gateways} gateways")
            return await poll_topology(self.reactor, directory, missing, 60.0,
                                       check=self._check_children)
        finally:
            await directory.close()

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


class _ParentWatch(protocol.Protocol):
    """A --node child stops when its parent goes away (its stdin closes)."""

    def __init__(self, reactor):
        self.reactor = reactor

    def connectionLost(self, reason):
        if self.reactor.running:
            self.reactor.stop()


def main(argv=None):
    from twisted.internet import reactor
    from nymtx.runner import start_logging

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"nym-localnet: {e}", file=sys.stderr)
        print(f"usage: nym-localnet {Options.synopsis}", file=sys.stderr)
        return 2
    start_logging("warn")
    outcome = {"code": 0}

    def fail(failure):
        print(f"nym-localnet: error: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        outcome["code"] = 1
        if reactor.running:
            reactor.stop()

    if options["node"] is not None:
        # A child of --processes: Ctrl-C reaches the whole process group, but
        # only the parent acts on it (and then stops us with SIGTERM).
        import signal
        from twisted.internet import stdio
        reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
        stdio.StandardIO(_ParentWatch(reactor), reactor=reactor)
        network = LocalNetwork(reactor, options["home"], options["plan"], only=options["node"])

        def start_one():
            network.startService()
            network.whenReady().addErrback(fail)
        reactor.callWhenRunning(start_one)
    else:
        network = (ProcessNetwork(reactor, options) if options["processes"]
                   else LocalNetwork(reactor, options["home"], options["plan"]))

        async def announce():
            if options["processes"]:
                topology = await network.start()
            else:
                await network.whenReady()
                topology = await network.wait_for_topology()
            print("nym-localnet: the network is up", flush=True)
            for line in describe(topology, network.directory_url):
                print("  " + line, flush=True)
            print(json.dumps({"directory": network.directory_url}), flush=True)
            print("Press Ctrl-C to stop.", flush=True)

        def start():
            network.startService()
            defer.Deferred.fromCoroutine(announce()).addErrback(fail)
        reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: network.stopService() if network.running else None)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
