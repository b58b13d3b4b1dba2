"""Replays across restarts: the gateway's and the mixnode's replay caches
are kept in a file beside their keys, so a packet captured before a restart
is refused after it (issue 15: 5 of 5 were delivered again)."""

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.client.core import IDENTIFIER
from nymtx.gateway import cli as gateway_cli, tap as gateway_tap
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks
from nymtx.mixnode import tap as mixnode_tap
from nymtx.mixnode.config import init_mixnode, load_config
from nymtx.sphinx import build_packet
from nymtx.topology import Hop
from nymtx.trust.replaylog import MAGIC, TAG_SIZE, PersistentReplayCache, ReplayLogError

from tests.test_trustwire_nodes import run
from tests.ports import free_ports


def tag(n):
    return n.to_bytes(TAG_SIZE, "big")


class ReplayLogTests(SynchronousTestCase):

    def setUp(self):
        self.path = self.mktemp()

    def cache(self, capacity=100):
        cache = PersistentReplayCache(self.path, capacity)
        self.addCleanup(cache.close)
        return cache

    def test_tags_survive_a_restart(self):
        first = self.cache()
        self.assertTrue(first.insert(tag(1)))
        self.assertTrue(first.insert(tag(2)))
        self.assertFalse(first.insert(tag(1)))
        first.close()
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), MAGIC + tag(1) + tag(2))
        second = self.cache()
        self.assertFalse(second.insert(tag(1)))
        self.assertFalse(second.insert(tag(2)))
        self.assertTrue(second.insert(tag(3)))
        self.assertEqual(len(second), 3)

    def test_a_torn_last_tag_is_dropped(self):
        with open(self.path, "wb") as f:
            f.write(MAGIC + tag(1) + tag(2)[:5])
        cache = self.cache()
        self.assertIn(tag(1), cache)
        self.assertEqual(len(cache), 1)
        self.assertEqual(os.path.getsize(self.path), len(MAGIC) + TAG_SIZE)

    def test_a_file_that_is_not_a_log_is_refused_and_kept(self):
        with open(self.path, "wb") as f:
            f.write(b"SQLite format 3\x00 precious")
        e = self.assertRaises(ReplayLogError, PersistentReplayCache, self.path)
        self.assertIn(self.path, str(e))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"SQLite format 3\x00 precious")

    def test_the_file_stays_bounded(self):
        cache = self.cache(capacity=10)
        for n in range(1000):
            cache.insert(tag(n))
        self.assertLessEqual(os.path.getsize(self.path), len(MAGIC) + 20 * TAG_SIZE)
        cache.close()
        again = self.cache(capacity=10)
        # the newest are refused still; the cache's own bound applies
        self.assertFalse(again.insert(tag(999)))
        self.assertTrue(again.insert(tag(0)))

    def test_a_write_failure_keeps_the_node_running(self):
        cache = self.cache()
        os.close(cache._fd)  # as a disk that went away would
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        cache._fd = os.open(os.devnull, os.O_RDONLY)
        self.assertTrue(cache.insert(tag(7)))
        self.assertFalse(cache.insert(tag(7)))
        self.assertTrue([e for e in events if "cannot write" in formatEvent(e)])


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class RestartTests(TestCase):
    timeout = 60

    def test_the_gateway_refuses_packets_captured_before_its_restart(self):
        return Deferred.fromCoroutine(self._gateway())

    async def start_gateway(self, home):
        options = gateway_tap.Options()
        options.parseOptions(["--id", "G1", "--home", home])
        gateway = gateway_tap.makeService(options, reactor)
        gateway.startService()
        await gateway.whenListening()
        return gateway

    async def _gateway(self):
        home = self.mktemp()
        port = free_ports(2)
        code, _, err = run(gateway_cli.main, "init", "--id", "G1", "--home", home,
                           "--mix-port", str(port), "--clients-port", str(port + 1),
                           "--host", "127.0.0.1", "--directory", "")
        self.assertEqual(code, 0, err)
        gateway = await self.start_gateway(home)
        bob = KeyPair.generate()
        gateway.store.register(bob.public_key, bytes(32))
        address = NodeAddress.parse(f"127.0.0.1:{port}")
        hop = Hop(address=address.to_bytes(), public_key=gateway.keys.public_key)
        captured = [build_packet([hop], bob.public_key, IDENTIFIER, b"mail %d" % i, [0])
                    for i in range(5)]
        links = PacketLinks(reactor)
        self.addCleanup(links.stop)
        for packet in captured:
            links.send(address, packet)
        for _ in range(100):
            if gateway.store.stored == 5:
                break
            await sleep(0.05)
        self.assertEqual(gateway.store.stored, 5)
        await gateway.stopService()

        gateway = await self.start_gateway(home)
        self.addCleanup(gateway.stopService)
        for packet in captured:
            links.send(address, packet)
        for _ in range(100):
            if gateway.handler.received == 5:
                break
            await sleep(0.05)
        await sleep(0.1)
        self.assertEqual(gateway.handler.received, 5)
        self.assertEqual(gateway.store.stored, 0)
        self.assertEqual(dict(gateway.handler.dropped), {"replay": 5})

    def test_the_mixnode_refuses_packets_captured_before_its_restart(self):
        return Deferred.fromCoroutine(self._mixnode())

    async def start_mixnode(self, home):
        options = mixnode_tap.Options()
        options.parseOptions(["--id", "M1", "--home", home])
        node = mixnode_tap.makeService(options, reactor)
        node.startService()
        await node.whenListening()
        return node

    async def _mixnode(self):
        home = self.mktemp()
        port = free_ports(2)
        init_mixnode("M1", 1, port=port, directory="", root=home)
        keys = load_config("M1", home).load_keys()
        node = await self.start_mixnode(home)
        address = NodeAddress.parse(f"127.0.0.1:{port}")
        route = [Hop(address=address.to_bytes(), public_key=keys.public_key),
                 Hop(address=NodeAddress.parse(f"127.0.0.1:{port + 1}").to_bytes(),
                     public_key=KeyPair.generate().public_key)]
        captured = [build_packet(route, KeyPair.generate().public_key, IDENTIFIER, b"x",
                                 [0, 0]) for _ in range(5)]
        links = PacketLinks(reactor)
        self.addCleanup(links.stop)
        for packet in captured:
            links.send(address, packet)
        for _ in range(100):
            if node.node.received == 5:
                break
            await sleep(0.05)
        self.assertNotIn("ReplayError", node.node.dropped)
        await node.stopService()
        node.node.replay_cache.close()

        node = await self.start_mixnode(home)
        self.addCleanup(lambda: node.node.replay_cache.close())
        self.addCleanup(node.stopService)
        for packet in captured:
            links.send(address, packet)
        for _ in range(100):
            if node.node.received == 5:
                break
            await sleep(0.05)
        self.assertEqual(node.node.dropped.get("ReplayError"), 5)




class ReplayLogVectorTests(SynchronousTestCase):

    def test_the_vector_in_docs_trust_md(self):
        path = self.mktemp()
        cache = PersistentReplayCache(path)
        cache.insert(tag(1))
        cache.insert(tag(2))
        cache.close()
        with open(path, "rb") as f:
            data = f.read()
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "trust.md")
        with open(docs, encoding="utf-8") as f:
            text = f.read()
        block = "\n".join(data[i:i + 16].hex() for i in range(0, len(data), 16))
        self.assertIn("```hex\n" + block + "\n```", text)
