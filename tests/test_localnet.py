"""nym-localnet: the plan of ports, its options, and failing cleanly."""

import os
import socket
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.localnet import (
    MAX_GATEWAYS, MAX_PER_LAYER, LocalNetError, LocalNetwork, Options, plan)


#: the twistd command, as its console script runs it
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run;"
          " sys.argv[0] = 'twistd'; sys.exit(run())"]


def taken_port(free_around=6):
    """A listening socket on a free port whose *free_around* neighbours on
    each side are free too (the network under test binds them: a neighbour
    taken by another program would fail the wrong node); the port stays
    taken while the socket lives."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if free_around < port < 65535 - free_around and all(
                _free(p) for p in range(port - free_around, port + free_around + 1)
                if p != port):
            s.listen(1)
            return s, port
        s.close()
    raise RuntimeError("no free run of ports found")


def _free(port):
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class PlanTests(SynchronousTestCase):
    def test_ports_count_up_from_the_base(self):
        nodes = plan(2, 2, 8080)
        self.assertEqual([(n.name, n.port, n.client_port) for n in nodes], [
            ("directory", 8080, 0), ("mix-1-1", 8081, 0), ("mix-1-2", 8082, 0),
            ("mix-2-1", 8083, 0), ("mix-2-2", 8084, 0), ("mix-3-1", 8085, 0),
            ("mix-3-2", 8086, 0), ("gateway-1", 8087, 8088), ("gateway-2", 8089, 8090)])
        self.assertEqual({n.layer for n in nodes if n.kind == "mixnode"}, {1, 2, 3})

    def test_base_zero_means_free_ports(self):
        self.assertEqual({(n.port, n.client_port) for n in plan(1, 1, 0)}, {(0, 0)})

    def test_limits(self):
        self.assertRaises(LocalNetError, plan, 0, 1, 8080)
        self.assertRaises(LocalNetError, plan, MAX_PER_LAYER + 1, 1, 8080)
        self.assertRaises(LocalNetError, plan, 1, MAX_GATEWAYS + 1, 8080)
        e = self.assertRaises(LocalNetError, plan, 1, 1, 65532)
        self.assertIn("65537", str(e))
        plan(1, 1, 65530)  # exactly fits: 65530..65535


class OptionsTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(["--home", self.mktemp(), *args])
        return options

    def test_defaults(self):
        options = self.parse()
        self.assertEqual(len(options["plan"]), 1 + 3 + 1)
        self.assertEqual(options["plan"][0].port, 8080)
        self.assertTrue(os.path.isdir(os.path.join(options["home"], "localnet")))

    def test_log_level(self):
        self.assertIsNone(self.parse()["log-level"])  # each way of running has its default
        self.assertEqual(self.parse("--log-level", "debug")["log-level"], "debug")
        with self.assertRaises(usage.UsageError) as cm:
            self.parse("--log-level", "loud")
        self.assertEqual(str(cm.exception), "--log-level must be one of debug, info, warn,"
                         " error, critical, not 'loud'")

    def test_errors_name_the_flag_plainly(self):
        for args, fragment in [
                (["--base-port", "abc"], "--base-port must be a port number, not 'abc'"),
                (["--base-port", "70000"], "--base-port must be 0 to 65535"),
                (["--mixnodes-per-layer", "5000"], f"must be 1 to {MAX_PER_LAYER}"),
                (["--gateways", "x"], "--gateways must be a whole number"),
                (["--processes", "--base-port", "0"], "--processes needs a fixed --base-port"),
                (["--node", "mix-9-9"], "--node 'mix-9-9' is not a node"),
                (["--bogus"], "--bogus")]:
            with self.assertRaises(usage.UsageError) as cm:
                self.parse(*args)
            self.assertIn(fragment, str(cm.exception))
            self.assertNotIn("Parameter type enforcement", str(cm.exception))

    def test_home_that_cannot_be_made(self):
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        options = Options()
        with self.assertRaises(usage.UsageError) as cm:
            options.parseOptions(["--home", blocker])
        self.assertIn(f"--home {blocker}", str(cm.exception))


class PortInUseTests(TestCase):
    timeout = 60

    def test_in_process_network_names_the_node(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        # the directory gets port-1 .. the first mixnode the taken port
        network = LocalNetwork(reactor, self.mktemp(), plan(1, 1, port - 1))
        network.startService()
        self.addCleanup(network.stopService)
        d = network.whenReady()
        return self.assertFailure(d, LocalNetError).addCallback(
            lambda e: self.assertIn("mix-1-1 could not listen", str(e)))

    def test_waiter_from_before_the_start_hears_the_failure(self):
        # makeService asks whenReady() before twistd starts the service, so
        # that a network that cannot start stops the reactor.
        sock, port = taken_port()
        self.addCleanup(sock.close)
        network = LocalNetwork(reactor, self.mktemp(), plan(1, 1, port - 1))
        d = network.whenReady()
        network.startService()
        self.addCleanup(network.stopService)
        return self.assertFailure(d, LocalNetError)

    def test_twistd_service_stops_the_reactor_when_it_cannot_start(self):
        # twistd starts the service before reactor.run(): the failure comes
        # while the reactor is not running yet, and must still stop it.
        from nymtx.localnet import makeService

        class NotYetRunning:
            running = False

            def __init__(self):
                self.when_running = []

            def callWhenRunning(self, f, *args):
                self.when_running.append(f)

            def stop(self):
                raise AssertionError("stop() before the reactor runs")

            def __getattr__(self, name):
                return getattr(reactor, name)
        sock, port = taken_port()
        self.addCleanup(sock.close)
        fake = NotYetRunning()
        options = Options()
        options.parseOptions(["--home", self.mktemp(), "--base-port", str(port - 1)])
        statuses = []
        network = makeService(options, reactor=fake, exit_with=statuses.append)
        network.startService()
        self.addCleanup(network.stopService)
        d = network.whenReady()
        d = self.assertFailure(d, LocalNetError)
        d.addCallback(lambda _: self.assertEqual(fake.when_running, [fake.stop]))
        # twistd itself would exit 0 after the reactor stops
        d.addCallback(lambda _: self.assertEqual(statuses, [1]))
        return d

    def run_command(self, *args):
        return subprocess.run([sys.executable, "-m", "nymtx.localnet", "--home", self.mktemp(),
                               *args], capture_output=True, text=True, timeout=50)

    def test_command_exits_1_with_the_reason(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        result = self.run_command("--base-port", str(port - 2))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("nym-localnet: error: mix-2-1 could not listen", result.stderr)
        self.assertIn("Address already in use", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_twistd_exits_1_when_the_network_cannot_start(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        result = subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "nym-localnet", "--home", self.mktemp(),
             "--base-port", str(port - 1)], capture_output=True, text=True, timeout=50)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("local network failed: mix-1-1 could not listen", result.stdout)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_processes_fail_at_once_naming_the_node(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        result = self.run_command("--processes", "--base-port", str(port - 3))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("mix-3-1 exited with code 1 before the network was up", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


class TwistdLogTests(TestCase):
    timeout = 60

    def test_the_log_shows_info_and_above(self):
        # A running network announces itself twice a second per node at
        # debug ("POST /api/presence/mixnodes 201"): under twistd that was the log.
        from twisted.internet import defer, protocol

        class Output(protocol.ProcessProtocol):
            def __init__(self):
                self.text = ""
                self.ready = defer.Deferred()
                self.ended = defer.Deferred()

            def outReceived(self, data):
                self.text += data.decode()
                if "local network ready: gateway" in self.text and not self.ready.called:
                    self.ready.callback(None)

            def processEnded(self, reason):
                self.ended.callback(None)
        out = Output()
        process = reactor.spawnProcess(
            out, sys.executable, [*TWISTD, "-n", "--pidfile=", "nym-localnet", "--home",
                                  self.mktemp(), "--base-port", "0"], env=os.environ)
        d = out.ready
        # the heartbeats of every node, more than once
        d.addCallback(lambda _: deferLater(reactor, 2.5, lambda: None))
        d.addCallback(lambda _: process.signalProcess("TERM"))
        d.addCallback(lambda _: out.ended)

        def check(_):
            self.assertIn("local network ready: layer 3", out.text)
            self.assertNotIn("#debug]", out.text)
            self.assertNotIn("POST /api/presence", out.text)
        return d.addCallback(check)


class PollTopologyTests(SynchronousTestCase):
    """poll_topology on a Clock: the one polling loop behind every wait."""

    def directory(self, answers):
        from twisted.internet.defer import fail, succeed

        class Directory:
            def get_topology(self):
                answer = answers.pop(0)
                return fail(answer) if isinstance(answer, Exception) else succeed(answer)
        return Directory()

    def test_retries_a_silent_directory_until_complete(self):
        from twisted.internet.task import Clock
        from nymtx.localnet import poll_topology
        clock = Clock()
        answers = [OSError("refused"), "partial", "whole"]
        d = defer_from(poll_topology(
            clock, self.directory(answers),
            lambda t: None if t == "whole" else "not yet", timeout=5, poll=0.1))
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), "whole")

    def test_times_out_with_the_last_reason(self):
        from twisted.internet.task import Clock
        from nymtx.localnet import poll_topology
        clock = Clock()
        answers = ["partial"] * 100
        d = defer_from(poll_topology(
            clock, self.directory(answers), lambda t: "2 gateways missing", timeout=1, poll=0.1))
        for _ in range(20):
            clock.advance(0.1)
        f = self.failureResultOf(d, LocalNetError)
        self.assertEqual(str(f.value), "2 gateways missing after 1 s")

    def test_check_gives_up_early(self):
        from twisted.internet.task import Clock
        from nymtx.localnet import poll_topology

        def check():
            raise LocalNetError("mix-1-1 exited with code 1")
        d = defer_from(poll_topology(Clock(), self.directory([]), lambda t: None, 5, check=check))
        self.assertIn("mix-1-1 exited", str(self.failureResultOf(d, LocalNetError).value))


class WordingTests(SynchronousTestCase):
    def test_an_incomplete_topology_counts_in_words(self):
        from twisted.internet.defer import succeed
        from twisted.internet.task import Clock
        from nymtx.keys import KeyPair
        from nymtx.topology import Topology

        class Running:
            running = True

            def __init__(self):
                self.keys = KeyPair.generate()

        class Empty:
            def get_topology(self):
                return succeed(Topology([], []))
        clock = Clock()
        network = LocalNetwork(clock, self.mktemp(), plan(1, 1, 0))
        network.node_services = {n: Running() for n in ("mix-1-1", "mix-2-1", "gateway-1")}
        d = defer_from(network._wait_for_topology(Empty(), timeout=1, poll=0.5))
        clock.pump([0.5] * 4)
        self.assertEqual(str(self.failureResultOf(d, LocalNetError).value),
                         "the topology is still incomplete: 2 mixnodes and 1 gateway"
                         " not announced yet after 1 s")


def defer_from(coroutine):
    from twisted.internet.defer import Deferred
    return Deferred.fromCoroutine(coroutine)


class LocalRegistrationTests(TestCase):
    timeout = 60

    async def _register_many(self):
        from twisted.internet import reactor
        from nymtx.gateway.link import register
        from nymtx.keys import KeyPair
        from nymtx.localnet import LocalNetwork
        net = LocalNetwork(reactor, self.mktemp(), plan(1, 1, 0))
        net.startService()
        self.addCleanup(net.stopService)
        await net.whenReady()
        topology = await net.wait_for_topology()
        [gateway] = topology.gateways
        # far more than a public gateway's burst from one address (3), at once
        for _ in range(12):
            await register(reactor, gateway.client_listener, KeyPair.generate(),
                           gateway.public_key)

    def test_a_local_network_takes_many_registrations_from_one_address(self):
        from twisted.internet.defer import Deferred
        return Deferred.fromCoroutine(self._register_many())
