"""nym-localnet --directories 3: the directories sign, the nodes announce
to each, the clients need two of three; with one directory stopped and one
lying (its own key, a compromised directory), every client still routes on
the real nodes only and mail flows. Real sockets throughout."""

import json
import sys

import attrs

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from nymtx.client.connect import connect
from nymtx.client.embed import init_client
from nymtx.keys import KeyPair
from nymtx.localnet import tap
from nymtx.localnet.model import LocalNetError, Timing, plan
from nymtx.localnet.network import LocalNetwork
from nymtx.trust.document import sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.localnet import client_settings, directory_identity, more_directories
from nymtx.trust.presence import NS, ROLE_GATEWAY, ROLE_MIXNODE, make_presence
from tests.ports import free_ports

FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=200)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class _Liar(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body = b"{}"

    def render_GET(self, request):
        return self.body


class OptionTests(SynchronousTestCase):

    def test_the_flag(self):
        options = tap.Options()
        options.parseOptions(["--directories", "3", "--base-port", "36500",
                              "--home", self.mktemp()])
        self.assertEqual(options["directories"], 3)
        for argv, why in [(["--directories", "0"], "1 to 9"),
                          (["--directories", "x"], "whole number"),
                          (["--directories", "3", "--node", "directory-4", "--base-port",
                            "36500"], "not a node")]:
            e = self.assertRaises(usage.UsageError, tap.Options().parseOptions,
                                  argv + ["--home", self.mktemp()])
            self.assertIn(why, str(e))

    def test_with_netns_and_plain_links(self):
        options = tap.Options()
        options.parseOptions(["--directories", "3", "--netns", "--home", self.mktemp()])
        self.assertEqual((options["directories"], options["insecure-links"]), (3, False))
        options = tap.Options()
        options.parseOptions(["--insecure-links", "--home", self.mktemp()])
        self.assertTrue(options["insecure-links"])

    def test_insecure_links_reach_every_runner(self):
        from nymtx.localnet.processes import ProcessNetwork
        for argv, secure in ((["--insecure-links"], False), ([], True)):
            options = tap.Options()
            options.parseOptions(argv + ["--base-port", "36500", "--home", self.mktemp()])
            network = tap.makeService(options, reactor=reactor, exit_with=lambda code: None)
            self.assertEqual((network.secure, network.signed), (secure, secure))
            children = ProcessNetwork(reactor, options)
            self.assertEqual(children.secure, secure)
            command = children._command(children.nodes[1])
            self.assertEqual("--insecure-links" in command, not secure)
            self.assertEqual(command[command.index("--directories") + 1], "1")

    def test_a_netns_plan_lists_its_directories_already(self):
        from nymtx.localnet.netns import encode_plan
        nodes = [attrs.evolve(n, host=f"10.231.7.{10 + i}")
                 for i, n in enumerate(more_directories(plan(1, 1, 0), 3))]
        options = tap.Options()
        options.parseOptions(["--netns-plan", encode_plan(nodes, Timing()), "--node",
                              "directory-3", "--directories", "3", "--home", self.mktemp()])
        self.assertEqual(options["directories"], 3)
        # and the network of that node does not add them again
        self.assertEqual(more_directories(options["plan"], 3), nodes)
        self.assertRaises(LocalNetError, more_directories, nodes, 2)

    def test_a_child_of_processes_may_be_an_extra_directory(self):
        options = tap.Options()
        options.parseOptions(["--directories", "3", "--processes", "--base-port", "36500",
                              "--node", "directory-3", "--home", self.mktemp()])
        self.assertEqual(options["node"], "directory-3")

    def test_extra_directories_take_the_ports_after_the_plan(self):
        nodes = more_directories(plan(1, 1, 36500), 3)
        self.assertEqual([(n.name, n.port) for n in nodes if n.kind == "directory"],
                         [("directory", 36500), ("directory-2", 36506),
                          ("directory-3", 36507)])
        self.assertEqual(
            {n.port for n in more_directories(plan(1, 1, 0), 3) if n.kind == "directory"},
            {0})
        self.assertRaises(LocalNetError, more_directories, plan(1, 1, 65529), 3)


class ThreeDirectoriesTests(TestCase):
    timeout = 120

    def test_one_stopped_and_one_lying(self):
        return Deferred.fromCoroutine(self._scenario())

    def now(self):
        return int(reactor.seconds() * NS)

    async def _scenario(self):
        home = self.mktemp()
        network = LocalNetwork(reactor, home, plan(1, 1, 0),
                               Timing(presence_interval=0.2, metrics_interval=0.5),
                               directories=3)
        network.startService()
        self.addCleanup(network.stopService)
        await network.whenReady()
        self.assertEqual(len(network.directory_urls), 3)
        # each directory lists every node, signed by its own key (ready means
        # two of them do: the third may be a beat behind, and a gateway's
        # presence may reach a directory after the mixnodes' do)
        for _ in range(100):
            documents = [r.signed_topology().document for r in network.registries.values()]
            if all((len(d.mixnodes), len(d.gateways)) == (3, 1) for d in documents):
                break
            await sleep(0.05)
        keys = set()
        for name, registry in network.registries.items():
            document = registry.signed_topology().document
            self.assertEqual((len(document.mixnodes), len(document.gateways)), (3, 1))
            self.assertEqual(document.directory_key,
                             directory_identity(network, name).public_key)
            keys.add(document.directory_key)
        self.assertEqual(len(keys), 3)

        root = self.mktemp()
        clients = {}
        for name in ("Alice", "Bob"):
            await init_client(reactor, root, name, **client_settings(network))
            clients[name] = await connect(reactor, root, name, **FAST)
            self.addCleanup(clients[name].stop)
        alice, bob = clients["Alice"], clients["Bob"]
        await network.wait_for_clients([alice.core.keys.public_key, bob.core.keys.public_key])
        await sleep(0.5)  # a refresh that holds all three directories' documents

        # directory-3 stops; directory-2 is taken over and lies with its key
        await network.stop_node("directory-3")
        liar_port = network.nodes["directory-2"].port
        await network.stop_node("directory-2")
        liar = _Liar()
        port = await serverFromString(
            reactor, f"tcp:{liar_port}:interface=127.0.0.1").listen(Site(liar))
        self.addCleanup(port.stopListening)
        liar_key = directory_identity(network, "directory-2")
        attacker = IdentityKey.generate()
        fakes = [make_presence(IdentityKey.generate(), ROLE_MIXNODE,
                               KeyPair.generate().public_key, f"127.0.0.1:{36600 + i}",
                               self.now(), "0.5.0", layer=2) for i in range(10)]
        honest = network.registries["directory"]

        def lie():
            now = self.now()
            held = honest.signed_topology().document
            fake_gateway = make_presence(
                attacker, ROLE_GATEWAY, KeyPair.generate().public_key, "127.0.0.1:36620",
                now, "0.5.0", client_listener="127.0.0.1:36621",
                clients=[alice.core.keys.public_key, bob.core.keys.public_key])
            liar.body = sign_topology(
                liar_key, now, now,
                [p for p in held.mixnodes if p.presence.layer != 2] + fakes,
                [fake_gateway]).to_bytes()
        lie()
        await sleep(0.6)  # the clients have refreshed against the liar

        sent = [f"message {i}" for i in range(5)]
        for text in sent:
            lie()
            await alice.send(bob.address, text.encode())
        received = []
        for _ in range(200):
            received.extend(bob.fetch())
            if len(received) >= len(sent):
                break
            await sleep(0.05)
        self.assertEqual(sorted(m.decode() for m in received), sorted(sent))
        real_mix = {s.keys.public_key for n, s in network.node_services.items()
                    if network.nodes[n].kind == "mixnode"}
        real_gateway = [s.keys.public_key for n, s in network.node_services.items()
                        if network.nodes[n].kind == "gateway"]
        for client in (alice, bob):
            topology = client.core.topology
            self.assertEqual({m.public_key for m in topology.mixnodes}, real_mix)
            self.assertEqual([g.public_key for g in topology.gateways], real_gateway)


class CommandTests(TestCase):
    """nym-localnet --directories 3 prints what a client pins."""

    timeout = 60

    def test_prints_the_directories_and_their_keys(self):
        return Deferred.fromCoroutine(self._command())

    async def _command(self):
        import os
        import signal
        home = self.mktemp()
        # run the command, read until the JSON line, then stop it
        from twisted.internet.protocol import ProcessProtocol

        class Watch(ProcessProtocol):
            def __init__(self):
                self.out = b""
                self.ready = Deferred()
                self.ended = Deferred()

            def outReceived(self, data):
                self.out += data
                if b'"directory_keys"' in self.out and not self.ready.called:
                    self.ready.callback(None)

            def processEnded(self, reason):
                self.ended.callback(None)
                if not self.ready.called:
                    self.ready.errback(RuntimeError(self.out.decode()))
        watch = Watch()
        env = dict(os.environ)
        reactor.spawnProcess(watch, sys.executable,
                             [sys.executable, "-m", "nymtx.localnet", "--directories", "3",
                              "--base-port", str(free_ports(16)), "--home", home], env=env)
        try:
            await watch.ready
        finally:
            watch.transport.signalProcess(signal.SIGINT)
            await watch.ended
        line = [l for l in watch.out.decode().splitlines() if l.startswith("{")][-1]
        data = json.loads(line)
        self.assertEqual(len(data["directories"]), 3)
        self.assertEqual(len(data["directory_keys"]), 3)
        self.assertIn("--directory-keys " + ",".join(data["directory_keys"]),
                      watch.out.decode())


class ProcessesTests(SynchronousTestCase):
    """nym-localnet --processes --directories 3: one process per node, three
    signing directories (each its own process), every node announced to
    each, and the command prints what clients pin."""

    def test_three_directories_in_processes(self):
        import os
        import subprocess
        import time
        import urllib.request
        from nymtx.trust.document import parse_document
        from nymtx.trust.identity import decode_identity_key
        base = free_ports(12)
        command = [sys.executable, "-m", "nymtx.localnet", "--processes", "--directories",
                   "3", "--base-port", str(base), "--home", self.mktemp()]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=os.environ)

        def stop():
            child.terminate()
            child.communicate(timeout=30)
        self.addCleanup(stop)
        announcement, seen = None, []
        deadline = time.monotonic() + 60
        while announcement is None and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("{") and '"directory_keys"' in line:
                announcement = json.loads(line)
        self.assertIsNotNone(announcement, "".join(seen[-20:]))
        urls, keys = announcement["directories"], announcement["directory_keys"]
        self.assertEqual(urls, [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 6}",
                                f"http://127.0.0.1:{base + 7}"])
        for url, key in zip(urls, keys):
            for _ in range(100):
                with urllib.request.urlopen(url + "/api/presence/topology?clients=none",
                                            timeout=5) as answer:
                    signed = parse_document(answer.read())
                d = signed.document
                if (len(d.mixnodes), len(d.gateways)) == (3, 1):
                    break
                time.sleep(0.1)
            self.assertEqual(d.directory_key, decode_identity_key(key))
            self.assertEqual((len(d.mixnodes), len(d.gateways)), (3, 1), url)
