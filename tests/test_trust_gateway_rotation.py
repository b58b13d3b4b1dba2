"""A gateway rotates its final-hop Sphinx key (docs/trust.md, "Key
rotation", "On the gateway"), on a Clock with real files: its pubKey stays
its name, the key in use and the next one are announced beside it (signed),
clients route with them and switch at the start, the gateway accepts its
name key always and each rotated key for its period and overlap, each with
its own persisted replay log."""

import os
import random

from hypothesis import given, strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx import sphinx
from nymtx.addressing import NodeAddress
from nymtx.gateway import mix
from nymtx.gateway.mix import FinalHopHandler
from nymtx.gateway.store import MailboxStore
from nymtx.keys import KeyPair, encode_key
from nymtx.topology import GatewayInfo, MixNodeInfo, Topology
from nymtx.trust.agreement import merge
from nymtx.trust.client import SigningDirectoryClient
from nymtx.trust.document import parse_document, sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.keyring import SphinxKeyring
from nymtx.trust.presence import (
    ROLE_GATEWAY, PresenceError, make_presence, parse_signed_gateway,
    parse_signed_mixnode)
from nymtx.trust.replaylog import PersistentReplayCache

NS = 1_000_000_000
HOUR = 3600 * NS
T0 = 1_700_000_000.0
HOST = NodeAddress.parse("127.0.0.1:1789")


class _Directory:
    def __init__(self):
        self.bodies = []

    def announce_gateway(self, body):
        self.bodies.append(body)
        return succeed(None)


class Gateway:
    """A gateway's keyring, store and final-hop handler in a folder, restartable."""

    def __init__(self, case):
        self.case = case
        self.clock = Clock()
        self.clock.advance(T0)
        self.home = case.mktemp()
        os.makedirs(self.home)
        self.name = KeyPair.generate()
        self.bob = KeyPair.generate()

    def start(self):
        self.replays = PersistentReplayCache(os.path.join(self.home, "replay_tags.bin"), 1000)
        self.keyring = SphinxKeyring(self.clock, os.path.join(self.home, "sphinx_keys"),
                                     self.name, self.replays, interval=24 * HOUR, lead=HOUR,
                                     overlap=HOUR // 2, capacity=1000, keep_first=True)
        self.case.addCleanup(self.keyring.close)
        self.store = MailboxStore.open(self.clock, os.path.join(self.home, "gateway.sqlite"))
        self.case.addCleanup(self.store.close)
        self.store.register(self.bob.public_key, b"t" * 32)
        self.handler = FinalHopHandler(self.clock, self.name.private_key, self.store,
                                       replay_cache=self.replays, keyring=self.keyring)
        return self.handler

    def stop(self):
        self.store.close()
        self.keyring.close()

    def now(self):
        return int(self.clock.seconds() * NS)

    def packet(self, key, text=b"mail"):
        return sphinx.build_packet([sphinx.Hop(HOST.to_bytes(), key)], self.bob.public_key,
                                   bytes(16), text, [0])

    def step(self, ns, steps=50):
        for _ in range(steps):
            self.clock.advance(ns / NS / steps)
            self.keyring.announced(self.now())

    def stored(self):
        """Messages committed in this run."""
        self.store.flush()
        return self.store.stored


class GatewayKeyTests(SynchronousTestCase):

    def test_every_accepted_key_delivers_and_the_name_key_is_kept(self):
        gw = Gateway(self)
        handler = gw.start()
        second, start = gw.keyring.announced(gw.now())
        handler.packet_received(gw.packet(gw.name.public_key, b"name"))
        handler.packet_received(gw.packet(second, b"next"))
        handler.packet_received(gw.packet(KeyPair.generate().public_key))
        self.assertEqual(gw.stored(), 2)
        self.assertEqual(dict(handler.dropped), {mix.MALFORMED: 1})
        # past the switch and the overlap, and past the next switch: the
        # second key is retired, the name key still delivers (seed readers)
        gw.step(start - gw.now() + 24 * HOUR + HOUR)
        self.assertNotIn(second, gw.keyring.accepted())
        self.assertIn(gw.name.public_key, gw.keyring.accepted())
        handler.packet_received(gw.packet(second, b"late"))
        handler.packet_received(gw.packet(gw.name.public_key, b"name again"))
        handler.packet_received(gw.packet(gw.keyring.in_use(gw.now()), b"third"))
        self.assertEqual(gw.stored(), 4)
        self.assertEqual(dict(handler.dropped), {mix.MALFORMED: 2})
        # the retired key's files are gone, the name key's log stays
        self.assertTrue(os.path.exists(os.path.join(gw.home, "replay_tags.bin")))
        names = os.listdir(os.path.join(gw.home, "sphinx_keys"))
        self.assertNotIn(f"{start:020d}.private", names)

    def test_packets_captured_before_a_restart_are_refused_under_each_key(self):
        gw = Gateway(self)
        handler = gw.start()
        second, start = gw.keyring.announced(gw.now())
        gw.step(start - gw.now() + 1)  # the second key is in use
        self.assertEqual(gw.keyring.in_use(gw.now()), second)
        third, _ = gw.keyring.announced(gw.now())
        captured = [gw.packet(key, b"captured %d" % i)
                    for i, key in enumerate([gw.name.public_key, second, third])]
        for packet in captured:
            handler.packet_received(packet)
        self.assertEqual(gw.stored(), 3)
        gw.stop()
        handler = gw.start()
        for packet in captured:
            handler.packet_received(packet)
        self.assertEqual(dict(handler.dropped), {mix.REPLAY: 3})
        self.assertEqual(gw.stored(), 0)


class AnnouncedTests(SynchronousTestCase):
    """What the gateway announces, and what clients make of it."""

    def setUp(self):
        self.gw = Gateway(self)
        self.gw.start()
        self.identity = IdentityKey.generate()
        self.inner = _Directory()
        self.directory = SigningDirectoryClient(self.inner, self.identity, self.gw.clock,
                                                schedule=self.gw.keyring)

    def announce(self):
        self.directory.announce_gateway({
            "host": str(HOST), "mixnetListener": str(HOST),
            "clientListener": "127.0.0.1:9000", "pubKey": self.gw.name.public_text,
            "registeredClients": [{"pubKey": encode_key(self.gw.bob.public_key)}],
            "version": "0.5.0"})
        return self.inner.bodies[-1]

    def topology(self, body, at):
        signed = parse_signed_gateway(body)
        mixnodes = [make_presence(IdentityKey.generate(), 1, KeyPair.generate().public_key,
                                  f"127.0.0.1:{2000 + layer}", at, "0.5.0", layer=layer)
                    for layer in (1, 2, 3)]
        document = sign_topology(IdentityKey.generate(), at, at, mixnodes, [signed])
        return merge([parse_document(document.to_json())], 1, at).topology

    def test_the_name_stays_and_the_keys_in_use_are_announced_beside_it(self):
        gw = self.gw
        second, start = gw.keyring.announced(gw.now())
        body = self.announce()
        self.assertEqual(body["pubKey"], gw.name.public_text)
        self.assertNotIn("sphinxKey", body)  # the name key is still the one in use
        self.assertEqual(body["nextPubKey"], encode_key(second))
        self.assertEqual(body["nextPubKeyFrom"], start)
        gw.step(start - gw.now() + NS)
        third, third_start = gw.keyring.announced(gw.now())
        body = self.announce()
        signed = parse_signed_gateway(body)
        self.assertEqual(body["pubKey"], gw.name.public_text)
        self.assertEqual(body["sphinxKey"], encode_key(second))
        self.assertEqual(signed.presence.gateway_sphinx_key, second)
        self.assertEqual(signed.presence.next_sphinx_key, third)
        # the signature covers it: another key in use does not verify
        forged = dict(body, sphinxKey=encode_key(KeyPair.generate().public_key))
        e = self.assertRaises(PresenceError, parse_signed_gateway, forged)
        self.assertEqual(e.field, "signature")
        # and so does its absence
        stripped = {k: v for k, v in body.items() if k != "sphinxKey"}
        self.assertRaises(PresenceError, parse_signed_gateway, stripped)

    def test_clients_keep_the_name_and_route_with_the_key_in_use(self):
        gw = self.gw
        second, start = gw.keyring.announced(gw.now())
        topology = self.topology(self.announce(), gw.now())
        [gateway] = topology.gateways
        self.assertEqual(gateway.public_key, gw.name.public_key)
        self.assertEqual(gateway.route_key, gw.name.public_key)
        self.assertEqual((gateway.next_key, gateway.next_key_from), (second, start))
        self.assertEqual(gateway.key_until, 0)  # the name key is never retired
        self.assertIs(topology.gateway_for(gw.bob.public_key), gateway)
        # the topology switches at the start, even without a refresh
        self.assertIs(topology.at(start - 1), topology)
        later = topology.at(start)
        [switched] = later.gateways
        self.assertEqual(switched.public_key, gw.name.public_key)
        self.assertEqual(switched.route_key, second)
        self.assertEqual(switched.key_until, 0)  # no successor announced in this one
        route = later.route(switched, random.Random(1))
        self.assertEqual(route[-1].public_key, second)
        self.assertIs(later.gateway_by_key(gw.name.public_key), switched)
        # a packet routed there is one the gateway takes
        gw.step(start - gw.now())
        packet = sphinx.build_packet(route[-1:], gw.bob.public_key, bytes(16), b"hi", [0])
        gw.handler.packet_received(packet)
        self.assertEqual(gw.stored(), 1)

    def test_reply_blocks_expire_with_the_first_key_of_their_route(self):
        gw = self.gw
        _, start = gw.keyring.announced(gw.now())
        topology = self.topology(self.announce(), gw.now())
        route = topology.route(topology.gateways[0], random.Random(2))
        # the name key is in use, which the gateway accepts for good: no bound
        self.assertEqual(topology.key_until(route), 0)
        # a rotated key in use is bounded by its successor's start
        [gateway] = topology.gateways
        rotated = attrs_evolve(gateway, sphinx_key=KeyPair.generate().public_key)
        other = Topology(topology.mixnodes, [rotated])
        self.assertEqual(other.key_until(other.route(rotated, random.Random(2))), start)
        # a mixnode announcing a sooner successor bounds it instead
        [mix1, mix2, mix3] = topology.mixnodes
        soon = MixNodeInfo(mix1.address, mix1.public_key, 1,
                           next_key=KeyPair.generate().public_key, next_key_from=start - HOUR)
        other = Topology([soon, mix2, mix3], [rotated])
        self.assertEqual(other.key_until(other.route(rotated, random.Random(3))),
                         start - HOUR)
        # nothing announced: no bound (the lifetime alone applies)
        plain = Topology([mix2, mix3, MixNodeInfo(mix1.address, mix1.public_key, 1)],
                         [GatewayInfo(HOST, HOST, gw.name.public_key)])
        self.assertEqual(plain.key_until(plain.route(plain.gateways[0], random.Random(4))), 0)

    def test_a_seed_reader_keeps_the_name_key(self):
        """GET /api/presence/topology's JSON, read as the seed reads it
        (pubKey only): the gateway is its name, whose key it accepts."""
        gw = self.gw
        _, start = gw.keyring.announced(gw.now())
        gw.step(start - gw.now() + NS)
        body = self.announce()
        seed_entry = {k: body[k] for k in ("host", "pubKey", "registeredClients")}
        [gateway] = Topology.from_json({"MixNodes": [], "MixProviderNodes": [seed_entry]}
                                       ).gateways
        self.assertEqual(gateway.route_key, gw.name.public_key)
        gw.handler.packet_received(gw.packet(gateway.route_key))
        self.assertEqual(gw.stored(), 1)
        # nymtx's reader of the same JSON uses the rotated key, and keeps the name
        [gateway] = Topology.from_json({"MixNodes": [], "MixProviderNodes": [body]}).gateways
        self.assertEqual(gateway.public_key, gw.name.public_key)
        self.assertEqual(gateway.route_key, gw.keyring.in_use(gw.now()))
        again = Topology.from_json(Topology([], [gateway]).to_json())
        self.assertEqual(again.gateways[0].route_key, gateway.route_key)
        self.assertEqual(again.gateways[0].next_key, gateway.next_key)


class PresenceFieldTests(SynchronousTestCase):

    def gateway(self, **kwargs):
        return make_presence(IdentityKey.generate(), ROLE_GATEWAY,
                             KeyPair.generate().public_key, "127.0.0.1:1789", 10 ** 18,
                             "0.5.0", client_listener="127.0.0.1:9000", **kwargs)

    def test_without_the_field_the_bytes_are_unchanged(self):
        key = KeyPair.generate().public_key
        plain = self.gateway()
        self.assertEqual(len(plain.presence.signed_bytes()), 242 + 5)
        rotated = attrs_evolve(plain.presence, gateway_sphinx_key=key)
        self.assertEqual(rotated.signed_bytes(), plain.presence.signed_bytes() + key)
        self.assertIn(key, rotated.sphinx_keys())
        self.assertNotEqual(rotated.content(), plain.presence.content())

    def test_refused(self):
        body = self.gateway(gateway_sphinx_key=KeyPair.generate().public_key).to_json()
        for value, why in [(body["pubKey"], "is the pubKey"), (7, "must be a string"),
                           ("abc", "")]:
            e = self.assertRaises(PresenceError, parse_signed_gateway,
                                  dict(body, sphinxKey=value))
            self.assertEqual(e.field, "sphinxKey")
            self.assertIn(why, str(e))
        e = self.assertRaises(PresenceError, parse_signed_gateway,
                              dict(body, nextPubKey=body["sphinxKey"], nextPubKeyFrom=5))
        self.assertIn("sphinxKey", str(e))
        mixnode = make_presence(IdentityKey.generate(), 1, KeyPair.generate().public_key,
                                "127.0.0.1:1789", 10 ** 18, "0.5.0", layer=1).to_json()
        e = self.assertRaises(PresenceError, parse_signed_mixnode,
                              dict(mixnode, sphinxKey=body["sphinxKey"]))
        self.assertEqual(e.field, "sphinxKey")

    @given(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=80),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(), st.text())))
    def test_any_sphinx_key_value_is_a_clear_error_or_read(self, value):
        body = self.gateway(gateway_sphinx_key=KeyPair.generate().public_key).to_json()
        try:
            parse_signed_gateway(dict(body, sphinxKey=value))
        except PresenceError as e:
            self.assertIn(e.field, ("sphinxKey", "signature", "nextPubKey"))
        # a seed topology reader never fails on it either
        Topology.from_json({"MixProviderNodes": [dict(body, sphinxKey=value)]})
        Topology.from_json({"MixProviderNodes": [dict(body, nextPubKey=value,
                                                      nextPubKeyFrom=value)]})


def attrs_evolve(instance, **changes):
    import attrs
    return attrs.evolve(instance, **changes)
