"""nym-localnet is secure by default: its directory signs (one directory
too), its nodes pin the directory keys and speak authenticated mix links
(docs/mix-link.md), and the clients it makes pin the keys. The bytes of a
mix link are tapped where the receiving node reads them from its socket:
Noise frames, not the 1372-byte Sphinx packets the node processes; with
``secure=False`` (``--insecure-links``) the same tap sees the packets
themselves. A plain packet sent to a node's mix port is refused. Real
sockets; ``--processes`` runs real processes."""

import json
import os
import socket
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.client.connect import connect
from nymtx.client.core import IDENTIFIER
from nymtx.client.embed import init_client
from nymtx.directory.registry import Registry
from nymtx.directory.signed import SignedRegistry
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks
from nymtx.localnet import LocalNetwork, Timing, plan
from nymtx.sphinx import PACKET_SIZE, build_packet
from nymtx.topology import Hop
from nymtx.trust.client import TrustedDirectoryClient
from nymtx.trust.localnet import client_settings, directory_identity
from nymtx.trust.mixlink import FRAME_SIZE, MESSAGE1_SIZE, MESSAGE3_SIZE
from tests.ports import free_ports

FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=200)
TIMING = Timing(presence_interval=0.3, metrics_interval=1.0)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


def tap(factory):
    """What every connection to *factory* (a mix listener's factory) brings,
    as read from the socket, and the packets its node then reads: wrapping
    buildProtocol, the protocols' dataReceived and, behind a mix link
    (an AuthenticatingFactory), the inner factory's as well."""
    wire, packets = [], []

    def recording(build, into):
        def buildProtocol(addr):
            protocol = build(addr)
            if protocol is not None:
                chunks = bytearray()
                into.append(chunks)
                received = protocol.dataReceived

                def dataReceived(data):
                    chunks.extend(data)
                    return received(data)
                protocol.dataReceived = dataReceived
            return protocol
        return buildProtocol
    inner = getattr(factory, "wrapped", None)
    factory.buildProtocol = recording(factory.buildProtocol, wire)
    if inner is not None:
        inner.buildProtocol = recording(inner.buildProtocol, packets)
    else:
        packets = wire  # a plain listener: what it reads is the packets
    return wire, packets


class DefaultNetworkTests(TestCase):
    timeout = 120

    def test_mix_links_carry_noise_frames(self):
        return Deferred.fromCoroutine(self._scenario(secure=True))

    def test_insecure_links_carry_the_packets_themselves(self):
        return Deferred.fromCoroutine(self._scenario(secure=False))

    async def _scenario(self, secure):
        home = self.mktemp()
        extra = {} if secure else {"secure": False}
        network = LocalNetwork(reactor, home, plan(1, 1, 0), TIMING, **extra)
        network.startService()
        self.addCleanup(network.stopService)
        await network.whenReady()
        services = network.node_services
        layer2, gateway = services["mix-2-1"], services["gateway-1"]
        if secure:
            # the one directory signs with its key; every node pins it
            self.assertIsInstance(network.registry, SignedRegistry)
            document = network.registry.signed_topology().document
            self.assertEqual(document.directory_key,
                             directory_identity(network, "directory").public_key)
            self.assertEqual((len(document.mixnodes), len(document.gateways)), (3, 1))
            self.assertEqual(set(network.authorities),
                             {"mix-1-1", "mix-2-1", "mix-3-1", "gateway-1"})
            # ready means: every node already knows every other's link key
            addresses = {NodeAddress(n.host, n.port) for n in network.nodes.values()
                         if n.kind != "directory"}
            for name, authority in network.authorities.items():
                self.assertEqual(set(authority.peers), addresses, name)
            port_factory = layer2.factory.wrappedFactory
            gateway_factory = gateway.mix_listener.factory.wrappedFactory
        else:
            self.assertIsInstance(network.registry, Registry)
            self.assertEqual(network.authorities, {})
            port_factory = layer2.factory.wrappedFactory
        wire, packets = tap(port_factory)

        settings = client_settings(network) if secure else {"directory_url":
                                                            network.directory_url}
        clients = []
        for name in ("Alice", "Bob"):
            config = await init_client(reactor, home, name, **settings)
            if secure:
                self.assertEqual(list(config.directory_keys), settings["directory_keys"])
            client = await connect(reactor, home, name, **FAST)
            self.addCleanup(client.stop)
            clients.append(client)
        alice, bob = clients
        if secure:
            self.assertIsInstance(alice.core.directory, TrustedDirectoryClient)
        await network.wait_for_clients([c.core.keys.public_key for c in clients])
        for _ in range(100):
            if alice.core.topology is not None and \
                    bob.core.keys.public_key in alice.core.topology.clients():
                break
            await sleep(0.05)
        sent = [f"message {i}" for i in range(5)]
        for text in sent:
            await alice.send(bob.address, text.encode())
        received = []
        for _ in range(200):
            received.extend(bob.fetch())
            if len(received) >= len(sent):
                break
            await sleep(0.05)
        self.assertEqual(sorted(m.decode() for m in received), sorted(sent))

        # what layer 1 sent layer 2, on the wire and as layer 2 read it
        self.assertEqual(len(wire), 1)  # one link, opened once
        raw = bytes(wire[0])
        plain = b"".join(bytes(p) for p in packets)
        self.assertGreaterEqual(len(plain) // PACKET_SIZE, 5)
        self.assertEqual(len(plain) % PACKET_SIZE, 0)
        if not secure:
            self.assertEqual(raw, plain)
            return
        # Noise: message 1, message 3, then one 1388-byte frame a packet
        frames, rest = divmod(len(raw) - MESSAGE1_SIZE - MESSAGE3_SIZE, FRAME_SIZE)
        self.assertEqual((rest, frames), (0, len(plain) // PACKET_SIZE))
        # and no packet crossed the wire as it is
        for i in range(0, len(plain), PACKET_SIZE):
            self.assertNotIn(plain[i:i + 64], raw)
        self.assertEqual(port_factory.refused, {})

        # plain packets sent to layer 2, and to the gateway, are refused
        attacker = PacketLinks(reactor)
        self.addCleanup(attacker.stop)
        route = [Hop(address=layer2.announce_address.to_bytes(),
                     public_key=layer2.keys.public_key)]
        [info] = alice.core.topology.gateways
        for _ in range(3):
            attacker.send(layer2.announce_address, build_packet(
                route, KeyPair.generate().public_key, IDENTIFIER, b"skip", [0]))
            attacker.send(info.address, build_packet(
                [Hop(address=info.address.to_bytes(), public_key=info.public_key)],
                bob.core.keys.public_key, IDENTIFIER, b"skip", [0]))
        for _ in range(100):
            if port_factory.refused and gateway_factory.refused:
                break
            await sleep(0.05)
        self.assertEqual(set(port_factory.refused), {"bad message 1"})
        self.assertEqual(set(gateway_factory.refused), {"bad message 1"})
        # (layer 2 goes on reading the clients' cover through layer 1: its
        # count grows) the refused connections never reached the node
        self.assertGreater(len(wire), 1)
        self.assertEqual(len(packets), 1)
        self.assertEqual(bob.fetch(), [])


class ProcessesTests(SynchronousTestCase):
    """nym-localnet --processes, secure by default: one process per node,
    the command prints the pins, a pinned client's mail flows, and a plain
    packet to layer 2's mix port is cut off."""

    def test_secure_by_default_in_processes(self):
        base = free_ports(8)
        home = self.mktemp()
        command = [sys.executable, "-m", "nymtx.localnet", "--processes",
                   "--base-port", str(base), "--home", home]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=os.environ)

        def stop():
            child.terminate()
            child.communicate(timeout=30)
        self.addCleanup(stop)
        announcement, seen = None, []
        deadline = time.monotonic() + 90
        while announcement is None and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("{"):
                announcement = json.loads(line)
        out = "".join(seen)
        self.assertIsNotNone(announcement, out)
        self.assertEqual(announcement["directories"], [f"http://127.0.0.1:{base}"])
        [key] = announcement["directory_keys"]
        self.assertIn(f"clients pin: nym-client init --id NAME --directory"
                      f" http://127.0.0.1:{base} --directory-keys {key}", out)
        self.assertIn("mix links: on", out)
        self.assertNotIn("nym-localnet-node: ready", out)  # the parent's cue, not shown

        # a plain packet to layer 2 (base + 2): the node closes the connection
        with socket.create_connection(("127.0.0.1", base + 2), timeout=10) as s:
            s.sendall(os.urandom(PACKET_SIZE))
            self.assertEqual(s.recv(100), b"")

        # a client pinned as printed: the mail flows through the processes
        code = subprocess.run(
            [sys.executable, "-m", "nymtx.client.cli", "init", "--id", "Alice", "--home",
             home, "--directory", f"http://127.0.0.1:{base}", "--directory-keys", key],
            capture_output=True, text=True, env=os.environ, timeout=60)
        self.assertEqual(code.returncode, 0, code.stderr)
        driver = subprocess.run(
            [sys.executable, "-c", _SELF_MAIL, home], capture_output=True, text=True,
            env=os.environ, timeout=90)
        self.assertEqual(driver.returncode, 0, driver.stderr)
        result = json.loads(driver.stdout.strip().splitlines()[-1])
        self.assertEqual(result["keys"], [key])
        self.assertEqual(sorted(result["received"]), [f"to myself {i}" for i in range(5)])


#: Alice (made by nym-client init above) sends 5 messages to herself through
#: the network, embedded; prints her pins and what came back
_SELF_MAIL = """
import json, sys
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from nymtx.client.connect import connect

async def main(reactor, home):
    alice = await connect(reactor, home, "Alice", average_packet_delay=5,
                          loop_cover_traffic_average_delay=100,
                          message_sending_average_delay=10, fetch_message_delay=50,
                          topology_refresh_rate=200)
    try:
        for _ in range(400):
            t = alice.core.topology
            if t is not None and alice.core.keys.public_key in t.clients():
                break
            await deferLater(reactor, 0.05, lambda: None)
        for i in range(5):
            await alice.send(alice.address, f"to myself {i}".encode())
        got = []
        for _ in range(400):
            got += [m.decode() for m in alice.fetch()]
            if len(got) >= 5:
                break
            await deferLater(reactor, 0.05, lambda: None)
        print(json.dumps({"keys": list(alice.config.directory_keys), "received": got}))
    finally:
        await alice.stop()

react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1])))
"""


class OneNodeTests(TestCase):
    """A node of --processes restarted while another node is down never
    holds a topology listing every node: it runs all the same (no READY
    line for a parent no longer waiting), instead of exiting."""

    timeout = 60

    def test_a_node_whose_peers_are_down_still_runs(self):
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        home = self.mktemp()
        nodes = plan(1, 1, free_ports(7))
        directory = LocalNetwork(reactor, home, nodes, TIMING, only="directory")
        directory.startService()
        self.addCleanup(directory.stopService)
        await directory.whenReady()
        self.assertIsNone(directory.links_ready)  # a directory has no links
        node = LocalNetwork(reactor, home, nodes, TIMING, only="mix-2-1")
        node.links_timeout = 1.0
        node.startService()
        self.addCleanup(node.stopService)
        await node.whenReady()
        self.assertIs(node.links_ready, False)
        self.assertTrue(node.node_services["mix-2-1"].running)
        # it knows itself, once its own presence is signed, and no one else
        self.assertLessEqual(set(node.authorities["mix-2-1"].peers),
                             {NodeAddress("127.0.0.1", nodes[2].port)})
