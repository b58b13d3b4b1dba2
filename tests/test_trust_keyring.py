"""Sphinx key rotation wired into the mixnode (nymtx.trust.keyring), on a
Clock: the next key announced ahead, old and new accepted for the overlap,
a replay cache per key that survives a restart, clients switching at the
start."""

import os

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair, decode_key
from nymtx.mixnode.node import Mixnode
from nymtx.sphinx import Hop, ReplayCache, build_packet
from nymtx.sphinx.errors import HeaderMacError, ReplayError
from nymtx.trust.agreement import merge
from nymtx.trust.document import parse_document, sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.keyring import (
    KeyringError, SphinxKeyring, enable_rotation, parse_key_name)
from nymtx.trust.replaylog import PersistentReplayCache
from nymtx.trust.presence import ROLE_MIXNODE, parse_signed_mixnode
from nymtx.trust.client import SigningDirectoryClient

NS = 1_000_000_000
HOUR = 3600 * NS
T0 = 1_700_000_000.0
NEXT_HOP = NodeAddress.parse("127.0.0.1:9")


def packet_for(public_key, text=b"hello"):
    route = [Hop(NodeAddress.parse("127.0.0.1:1").to_bytes(), public_key),
             Hop(NEXT_HOP.to_bytes(), KeyPair.generate().public_key)]
    return build_packet(route, bytes(32), bytes(16), text, [0, 0])


class Ring:
    """A keyring in a folder, restartable."""

    def __init__(self, case):
        self.clock = Clock()
        self.clock.advance(T0)
        self.home = case.mktemp()
        os.makedirs(self.home)
        self.first = KeyPair.generate()

    def open(self, **kwargs):
        replays = PersistentReplayCache(os.path.join(self.home, "replay_tags.bin"), 1000)
        kwargs.setdefault("interval", 24 * HOUR)
        kwargs.setdefault("lead", HOUR)
        kwargs.setdefault("overlap", HOUR // 2)
        return SphinxKeyring(self.clock, os.path.join(self.home, "sphinx_keys"), self.first,
                             replays, capacity=1000, **kwargs)

    def now(self):
        return int(self.clock.seconds() * NS)

    def step(self, ns, keyring, steps=100):
        """Advance *ns* in small steps, the node announcing at each."""
        for _ in range(steps):
            self.clock.advance(ns / NS / steps)
            keyring.announced(self.now())


class KeyringTests(SynchronousTestCase):

    def test_the_next_key_is_announced_ahead_and_accepted(self):
        ring = Ring(self)
        keyring = ring.open()
        now = ring.now()
        self.assertEqual(keyring.in_use(now), ring.first.public_key)
        nxt, start = keyring.announced(now)
        self.assertEqual(start, now + 24 * HOUR)
        self.assertEqual(keyring.accepted(now), [ring.first.public_key, nxt])
        names = sorted(os.listdir(os.path.join(ring.home, "sphinx_keys")))
        self.assertEqual(names, [f"{start:020d}.{s}" for s in ("private", "public",
                                                                 "replays")])
        # both keys decrypt now: senders with a clock ahead use the next one
        for key in (ring.first.public_key, nxt):
            keyring.process(packet_for(key))
        self.assertRaises(HeaderMacError, keyring.process,
                          packet_for(KeyPair.generate().public_key))

    def test_old_and_new_for_the_overlap_then_the_old_is_retired(self):
        ring = Ring(self)
        keyring = ring.open()
        second, start = keyring.announced(ring.now())
        ring.step(24 * HOUR, keyring)
        now = ring.now()
        self.assertEqual(keyring.in_use(now), second)
        third, third_start = keyring.announced(now)
        self.assertEqual(third_start, start + 24 * HOUR)
        old = packet_for(ring.first.public_key)
        keyring.process(old)                    # within the overlap
        ring.step(HOUR // 2, keyring)
        self.assertEqual(keyring.accepted(ring.now()), [second, third])
        self.assertRaises(HeaderMacError, keyring.process, packet_for(ring.first.public_key))
        # the second key's turn ends too; its files go with it
        ring.step(24 * HOUR + HOUR // 2, keyring)
        self.assertNotIn(second, keyring.accepted(ring.now()))
        names = os.listdir(os.path.join(ring.home, "sphinx_keys"))
        self.assertFalse([n for n in names if n.startswith(f"{start:020d}")], names)
        # the node's own first key file is its config's: it stays
        self.assertTrue(os.path.exists(os.path.join(ring.home, "replay_tags.bin")))

    def test_a_packet_captured_before_a_restart_is_refused_after_it(self):
        ring = Ring(self)
        keyring = ring.open()
        second, _ = keyring.announced(ring.now())
        captured = [packet_for(ring.first.public_key, b"one"),
                    packet_for(second, b"two")]
        for p in captured:
            keyring.process(p)
        keyring.close()
        again = ring.open()
        self.assertEqual(again.announced(ring.now())[0], second)
        for p in captured:
            self.assertRaises(ReplayError, again.process, p)
        # fresh packets still go through, under either key
        again.process(packet_for(second, b"three"))
        again.process(packet_for(ring.first.public_key, b"four"))

    def test_a_key_retired_while_the_node_was_down(self):
        ring = Ring(self)
        keyring = ring.open()
        second, start = keyring.announced(ring.now())
        keyring.close()
        ring.clock.advance(3 * 24 * 3600)
        again = ring.open()
        now = ring.now()
        # the first key is retired; the second stays in use (what clients
        # hold) until a third, made now, starts a lead later: no key is ever
        # used from a time already past
        self.assertEqual(again.in_use(now), second)
        third, third_start = again.announced(now)
        self.assertEqual(third_start, now + HOUR)
        self.assertEqual(again.accepted(now), [second, third])

    def test_a_damaged_key_file_is_named(self):
        ring = Ring(self)
        keyring = ring.open()
        _, start = keyring.announced(ring.now())
        keyring.close()
        path = os.path.join(ring.home, "sphinx_keys", f"{start:020d}.private")
        with open(path, "w") as f:
            f.write("not a key\n")
        e = self.assertRaises(KeyringError, ring.open)
        self.assertIn(f"{start:020d}.private", str(e))

    def test_a_damaged_replay_log_is_named(self):
        ring = Ring(self)
        keyring = ring.open()
        _, start = keyring.announced(ring.now())
        keyring.close()
        with open(os.path.join(ring.home, "sphinx_keys", f"{start:020d}.replays"), "wb") as f:
            f.write(b"garbage")
        e = self.assertRaises(KeyringError, ring.open)
        self.assertIn(".replays", str(e))

    def test_bad_parameters(self):
        ring = Ring(self)
        self.assertRaises(ValueError, ring.open, lead=0)
        self.assertRaises(ValueError, ring.open, lead=25 * HOUR)
        self.assertRaises(ValueError, ring.open, overlap=25 * HOUR)

    @given(st.text(max_size=40))
    def test_key_names(self, name):
        start = parse_key_name(name)
        if start is not None:
            self.assertTrue(name.endswith(".private"))
            self.assertTrue(0 < start < 2 ** 64)
        self.assertEqual(parse_key_name(f"{12345:020d}.private"), 12345)
        self.assertIsNone(parse_key_name(f"{0:020d}.private"))
        self.assertIsNone(parse_key_name("1.public"))


class _Links:
    def __init__(self):
        self.sent = {}
        self.dropped = self.evicted = 0
        self.out = []

    def send(self, address, packet):
        self.out.append((address, packet))


class _Directory:
    def __init__(self):
        self.bodies = []
        self.metrics = []

    def announce_mixnode(self, body):
        from twisted.internet.defer import succeed
        self.bodies.append(body)
        return succeed(None)

    def report_metrics(self, body):
        from twisted.internet.defer import succeed
        self.metrics.append(body)
        return succeed(None)


class NodeTests(SynchronousTestCase):
    """A mixnode with a keyring forwards under every accepted key; what it
    announces makes clients switch at the start."""

    def test_the_mixnode_forwards_under_both_keys(self):
        ring = Ring(self)
        keyring = ring.open()
        links = _Links()
        node = Mixnode(ring.clock, ring.first.private_key, links, ReplayCache(10),
                       keyring=keyring)
        second, _ = keyring.announced(ring.now())
        node.handle_packet(packet_for(ring.first.public_key))
        node.handle_packet(packet_for(second))
        node.handle_packet(packet_for(KeyPair.generate().public_key))
        self.assertEqual(len(links.out), 2)
        self.assertEqual(node.dropped, {"HeaderMacError": 1})

    def test_workers_are_told_the_keys(self):
        from tests.test_mixnode_workers import FakeSpawner
        from nymtx.mixnode import worker
        ring = Ring(self)
        keyring = ring.open()
        spawner = FakeSpawner()
        node = Mixnode(ring.clock, ring.first.private_key, _Links(), ReplayCache(10),
                       keyring=keyring, workers=2, spawn=spawner)
        node.start()
        second, start = keyring.announced(ring.now())

        def told(process):
            head = bytes(process.written[:5])
            self.assertEqual(head[:4], bytes(4))
            keys = worker.decode_keys(head[4], bytes(process.written[5:5 + head[4] * 33]))
            del process.written[:5 + head[4] * 33]
            return [k for _, k in keys]
        for process in spawner.processes:
            self.assertEqual(process.key, ring.first.private_key)
            self.assertEqual(told(process), [ring.first.private_key,
                                             keyring.held()[1][1]])
        # the switch: the key in use goes first; after the overlap the old one goes
        ring.step(start - ring.now() + HOUR, keyring)
        for process in spawner.processes:
            frames = []
            while process.written:
                frames.append(told(process))
            self.assertEqual(frames[-1][0], keyring.held()[0][1])
            self.assertNotIn(ring.first.private_key, frames[-1])
        self.assertEqual(keyring.in_use(ring.now()), second)
        # a worker started again is told the keys right after its start key
        spawner.processes[0].signalProcess("KILL")
        ring.clock.advance(1)
        restarted = spawner.processes[-1]
        self.assertEqual(len(spawner.processes), 3)
        self.assertEqual(told(restarted), [k for _, k in keyring.held()])

    def test_announced_keys_and_the_clients_switch_at_the_start(self):
        ring = Ring(self)
        keyring = ring.open()
        identity = IdentityKey.generate()
        inner = _Directory()
        directory = SigningDirectoryClient(inner, identity, ring.clock, schedule=keyring)
        presence = {"host": "127.0.0.1:1789", "pubKey": ring.first.public_text, "layer": 1,
                    "version": "0.5.0", "location": "here"}
        directory.announce_mixnode(presence)
        second, start = keyring.announced(ring.now())
        signed = parse_signed_mixnode(inner.bodies[-1])
        self.assertEqual(signed.presence.sphinx_key, ring.first.public_key)
        self.assertEqual(signed.presence.next_sphinx_key, second)
        self.assertEqual(signed.presence.next_key_from, start)
        self.assertEqual(signed.presence.role, ROLE_MIXNODE)
        # shortly before the switch the node announces again
        ring.clock.advance((start - ring.now()) / NS - 10)
        directory.announce_mixnode(presence)
        signed = parse_signed_mixnode(inner.bodies[-1])
        self.assertEqual(signed.presence.next_sphinx_key, second)
        directory_key = IdentityKey.generate()

        def client_key(at):
            document = sign_topology(directory_key, at, at, [signed], [])
            [node] = merge([parse_document(document.to_json())], 1, at).topology.mixnodes
            return node.public_key
        self.assertEqual(client_key(start - 1), ring.first.public_key)
        self.assertEqual(client_key(start), second)
        # metrics name the key in use, which the directory holds for the node
        directory.report_metrics({"pubKey": ring.first.public_text, "received": 1,
                                  "sent": 1, "dropped": {}})
        self.assertEqual(decode_key(inner.metrics[-1]["pubKey"]), ring.first.public_key)

    def test_enable_rotation_on_a_service(self):
        from nymtx.mixnode.service import MixnodeService
        ring = Ring(self)
        service = MixnodeService(ring.clock, ring.first, 1, "tcp:0", "127.0.0.1",
                                 directory=SigningDirectoryClient(_Directory(),
                                                                  IdentityKey.generate(),
                                                                  ring.clock))
        keyring = enable_rotation(service, ring.home, ring.clock, 4 * HOUR)
        self.assertIs(service.node.keyring, keyring)
        self.assertIs(service.directory.schedule, keyring)
        self.assertEqual((keyring.lead, keyring.overlap), (HOUR, HOUR // 2))
