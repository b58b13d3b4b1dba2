"""nym-localnet --netns: every node and client on its own host (a network namespace).

The end-to-end tests need root (or CAP_NET_ADMIN) and Linux; where a
namespace cannot be made they are skipped, saying why. Every run removes
its namespaces, veths and bridge; the tests check that it did.
"""

import errno
import ipaddress
import json
import os
import shutil
import subprocess
import sys

import attrs
from hypothesis import given, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

import nymtx
from nymtx.addressing import encode_client_address
from nymtx.client.config import ClientConfig
from nymtx.directory.client import DirectoryClient
from nymtx.keys import encode_key
from nymtx.localnet import LocalNetError, Options, Timing, plan, poll_topology
from nymtx.localnet import netns
from nymtx.localnet.netns import NetnsNetwork, Namespaces, decode_plan, encode_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nymtx.__file__)))
TIMING = Timing(presence_interval=0.3, metrics_interval=1.0, expiry=5.0)
# milliseconds, as in config.toml's [debug]
FAST = ["--average-packet-delay", "5", "--loop-cover-traffic-average-delay", "100",
        "--message-sending-average-delay", "10", "--fetch-message-delay", "50",
        "--topology-refresh-rate", "250"]


def _why_not():
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    return netns.unavailable()


UNAVAILABLE = _why_not()


def _env():
    # the children run in a temporary cwd: they need this source tree by its absolute path
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


def coroutine(f):
    def test(self):
        return Deferred.fromCoroutine(f(self))
    test.__name__ = f.__name__
    return test


class Child(ProcessProtocol):
    """A process's output, and ``ended`` firing with its exit code."""

    def __init__(self, name):
        self.name = name
        self.out = b""
        self.err = b""
        self.ended = Deferred()
        self.code = None

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.code = reason.value.exitCode
        self.ended.callback(self.code)


def spawn(case, argv, name):
    child = Child(name)
    transport = reactor.spawnProcess(child, argv[0], argv, env=_env())

    def stop():
        if child.code is None:
            try:
                transport.signalProcess("TERM")
            except Exception:
                pass
        return child.ended
    case.addCleanup(stop)
    return child


def listening(run, name):
    """The local addresses that listen for TCP in host *name*'s namespace."""
    out = subprocess.run(run.exec_args(name) + ["ss", "-ltnH"], capture_output=True,
                         text=True, check=True).stdout
    return sorted(line.split()[3] for line in out.splitlines() if line.strip())


def run_leftovers(number):
    names = [n for n in netns.namespaces() if n.startswith(f"nymtx-{number}-")]
    links = [link for link in netns.links()
             if link.startswith(f"nymtx{number}b") or link.startswith(f"nymtx{number}v")]
    return names + links


class NetnsNetworkTests(TestCase):
    skip = UNAVAILABLE
    timeout = 120

    async def _network(self, nodes, clients=(), **options):
        home = os.path.abspath(self.mktemp())
        network = NetnsNetwork(reactor, home, nodes, clients=clients, timing=TIMING, **options)
        network.startService()
        self.addCleanup(self._gone, network)
        self.addCleanup(network.stopService)
        topology = await network.start()
        return home, network, topology

    def _gone(self, network):
        # runs after stopService: nothing of the run may be left
        self.assertEqual(run_leftovers(network.run.number), [])

    @coroutine
    async def test_alice_and_bob_at_two_gateways_in_their_own_namespaces(self):
        nodes = plan(1, 2, 0)
        # Binding every address of its host while announcing the namespace's
        # one: gateway-2 serves Bob, and mix-2-1 carries every packet.
        nodes = [attrs.evolve(n, bind="0.0.0.0") if n.name in ("gateway-2", "mix-2-1") else n
                 for n in nodes]
        home, network, topology = await self._network(nodes, ["alice", "bob", "mix-cli"])
        run = network.run
        address = {name: host.address for name, host in run.hosts.items()}
        self.assertEqual(len(set(address.values())), len(address))

        # every node announces its own address; nothing of a node listens on 127.0.0.1
        self.assertEqual(
            sorted(str(m.address) for m in topology.mixnodes),
            sorted(f"{address[n]}:1789" for n in ("mix-1-1", "mix-2-1", "mix-3-1")))
        gateways = {g.address.host: g for g in topology.gateways}
        self.assertEqual(sorted(gateways), sorted([address["gateway-1"], address["gateway-2"]]))
        for name in ("gateway-1", "gateway-2"):
            self.assertEqual(str(gateways[address[name]].client_listener),
                             f"{address[name]}:9000")
        self.assertEqual(listening(run, "directory"), [f"{address['directory']}:8080"])
        self.assertEqual(listening(run, "mix-1-1"), [f"{address['mix-1-1']}:1789"])
        self.assertEqual(listening(run, "mix-2-1"), ["0.0.0.0:1789"])
        self.assertEqual(listening(run, "gateway-1"), sorted(
            [f"{address['gateway-1']}:1789", f"{address['gateway-1']}:9000"]))
        self.assertEqual(listening(run, "gateway-2"), ["0.0.0.0:1789", "0.0.0.0:9000"])

        # A second layer-2 mixnode set up as an operator would: nym-mixnode
        # init --host 0.0.0.0 --announce-host, then run. Each packet takes
        # one of the two at random, so if it did not work about half of the
        # 40 messages would be lost.
        python = [sys.executable, "-m"]
        init = spawn(self, run.exec_args("mix-cli") + python + [
            "nymtx.mixnode.cli", "init", "--id", "cli", "--layer", "2", "--host", "0.0.0.0",
            "--announce-host", address["mix-cli"], "--directory", network.directory_url,
            "--home", home], "mix-cli init")
        self.assertEqual(await init.ended, 0, init.err.decode())
        # the network's nodes speak mix links: this one pins the directory's
        # key too, as its operator would in config.toml (docs/mix-link.md)
        from nymtx.mixnode.config import config_path, load_config
        from nymtx.trust.localnet import directory_keys
        config = load_config("cli", home)
        config = attrs.evolve(config, debug=dict(config.debug,
                                                 directory_keys=tuple(directory_keys(network))))
        config.save(config_path("cli", home))
        spawn(self, run.exec_args("mix-cli") + python + [
            "nymtx.mixnode.cli", "run", "--id", "cli", "--home", home], "mix-cli")

        # the clients: nym-client init at a chosen gateway, then nym-client run
        inits = {}
        for name, gateway in (("Alice", "gateway-1"), ("Bob", "gateway-2")):
            key = gateways[address[gateway]].public_key
            inits[name] = spawn(self, run.exec_args(name.lower()) + python + [
                "nymtx.client.cli", "init", "--id", name, "--home", home,
                "--directory", network.directory_url, "--gateway", encode_key(key),
                "--socket-type", "websocket", "--port", "9001"] + FAST, f"{name} init")
        for name, child in inits.items():
            self.assertEqual(await child.ended, 0, child.err.decode())
        keys = {name: ClientConfig.load(home, name).load_keys().public_key for name in inits}
        client_address = {name: encode_client_address(key) for name, key in keys.items()}

        directory = DirectoryClient(network.directory_url, reactor=reactor)
        self.addCleanup(directory.close)

        def missing(t):
            if len([m for m in t.mixnodes if m.layer == 2]) < 2:
                return "the nym-mixnode run mixnode is not in the topology"
            if not set(keys.values()) <= set(t.clients()):
                return "a client is not in the topology"
            return None
        topology = await poll_topology(reactor, directory, missing, 30.0)
        cli = [m for m in topology.mixnodes if m.layer == 2 and m.address.host == address["mix-cli"]]
        self.assertEqual([str(m.address) for m in cli], [f"{address['mix-cli']}:1789"])
        self.assertEqual(listening(run, "mix-cli"), ["0.0.0.0:1789"])

        for name in inits:
            spawn(self, run.exec_args(name.lower()) + python + [
                "nymtx.client.cli", "run", "--id", name, "--home", home], name)
        drivers = {}
        for name, peer in (("Alice", "Bob"), ("Bob", "Alice")):
            drivers[name] = spawn(self, run.exec_args(name.lower()) + python + [
                "tests.netns_driver", "ws://127.0.0.1:9001/mix", client_address[peer], "20",
                name], f"{name} driver")
        results = {}
        for name, child in drivers.items():
            self.assertEqual(await child.ended, 0, child.err.decode())
            results[name] = json.loads(child.out.decode().strip().splitlines()[-1])
        for name, peer in (("Alice", "Bob"), ("Bob", "Alice")):
            self.assertEqual(results[name]["address"], client_address[name])
            self.assertEqual(results[name]["errors"], [])
            self.assertEqual(len(results[name]["sent"]), 20)
            # every message of the peer, each exactly once
            self.assertEqual(sorted(results[name]["received"]), sorted(results[peer]["sent"]))
        # the client API is the one thing on 127.0.0.1, in its own namespace
        self.assertEqual(listening(run, "alice"), ["127.0.0.1:9001"])
        self.assertEqual(listening(run, "bob"), ["127.0.0.1:9001"])

    @coroutine
    async def test_three_directories_one_stopped(self):
        from nymtx.trust.document import parse_document
        from nymtx.trust.localnet import client_settings, directory_identity
        home, network, topology = await self._network(plan(1, 1, 0), ["alice", "bob"],
                                                      directories=3)
        run = network.run
        # each directory on its own host, signing with its own key, listing every node
        names = ["directory", "directory-2", "directory-3"]
        self.assertEqual(list(network.directory_urls), names)
        for name in names:
            address = run.hosts[name].address
            self.assertEqual(network.directory_urls[name], f"http://{address}:8080")
            self.assertEqual(listening(run, name), [f"{address}:8080"])
            reader = DirectoryClient(network.directory_urls[name], reactor=reactor)
            self.addCleanup(reader.close)
            for _ in range(100):
                document = parse_document(await reader.get_topology_json(compact=True))
                d = document.document
                if (len(d.mixnodes), len(d.gateways)) == (3, 1):
                    break
                await sleep(0.1)
            self.assertEqual((len(d.mixnodes), len(d.gateways)), (3, 1), name)
            self.assertEqual(d.directory_key, directory_identity(network, name).public_key)
        self.assertEqual(await network.kill("directory-3"), "signal 9")

        # Alice and Bob pin all three, two of which answer
        trust = client_settings(network)
        pins = ["--directory", trust["directory_url"],
                "--directories", ",".join(trust["more_directories"]),
                "--directory-keys", ",".join(trust["directory_keys"])]
        python = [sys.executable, "-m"]
        for name in ("Alice", "Bob"):
            init = spawn(self, run.exec_args(name.lower()) + python + [
                "nymtx.client.cli", "init", "--id", name, "--home", home, *pins,
                "--socket-type", "websocket", "--port", "9001"] + FAST, f"{name} init")
            self.assertEqual(await init.ended, 0, init.err.decode())
        keys = {name: ClientConfig.load(home, name).load_keys().public_key
                for name in ("Alice", "Bob")}
        self.assertEqual(list(ClientConfig.load(home, "Alice").directory_keys),
                         trust["directory_keys"])
        client_address = {name: encode_client_address(key) for name, key in keys.items()}
        for name in keys:
            spawn(self, run.exec_args(name.lower()) + python + [
                "nymtx.client.cli", "run", "--id", name, "--home", home], name)
        drivers = {}
        for name, peer in (("Alice", "Bob"), ("Bob", "Alice")):
            drivers[name] = spawn(self, run.exec_args(name.lower()) + python + [
                "tests.netns_driver", "ws://127.0.0.1:9001/mix", client_address[peer], "5",
                name], f"{name} driver")
        results = {}
        for name, child in drivers.items():
            self.assertEqual(await child.ended, 0, child.err.decode())
            results[name] = json.loads(child.out.decode().strip().splitlines()[-1])
        for name, peer in (("Alice", "Bob"), ("Bob", "Alice")):
            self.assertEqual(results[name]["errors"], [])
            self.assertEqual(sorted(results[name]["received"]), sorted(results[peer]["sent"]))

    async def _command(self):
        """nym-localnet --netns as a command, once it has printed its JSON line."""
        argv = [sys.executable, "-m", "nymtx.localnet", "--netns", "--clients", "1",
                "--home", os.path.abspath(self.mktemp())]
        child = Child("nym-localnet")
        transport = reactor.spawnProcess(child, argv[0], argv, env=_env())

        def kill():
            try:
                transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            return child.ended
        self.addCleanup(kill)
        deadline = reactor.seconds() + 60
        while b"Press Ctrl-C" not in child.out:
            self.assertIsNone(child.code, child.err.decode())
            self.assertLess(reactor.seconds(), deadline, child.err.decode())
            await sleep(0.1)
        line = [x for x in child.out.decode().splitlines() if x.startswith("{")][0]
        announced = json.loads(line)
        number = int(announced["hosts"]["directory"]["namespace"].split("-")[1])
        self.addCleanup(netns.remove_run, number)
        self.assertEqual(announced["directory"],
                         f"http://{announced['hosts']['directory']['address']}:8080")
        self.assertEqual(announced["hosts"]["client-1"],
                         {"namespace": f"nymtx-{number}-client-1",
                          "address": f"10.231.{number}.15"})
        self.assertIn(f"ip netns exec nymtx-{number}-client-1 nym-client run", child.out.decode())
        return child, transport, number

    @coroutine
    async def test_the_command_stopped_by_sigterm_removes_everything(self):
        child, transport, number = await self._command()
        self.assertEqual(len(run_leftovers(number)), 6 + 6 + 1)  # namespaces, veths, bridge
        transport.signalProcess("TERM")
        self.assertEqual(await child.ended, 0, child.err.decode())
        self.assertEqual(run_leftovers(number), [])

    @coroutine
    async def test_a_killed_command_leaves_namespaces_that_clean_removes(self):
        child, transport, number = await self._command()
        transport.signalProcess("KILL")
        await child.ended
        self.assertNotEqual(run_leftovers(number), [])
        # the nodes stop by themselves once their parent is gone
        names = [n for n in netns.namespaces() if n.startswith(f"nymtx-{number}-")]
        deadline = reactor.seconds() + 20
        while any(subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                 text=True).stdout.strip() for n in names):
            self.assertLess(reactor.seconds(), deadline, "a node outlived its parent")
            await sleep(0.2)
        done = subprocess.run(
            [sys.executable, "-m", "nymtx.localnet.netns", "--clean", str(number)],
            capture_output=True, text=True, env=_env(), timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"run {number}: removed", done.stdout)
        self.assertEqual(done.stderr, "")
        self.assertEqual(run_leftovers(number), [])

    @coroutine
    async def test_a_node_that_cannot_listen_fails_the_start_and_leaves_nothing(self):
        # 192.0.2.77 (TEST-NET-1) is no address of mix-1-1's namespace
        nodes = [attrs.evolve(n, bind="192.0.2.77") if n.name == "mix-1-1" else n
                 for n in plan(1, 1, 0)]
        network = NetnsNetwork(reactor, os.path.abspath(self.mktemp()), nodes, timing=TIMING)
        network.startService()
        with self.assertRaises(LocalNetError) as caught:
            await network.start()
        self.assertIn("mix-1-1 exited with code 1", str(caught.exception))
        number = network.run.number
        self.assertNotEqual(run_leftovers(number), [])
        await network.stopService()
        self.assertEqual(run_leftovers(number), [])

    def test_clean_removes_what_a_dead_run_left_and_keeps_a_live_one(self):
        dead = subprocess.Popen(["true"])
        dead.wait()
        live = subprocess.Popen(["sleep", "60"])
        self.addCleanup(live.wait)
        self.addCleanup(live.kill)
        left = Namespaces.create(["a", "b"], owner=dead.pid)
        self.addCleanup(left.remove)
        going = Namespaces.create(["c"], owner=live.pid)
        self.addCleanup(going.remove)
        runs = netns.leftovers()
        self.assertEqual(runs[left.number], dead.pid)
        self.assertEqual(runs[going.number], live.pid)
        self.assertEqual(len(run_leftovers(left.number)), 5)  # 2 namespaces, 2 veths, the bridge

        out = []

        class Lines:
            def write(self, text):
                out.append(text)
        # only these runs: under trial -j2 another worker may be making one at this moment
        netns.clean(out=Lines(), only={left.number, going.number})
        self.assertEqual(run_leftovers(left.number), [])
        self.assertNotEqual(run_leftovers(going.number), [])
        self.assertIn(f"run {going.number}: kept", "".join(out))
        netns.clean(force=True, out=Lines(), only={going.number})
        self.assertEqual(run_leftovers(going.number), [])

    def test_hosts_reach_each_other_and_nothing_else(self):
        run = Namespaces.create(["a", "b"])
        self.addCleanup(run.remove)
        b = run.hosts["b"].address
        server = subprocess.Popen(run.exec_args("b") + [sys.executable, "-c", (
            "import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 7000)); s.listen();"
            " print('up', flush=True); c, _ = s.accept(); c.sendall(b'hello from b')"), b],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        self.assertEqual(server.stdout.readline(), "up\n")
        client = (
            "import socket, sys\n"
            "print(socket.create_connection((sys.argv[1], 7000), timeout=5).recv(100).decode())\n"
            "try:\n"
            "    socket.create_connection(('192.0.2.1', 80), timeout=5)\n"
            "except OSError as e:\n"
            "    print(e.errno)\n")
        done = subprocess.run(run.exec_args("a") + [sys.executable, "-c", client, b],
                              capture_output=True, text=True, timeout=30)
        # b answers; an address off the bridge has no route at all
        self.assertEqual(done.stdout.split("\n")[:2], ["hello from b", str(errno.ENETUNREACH)],
                         done.stderr)
        routes = subprocess.run(run.exec_args("a") + ["ip", "-4", "route", "show"],
                                capture_output=True, text=True, check=True).stdout
        # only the bridge's /24: no default route, nothing leaves the machine
        self.assertEqual([r.split()[0] for r in routes.splitlines()], [str(run.subnet)])
        # and no IPv6 at all on the links of the run, not even link-local
        inside = subprocess.run(run.exec_args("a") + ["ip", "-6", "-o", "addr", "show", "dev",
                                                      "eth0"], capture_output=True, text=True)
        self.assertEqual(inside.stdout, "")
        for link in (run.bridge, run.hosts["a"].veth):
            outside = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", link],
                                     capture_output=True, text=True, check=True)
            self.assertEqual(outside.stdout, "", link)


class NoCapabilityTests(TestCase):
    skip = UNAVAILABLE or (None if shutil.which("capsh") and os.geteuid() == 0
                           else "needs root and capsh to drop CAP_NET_ADMIN")

    def test_without_cap_net_admin_one_line_and_exit_1(self):
        home = os.path.abspath(self.mktemp())
        command = (f"{sys.executable} -m nymtx.localnet --netns --home {home}")
        done = subprocess.run(["capsh", "--drop=cap_net_admin,cap_sys_admin", "--", "-c",
                               command], capture_output=True, text=True, env=_env(), timeout=60)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stdout, "")
        lines = done.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, done.stderr)
        self.assertTrue(lines[0].startswith(
            "nym-localnet: error: cannot create network namespaces (this needs root or"
            " CAP_NET_ADMIN)"), lines[0])


class NetnsOptionsTests(SynchronousTestCase):
    """No namespace needed: the flags and the plan a node process is given."""

    def parse(self, *args):
        options = Options()
        options.parseOptions(["--home", self.mktemp(), *args])
        return options

    def test_netns_and_processes_exclude_each_other(self):
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--netns", "--processes")
        self.assertIn("--netns", str(caught.exception))

    def test_clients_must_be_a_small_count(self):
        self.assertEqual(self.parse("--netns", "--clients", "0")["clients"], 0)
        for bad in ("-1", "x", "75", "1.5"):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--netns", "--clients", bad)
            self.assertIn("--clients must be", str(caught.exception))

    def test_a_node_reads_its_network_from_the_plan(self):
        nodes = [attrs.evolve(n, host=f"10.231.7.{10 + i}", bind="0.0.0.0" if i == 2 else None)
                 for i, n in enumerate(plan(1, 2, 0))]
        text = encode_plan(nodes, TIMING)
        self.assertEqual(decode_plan(text), (nodes, TIMING))
        options = self.parse("--node", "mix-2-1", "--netns-plan", text)
        self.assertEqual(options["plan"], nodes)
        self.assertEqual(options["timing"], TIMING)

    def test_a_bad_plan_is_a_usage_error(self):
        good = json.loads(encode_plan(plan(1, 1, 0), TIMING))
        bad_host = json.loads(json.dumps(good))
        bad_host["nodes"][1]["host"] = "example.org"
        no_directory = json.loads(json.dumps(good))
        no_directory["nodes"] = no_directory["nodes"][1:]
        bad_kind = json.loads(json.dumps(good))
        bad_kind["nodes"][1]["kind"] = "router"
        for value, why in ((bad_host, "not an IPv4 address"), (no_directory, "directory"),
                           (bad_kind, "unknown kind"), ([], "not a plan"),
                           ({"nodes": [{"nme": 1}], "timing": {}}, "not a plan")):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--netns-plan", json.dumps(value))
            self.assertIn(why, str(caught.exception))

    @given(st.one_of(st.text(), st.builds(json.dumps, st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))))
    def test_any_text_is_a_plan_or_a_value_error(self, text):
        try:
            nodes, timing = decode_plan(text)
        except ValueError:
            return
        self.assertEqual(nodes[0].kind, "directory")

    def test_names_follow_the_prefix_that_clean_removes(self):
        run = Namespaces(17, ["directory", "gateway-1"])
        self.assertEqual(run.bridge, "nymtx17b")
        self.assertEqual(run.hosts["gateway-1"].namespace, "nymtx-17-gateway-1")
        self.assertEqual(run.hosts["gateway-1"].address, "10.231.17.11")
        self.assertEqual(run.hosts["directory"].veth, "nymtx17v0")
        for name in (run.bridge, run.hosts["gateway-1"].veth):
            self.assertLessEqual(len(name), 15)  # IFNAMSIZ - 1
            self.assertTrue(netns._LINK.match(name))
        self.assertFalse(netns._LINK.match("nymtx17bx"))
        self.assertEqual(run.exec_args("directory")[-3:], ["netns", "exec", "nymtx-17-directory"])

    def test_under_twistd_netns_is_a_warning_and_one_process_on_loopback(self):
        from twisted.logger import capturedLogs
        from nymtx.localnet import LocalNetwork, makeService
        options = self.parse("--netns")
        with capturedLogs() as logs:
            network = makeService(options, reactor=reactor, exit_with=lambda code: None)
        self.assertIsInstance(network, LocalNetwork)
        self.assertFalse(network.running)
        self.assertEqual({n.host for n in network.nodes.values()}, {"127.0.0.1"})
        warnings = [e for e in logs if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["flag"], "netns")

    def test_a_node_killed_by_a_signal_is_named_with_it(self):
        from twisted.internet.error import ProcessTerminated
        from twisted.python.failure import Failure
        from nymtx.localnet.processes import ProcessNetwork, _ChildOutput
        network = ProcessNetwork(reactor, {"plan": plan(1, 1, 8080)})
        _ChildOutput("gateway-1", network).processEnded(
            Failure(ProcessTerminated(exitCode=None, signal=9)))
        with self.assertRaises(LocalNetError) as caught:
            network._check_children()
        self.assertEqual(str(caught.exception), "gateway-1 was killed by signal 9 before the"
                         " network was up (its output is above)")

    def test_clean_usage(self):
        from contextlib import redirect_stderr
        import io
        for argv in ([], ["--force"], ["--clean", "x"], ["--clean", "256"], ["--clean", "-v"]):
            with redirect_stderr(io.StringIO()) as err:
                self.assertEqual(netns.main(argv), 2)
            self.assertIn("usage: python -m nymtx.localnet.netns --clean", err.getvalue())


class ScriptedIp:
    """``ip`` with a machine's namespaces and links as sets; *fail* maps an
    argument tuple's start to the stderr it fails with (once)."""

    def __init__(self, fail=None):
        self.commands = []
        self.namespaces = set()
        self.links = set()
        self.fail = dict(fail or {})
        self.veths = {}  # namespace -> the veths that go with it

    def __call__(self, *args, check=True):
        self.commands.append(args)
        for start, message in list(self.fail.items()):
            if args[:len(start)] == start:
                del self.fail[start]
                if check:
                    raise netns.NetnsError(f"'ip {' '.join(args)}' failed: {message}")
                return subprocess.CompletedProcess(args, 2, "", message)
        out = ""
        if args[:2] == ("netns", "list"):
            out = "".join(f"{n}\n" for n in sorted(self.namespaces))
        elif args[:3] == ("-o", "link", "show") and len(args) == 3:
            out = "".join(f"{i}: {name}: <UP>\n" for i, name in enumerate(sorted(self.links)))
        elif args[:2] == ("netns", "add"):
            self.namespaces.add(args[2])
        elif args[:2] == ("netns", "del"):
            self.namespaces.discard(args[2])
            self.links -= {name for name in self.links if name in self.veths.get(args[2], ())}
        elif args[:2] == ("link", "add"):
            self.links.add(args[2])
            if "netns" in args:
                self.veths.setdefault(args[-1], set()).add(args[2])
        elif args[:2] == ("link", "del"):
            self.links.discard(args[2])
        return subprocess.CompletedProcess(args, 0, out, "")


class NamespacesWithoutRootTests(SynchronousTestCase):
    """What the run asks of ``ip``, with ``ip`` faked: no root needed."""

    def setUp(self):
        # the same number every time: shuffle leaves the list as it is
        self.patch(netns.random, "shuffle", lambda numbers: None)

    def test_hosts_get_a_bridge_and_no_route_out(self):
        ip = ScriptedIp()
        self.patch(netns, "_ip", ip)
        run = Namespaces.create(["directory", "alice"], owner=42)
        self.assertEqual(run.number, 0)
        self.assertEqual(ip.namespaces, {"nymtx-0-directory", "nymtx-0-alice"})
        self.assertEqual(ip.links, {"nymtx0b", "nymtx0v0", "nymtx0v1"})
        self.assertIn(("link", "set", "nymtx0b", "alias", "nymtx localnet pid=42"), ip.commands)
        self.assertIn(("-n", "nymtx-0-alice", "addr", "add", "10.231.0.11/24", "dev", "eth0"),
                      ip.commands)
        self.assertIn(("-n", "nymtx-0-alice", "link", "set", "lo", "up"), ip.commands)
        # nothing routes, forwards or NATs anywhere
        for command in ip.commands:
            if "route" in command:
                self.assertEqual(command[command.index("route") + 1], "show", command)
            self.assertFalse({"default", "nat", "forwarding", "masquerade"} & set(command))
        run.remove()
        self.assertEqual((ip.namespaces, ip.links), (set(), set()))

    def test_a_number_taken_meanwhile_is_skipped(self):
        ip = ScriptedIp(fail={("link", "add", "nymtx0b"): "RTNETLINK answers: File exists"})
        self.patch(netns, "_ip", ip)
        run = Namespaces.create(["a"])
        self.assertEqual(run.number, 1)
        self.assertEqual(run.hosts["a"].address, "10.231.1.10")

    def test_numbers_in_use_are_skipped(self):
        ip = ScriptedIp()
        ip.namespaces.add("nymtx-0-directory")  # a leftover of run 0
        self.patch(netns, "_ip", ip)
        # and 10.231.1.0/24 routed here already (a VPN, say)
        self.patch(netns, "_used_networks", lambda: [ipaddress.ip_network("10.231.0.0/23")])
        self.assertEqual(Namespaces.create(["a"]).number, 2)

    def test_a_failure_midway_removes_what_was_made(self):
        ip = ScriptedIp(fail={("netns", "add", "nymtx-0-b"): "Permission denied"})
        self.patch(netns, "_ip", ip)
        with self.assertRaises(netns.NetnsError) as caught:
            Namespaces.create(["a", "b", "c"])
        self.assertIn("netns add nymtx-0-b", str(caught.exception))
        self.assertIn("Permission denied", str(caught.exception))
        self.assertEqual((ip.namespaces, ip.links), (set(), set()))

    def test_no_permission_is_one_line_naming_the_capability(self):
        ip = ScriptedIp(fail={("link", "add"): "RTNETLINK answers: Operation not permitted"})
        self.patch(netns, "_ip", ip)
        with self.assertRaises(netns.NetnsError) as caught:
            Namespaces.create(["a"])
        self.assertEqual(str(caught.exception).splitlines(), [str(caught.exception)])
        self.assertTrue(str(caught.exception).startswith(netns.CANNOT))

    def test_bad_host_names_are_refused_before_anything_is_made(self):
        ip = ScriptedIp()
        self.patch(netns, "_ip", ip)
        for names in (["a", "a"], [], ["../etc"], ["x" * 50]):
            with self.assertRaises(netns.NetnsError):
                Namespaces.create(names)
        self.assertEqual(ip.commands, [])
