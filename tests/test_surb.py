"""SURBs in Sphinx: round trips, single use, the gateway's step, vectors, fuzzing."""

import importlib.util
import json
import os
import random

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.keys import KeyPair
from nymtx.sphinx import (
    HEADER_SIZE, PACKET_SIZE, PAYLOAD_SIZE, FinalHop, ForwardHop, ReplayCache, SphinxError,
    build_packet, process_packet)
from nymtx.sphinx import crypto, errors
from nymtx.sphinx.surb import (
    DELIVERY_SIZE, MAX_SURB_MESSAGE_SIZE, SURB_SIZE, Surb, SurbDelivery, SurbError, SurbKeys,
    build_surb, build_surb_header, empty_surb_packet, open_surb_delivery, parse_delivery,
    process_gateway_packet, use_surb)

from tests.test_sphinx import make_route

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "vectors", "surb.json")


def load_maker():
    spec = importlib.util.spec_from_file_location(
        "make_surb_vectors", os.path.join(HERE, "vectors", "make_surb_vectors.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def through_mixes(keys, packet, cache=None):
    """The packet as the last hop receives it, after every hop but the last."""
    for k in keys[:-1]:
        out = process_packet(k.private_key, packet, cache)
        assert isinstance(out, ForwardHop)
        packet = out.packet
    return packet


class Builder:
    """A client with its own key, building SURBs over a 4-hop route."""

    def __init__(self, seed=1):
        self.rng = random.Random(seed)
        self.keys, self.route = make_route(4, random.Random(seed))
        self.me = KeyPair.generate(self.rng.randbytes)

    def surb(self, identifier=None, delays=(1, 2, 3, 4)):
        identifier = identifier or self.rng.randbytes(16)
        return build_surb(self.route, self.me.public_key, identifier, list(delays),
                          randbytes=self.rng.randbytes)

    def deliver(self, packet, cache=None):
        last = through_mixes(self.keys, packet, cache)
        return process_gateway_packet(self.keys[-1].private_key, last)


class RoundTripTests(SynchronousTestCase):
    def check(self, message):
        b = Builder()
        surb, keys = b.surb(identifier=b"\x07" * 16)
        packet = use_surb(surb, message)
        self.assertEqual(len(packet), PACKET_SIZE)
        self.assertEqual(packet[:HEADER_SIZE], surb.header)
        out = b.deliver(packet)
        self.assertIsInstance(out, SurbDelivery)
        self.assertEqual(out.destination, b.me.public_key)
        self.assertEqual(out.identifier, b"\x07" * 16)
        self.assertEqual(out.delay_ns, 4)
        self.assertEqual(open_surb_delivery(keys, out.block), message)
        # what the gateway stores parses back to the same two parts
        self.assertEqual(parse_delivery(out.stored()), (out.identifier, out.block))

    def test_short(self):
        self.check(b"hello back")

    def test_empty(self):
        self.check(b"")

    def test_longest(self):
        self.check(os.urandom(MAX_SURB_MESSAGE_SIZE))

    def test_message_ending_in_zero_bytes(self):
        self.check(b"ends with zeros\x00\x00")

    def test_too_long(self):
        surb, _ = Builder().surb()
        self.assertRaises(errors.MessageTooLongError, use_surb, surb,
                          bytes(MAX_SURB_MESSAGE_SIZE + 1))

    def test_first_hop_and_sizes(self):
        b = Builder()
        surb, keys = b.surb()
        self.assertEqual(surb.first_hop, b.route[0].address)
        self.assertEqual(len(surb.to_bytes()), SURB_SIZE)
        self.assertEqual(Surb.from_bytes(surb.to_bytes()), surb)
        self.assertEqual(SurbKeys.from_bytes(keys.to_bytes()), keys)
        self.assertEqual(len(keys.hop_keys), 4)

    def test_zero_identifier_refused(self):
        b = Builder()
        self.assertRaises(SurbError, b.surb, identifier=bytes(16))
        self.assertRaises(SurbError, build_surb_header, b.route, b.me.public_key, bytes(16),
                          [0] * 4)

    def test_each_surb_differs(self):
        b = Builder()
        (s1, _), (s2, _) = b.surb(), b.surb()
        self.assertNotEqual(s1.header[:32], s2.header[:32])
        self.assertNotEqual(s1.payload_key, s2.payload_key)

    def test_wrong_keys_refused(self):
        b = Builder()
        surb, _ = b.surb()
        _, other = b.surb()
        out = b.deliver(use_surb(surb, b"for the first"))
        self.assertRaises(SurbError, open_surb_delivery, other, out.block)

    def test_tampered_payload_refused(self):
        b = Builder()
        surb, keys = b.surb()
        packet = bytearray(use_surb(surb, b"reply"))
        packet[HEADER_SIZE + 500] ^= 1
        out = b.deliver(bytes(packet))
        self.assertIsInstance(out, SurbDelivery)
        self.assertRaises(SurbError, open_surb_delivery, keys, out.block)

    def test_replier_knows_only_its_key(self):
        """The payload a replier sends is Lioness under the SURB's one key;
        the payload the next hop passes on is not computable from it."""
        b = Builder()
        surb, keys = b.surb()
        message = b"reply"
        packet = use_surb(surb, message)
        plain = bytes(16) + message + b"\x01"
        plain += bytes(PAYLOAD_SIZE - len(plain))
        self.assertEqual(packet[HEADER_SIZE:], crypto.lioness_encrypt(surb.payload_key, plain))
        after_first = process_packet(b.keys[0].private_key, packet).packet[HEADER_SIZE:]
        self.assertEqual(after_first,
                         crypto.lioness_decrypt(keys.hop_keys[0], packet[HEADER_SIZE:]))
        self.assertNotIn(keys.hop_keys[0], surb.to_bytes())


class GatewayStepTests(SynchronousTestCase):
    """process_gateway_packet: forward packets as before, SURB packets as deliveries."""

    def test_forward_packet_unchanged(self):
        keys, route = make_route(4, random.Random(3))
        packet = build_packet(route, b"d" * 32, bytes(16), b"forward", [0] * 4,
                              randbytes=random.Random(4).randbytes)
        last = through_mixes(keys, packet)
        self.assertEqual(process_gateway_packet(keys[-1].private_key, last),
                         process_packet(keys[-1].private_key, last))
        self.assertIsInstance(process_gateway_packet(keys[-1].private_key, last), FinalHop)

    def test_sphinx_vectors_unchanged(self):
        with open(os.path.join(HERE, "vectors", "sphinx.json")) as f:
            data = json.load(f)
        for v in data["vectors"]:
            current = bytes.fromhex(v["packet"])
            for h, expected in zip(v["route"], v["hops"]):
                key = bytes.fromhex(h["private_key"])
                self.assertEqual(process_gateway_packet(key, current), process_packet(key, current))
                if not expected["final"]:
                    current = bytes.fromhex(expected["packet"])

    def test_process_packet_refuses_surb_packets(self):
        """Why the gateway needs its own step: today's final hop drops a SURB packet."""
        b = Builder()
        surb, _ = b.surb()
        last = through_mixes(b.keys, use_surb(surb, b"r"))
        self.assertRaises(errors.PayloadError, process_packet, b.keys[-1].private_key, last)

    def test_tampered_forward_packet_still_refused(self):
        keys, route = make_route(4, random.Random(3))
        packet = bytearray(build_packet(route, b"d" * 32, bytes(16), b"forward", [0] * 4))
        packet[HEADER_SIZE + 10] ^= 0x80
        last = through_mixes(keys, bytes(packet))
        self.assertRaises(errors.PayloadError, process_gateway_packet, keys[-1].private_key, last)

    def test_forward_hop_passed_on(self):
        b = Builder()
        surb, _ = b.surb()
        out = process_gateway_packet(b.keys[0].private_key, use_surb(surb, b"r"))
        self.assertIsInstance(out, ForwardHop)

    def test_empty_surb_packet_is_a_delivery(self):
        b = Builder()
        surb, keys = b.surb(identifier=b"\x09" * 16)
        packet = empty_surb_packet(surb.header, randbytes=random.Random(1).randbytes)
        out = b.deliver(packet)
        self.assertIsInstance(out, SurbDelivery)
        self.assertEqual(out.identifier, b"\x09" * 16)


class SingleUseTests(SynchronousTestCase):
    """Each hop's replay cache refuses a SURB's second use, whatever it carries."""

    def test_second_use_refused_at_first_hop(self):
        b = Builder()
        surb, _ = b.surb()
        cache = ReplayCache(64)
        process_packet(b.keys[0].private_key, use_surb(surb, b"first"), cache)
        self.assertRaises(errors.ReplayError, process_packet, b.keys[0].private_key,
                          use_surb(surb, b"another message"), cache)

    def test_second_use_refused_at_every_hop(self):
        b = Builder()
        surb, _ = b.surb()
        caches = [ReplayCache(64) for _ in b.keys]
        first = use_surb(surb, b"one")
        second = use_surb(surb, b"two")
        for i, k in enumerate(b.keys[:-1]):
            out1 = process_packet(k.private_key, first, caches[i])
            # a fresh cache at the earlier hops: the next hop still refuses it
            out2 = process_packet(k.private_key, second)
            self.assertRaises(errors.ReplayError, process_packet, k.private_key, second,
                              caches[i])
            first, second = out1.packet, out2.packet
        process_gateway_packet(b.keys[-1].private_key, first, caches[-1])
        self.assertRaises(errors.ReplayError, process_gateway_packet, b.keys[-1].private_key,
                          second, caches[-1])

    def test_surb_ack_sent_twice_refused(self):
        b = Builder()
        surb, _ = b.surb()
        cache = ReplayCache(64)
        process_packet(b.keys[0].private_key, empty_surb_packet(surb.header), cache)
        self.assertRaises(errors.ReplayError, process_packet, b.keys[0].private_key,
                          empty_surb_packet(surb.header), cache)


class VectorTests(SynchronousTestCase):
    def test_file_matches_regeneration(self):
        with open(VECTORS) as f:
            stored = json.load(f)
        self.assertEqual(stored, json.loads(json.dumps(load_maker().vectors())))

    def test_rebuild_from_recorded_draws(self):
        with open(VECTORS) as f:
            data = json.load(f)
        self.assertEqual(data["format"], "nymtx-surb-v1")
        from nymtx.sphinx import Hop
        for v in data["replies"]:
            draws = [bytes.fromhex(h) for h in v["random_bytes"]]

            def randbytes(n):
                chunk = draws.pop(0)
                self.assertEqual(len(chunk), n)
                return chunk

            route = [Hop(bytes.fromhex(h["address"]), bytes.fromhex(h["public_key"]))
                     for h in v["route"]]
            surb, keys = build_surb(route, bytes.fromhex(v["destination"]),
                                    bytes.fromhex(v["identifier"]), v["delays_ns"], randbytes)
            self.assertEqual(draws, [])
            self.assertEqual(surb.to_bytes().hex(), v["surb"], v["name"])
            self.assertEqual(keys.to_bytes().hex(), v["surb_keys"])
            packet = use_surb(Surb.from_bytes(bytes.fromhex(v["surb"])),
                              bytes.fromhex(v["message"]))
            self.assertEqual(packet.hex(), v["packet"])
            last = v["hops"][-1]
            out = open_surb_delivery(SurbKeys.from_bytes(bytes.fromhex(v["surb_keys"])),
                                     bytes.fromhex(last["block"]))
            self.assertEqual(out.hex(), v["opened"])
            self.assertEqual(v["opened"], v["message"])


class FromTheSpecTests(SynchronousTestCase):
    """docs/surb.md alone, with pyca's AES and the Lioness of docs/sphinx.md."""

    def test_open_and_ack_identifier(self):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        with open(VECTORS) as f:
            data = json.load(f)
        for v in data["replies"]:
            raw = bytes.fromhex(v["surb_keys"])
            n = raw[16]
            hop_keys = [raw[17 + 32 * i:49 + 32 * i] for i in range(n)]
            k = raw[-32:]
            self.assertEqual(bytes.fromhex(v["surb"])[-32:], k)
            p = bytes.fromhex(v["hops"][-1]["block"])
            for key in reversed(hop_keys):
                p = crypto.lioness_encrypt(key, p)
            t = crypto.lioness_decrypt(k, p)
            self.assertEqual(t[:16], bytes(16))
            self.assertEqual(t[16:].rstrip(b"\x00")[:-1].hex(), v["message"])
        a = data["acks"][0]
        plain = (a["number"].to_bytes(8, "big") + a["index"].to_bytes(4, "big")
                 + a["attempt"].to_bytes(2, "big") + bytes(2))
        aes = Cipher(algorithms.AES(bytes.fromhex(a["ack_key"])), modes.ECB()).encryptor()
        self.assertEqual(aes.update(plain).hex(), a["identifier"])
        self.assertEqual(a["hops"][-1]["identifier"], a["identifier"])
        payload = bytes.fromhex(a["payload"])
        self.assertEqual(payload[:19] + bytes(13), bytes.fromhex(a["route"][0]["address"]))
        self.assertEqual(payload[19:367], bytes.fromhex(a["packet"])[:HEADER_SIZE])
        self.assertEqual(bytes.fromhex(a["packet"])[HEADER_SIZE:].hex(), a["random_bytes"][-1])


class FuzzTests(SynchronousTestCase):
    key = KeyPair.generate(random.Random(98).randbytes)
    builder = Builder(7)
    surb_keys = builder.surb()[1]

    @given(st.binary(min_size=PACKET_SIZE, max_size=PACKET_SIZE))
    def test_gateway_step_arbitrary_packets(self, data):
        self.assertRaises(SphinxError, process_gateway_packet, self.key.private_key, data,
                          ReplayCache(8))

    @given(st.binary(max_size=2 * PACKET_SIZE))
    def test_gateway_step_arbitrary_bytes(self, data):
        self.assertRaises(SphinxError, process_gateway_packet, self.key.private_key, data)

    @given(st.binary(min_size=PAYLOAD_SIZE, max_size=PAYLOAD_SIZE))
    def test_open_arbitrary_blocks(self, block):
        self.assertRaises(SurbError, open_surb_delivery, self.surb_keys, block)

    @given(st.binary(max_size=2 * DELIVERY_SIZE))
    def test_parse_delivery(self, data):
        try:
            identifier, block = parse_delivery(data)
        except SurbError:
            self.assertNotEqual(len(data), DELIVERY_SIZE)
        else:
            self.assertEqual(identifier + block, data)

    @given(st.binary(max_size=2 * SURB_SIZE))
    def test_parse_surb(self, data):
        try:
            surb = Surb.from_bytes(data)
        except SurbError:
            self.assertNotEqual(len(data), SURB_SIZE)
        else:
            self.assertEqual(surb.to_bytes(), data)

    @given(st.binary(max_size=300))
    def test_parse_surb_keys(self, data):
        try:
            keys = SurbKeys.from_bytes(data)
        except SurbError:
            pass
        else:
            self.assertEqual(keys.to_bytes(), data)
