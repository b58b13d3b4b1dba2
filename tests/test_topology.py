import base64
import collections
import json
import random

from hypothesis import given, strategies as st
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair, encode_key
from nymtx.sphinx import FinalHop, ForwardHop, Hop, build_packet, process_packet
from nymtx.topology import (
    LAYERS, GatewayInfo, MixNodeInfo, Topology, TopologyError)

# The seed's sample answer of GET /api/presence/topology, without the
# "..." elisions that make the original invalid JSON.
SEED_SAMPLE = """{
"MixNodes": [
  {"host": "52.56.99.196:1789", "pubKey": "_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c=",
   "layer": 2, "lastSeen": 1572258570490299400},
  {"host": "18.130.86.190:1789", "pubKey": "dMtoH6vWDBfwjrU0EzPd-fhZDOGJazELsTp2qLyt72U=",
   "layer": 1, "lastSeen": 1572258571193777000},
  {"host": "3.10.22.152:1789", "pubKey": "03FFZ5RgfeBPmVVERenJOCLb-yXlOUtstc6izYc-wFs=",
   "layer": 1, "lastSeen": 1572258570994450200},
  {"host": "35.176.155.107:1789", "pubKey": "oaEqLzA5nUxMAqfg6yW5pneWC342uDMfVsSHxyNQ-DE=",
   "layer": 3, "lastSeen": 1572258571709773800},
  {"host": "3.9.12.238:1789", "pubKey": "ALf35HwBzXZXxaS6V55W7cLsx4a26AaRefinwwJHrg4=",
   "layer": 3, "lastSeen": 1572258571616835600},
  {"host": "35.178.213.77:1789", "pubKey": "KlfEn07FzcN93nMzzlsgq3wN5O1ID6O3Pd4DbezHEWo=",
   "layer": 2, "lastSeen": 1572258570492776400}
],
"MixProviderNodes": [
  {"host": "35.178.212.193:1789", "pubKey": "R_rGKmwelVAVRpicMwMIJwsHvdYHMNfcItPwNipu5GQ=",
   "registeredClients": [{"pubKey": "u7UTjC3UNXdz0HsjMKoxozzbvXyi3KrEvl8BxNNPcAM="}],
   "lastSeen": 1572258572070089000},
  {"host": "3.8.176.11:1789", "pubKey": "XiVE6xA10xFkAwfIQuBDc_JRXWerL0Pcqi7DipEUeTE=",
   "registeredClients": [{"pubKey": "HGTg5XPWe4eiluFKTnC958PuGUSipjLcIeFdLi6zsww="}],
   "lastSeen": 1572258571843881700}
]
}"""


def b64(text):
    return base64.urlsafe_b64decode(text)


def keys(n):
    return [KeyPair.generate() for _ in range(n)]


def mixnode(i, layer, key):
    return MixNodeInfo(NodeAddress.parse(f"10.0.{layer}.{i}:1789"), key, layer, 5, "0.5.0")


def gateway(i, key, clients=()):
    return GatewayInfo(NodeAddress.parse(f"10.1.0.{i}:1789"),
                       NodeAddress.parse(f"10.1.0.{i}:9000"), key, tuple(clients), 7, "0.5.0")


def small_network(per_layer=2, gateways=1):
    pairs = {}
    mixnodes = []
    for layer in range(1, LAYERS + 1):
        for i in range(per_layer):
            pair = KeyPair.generate()
            node = mixnode(i + 1, layer, pair.public_key)
            pairs[node.address.to_bytes()] = pair
            mixnodes.append(node)
    gws = []
    for i in range(gateways):
        pair = KeyPair.generate()
        node = gateway(i + 1, pair.public_key)
        pairs[node.address.to_bytes()] = pair
        gws.append(node)
    return Topology(mixnodes, gws), pairs


class LogRecorder:
    def __init__(self, case):
        self.events = []
        case.patch(Topology, "log", Logger(observer=self.events.append))

    def reasons(self):
        return [e.get("reason", "") for e in self.events]

    def text(self):
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events]


class ParseTests(SynchronousTestCase):
    def test_seed_sample(self):
        log = LogRecorder(self)
        topology = Topology.from_json(SEED_SAMPLE)
        self.assertEqual(log.events, [])
        self.assertEqual(len(topology.mixnodes), 6)
        first = topology.mixnodes[0]
        self.assertEqual(first, MixNodeInfo(
            NodeAddress.parse("52.56.99.196:1789"),
            b64("_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c="), 2, 1572258570490299400, ""))
        self.assertEqual([n.layer for n in topology.mixnodes], [2, 1, 1, 3, 3, 2])
        provider = topology.gateways[0]
        self.assertEqual(provider.address, NodeAddress.parse("35.178.212.193:1789"))
        # No clientListener in the seed: clients are served at the host.
        self.assertEqual(provider.client_listener, provider.address)
        self.assertEqual(provider.registered_clients,
                         (b64("u7UTjC3UNXdz0HsjMKoxozzbvXyi3KrEvl8BxNNPcAM="),))
        self.assertEqual(provider.last_seen, 1572258572070089000)

    def test_nym_v05_camel_case(self):
        mix_key, gw_key, client = keys(3)
        document = {
            "cocoNodes": [],
            "mixNodes": [{"location": "London", "host": "1.2.3.4:1789",
                          "pubKey": mix_key.public_text, "layer": 1,
                          "lastSeen": 1584000000000000000, "version": "0.5.0"}],
            "mixProviderNodes": [{
                "location": "Paris", "clientListener": "5.6.7.8:9000",
                "mixnetListener": "5.6.7.8:1789", "pubKey": gw_key.public_text,
                "registeredClients": [{"pubKey": client.public_text}],
                "lastSeen": 1584000000000000001, "version": "0.5.0"}],
        }
        topology = Topology.from_json(document)
        self.assertEqual(topology.mixnodes, (MixNodeInfo(
            NodeAddress.parse("1.2.3.4:1789"), mix_key.public_key, 1,
            1584000000000000000, "0.5.0"),))
        self.assertEqual(topology.gateways, (GatewayInfo(
            NodeAddress.parse("5.6.7.8:1789"), NodeAddress.parse("5.6.7.8:9000"),
            gw_key.public_key, (client.public_key,), 1584000000000000001, "0.5.0"),))

    def test_bytes_str_and_dict_agree(self):
        a = Topology.from_json(SEED_SAMPLE)
        self.assertEqual(Topology.from_json(SEED_SAMPLE.encode()), a)
        self.assertEqual(Topology.from_json(bytearray(SEED_SAMPLE.encode())), a)
        self.assertEqual(Topology.from_json(json.loads(SEED_SAMPLE)), a)

    def test_ipv6_hosts(self):
        pair = KeyPair.generate()
        topology = Topology.from_json({"MixNodes": [
            {"host": "[::1]:1789", "pubKey": pair.public_text, "layer": 3}]})
        self.assertEqual(topology.mixnodes[0].address, NodeAddress.parse("[::1]:1789"))

    def test_empty_and_null_lists(self):
        self.assertEqual(Topology.from_json("{}"), Topology())
        # Go's encoding/json writes an empty slice as null.
        self.assertEqual(Topology.from_json('{"mixNodes": null, "mixProviderNodes": null}'),
                         Topology())

    def assertRefused(self, data, fragment):
        with self.assertRaises(TopologyError) as caught:
            Topology.from_json(data)
        self.assertIn(fragment, str(caught.exception))

    def test_unusable_documents(self):
        self.assertRefused("", "not valid JSON")
        self.assertRefused(b"{", "not valid JSON")
        self.assertRefused(b"\xff\xfe{}", "not UTF-8")
        self.assertRefused("[]", "must be a JSON object, not an array")
        self.assertRefused("null", "not null")
        self.assertRefused("3", "not a number")
        self.assertRefused(None, "not null")
        self.assertRefused(["MixNodes"], "not an array")
        self.assertRefused('{"MixNodes": {}}', "MixNodes must be an array, not an object")
        self.assertRefused('{"mixProviderNodes": "x"}', "must be an array, not a string")
        self.assertRefused("[" * 100000 + "]" * 100000, "nested too deeply")
        self.assertRefused('{"MixNodes": [1' + "0" * 5000 + "]}", "not valid JSON")

    def test_malformed_entries_are_dropped_with_a_reason(self):
        log = LogRecorder(self)
        good, dup, gw, client = keys(4)
        entries = [
            {"host": "1.2.3.4:1789", "pubKey": good.public_text, "layer": 1},
            "not an object",
            {"pubKey": dup.public_text, "layer": 1},
            {"host": "localhost:1789", "pubKey": dup.public_text, "layer": 1},
            {"host": "1.2.3.4:1789", "pubKey": "short", "layer": 1},
            {"host": "1.2.3.4:1789", "pubKey": 5, "layer": 1},
            {"host": "1.2.3.4:1789", "pubKey": dup.public_text, "layer": "1"},
            {"host": "1.2.3.4:1789", "pubKey": dup.public_text, "layer": True},
            {"host": "1.2.3.4:1789", "pubKey": dup.public_text, "layer": 4},
            {"host": "1.2.3.4:1789", "pubKey": dup.public_text, "layer": 0},
            {"host": "1.2.3.4:1789", "pubKey": dup.public_text, "layer": 1, "lastSeen": 1.5},
            {"host": "1.2.3.4:1789", "pubKey": dup.public_text, "layer": 1, "version": 5},
            {"host": "9.9.9.9:1789", "pubKey": good.public_text, "layer": 2},
        ]
        providers = [
            {"pubKey": gw.public_text},
            {"host": "2.2.2.2:1", "clientListener": "nope", "pubKey": gw.public_text},
            {"host": "2.2.2.2:1", "pubKey": gw.public_text, "registeredClients": {}},
            {"host": "2.2.2.2:1", "pubKey": gw.public_text, "registeredClients": [
                {"pubKey": client.public_text}, {"pubKey": "bad"}, "x", {},
                {"pubKey": client.public_text}]},
        ]
        topology = Topology.from_json({"MixNodes": entries, "MixProviderNodes": providers})
        self.assertEqual(topology.mixnodes, (MixNodeInfo(
            NodeAddress.parse("1.2.3.4:1789"), good.public_key, 1, 0, ""),))
        self.assertEqual(len(topology.gateways), 1)
        self.assertEqual(topology.gateways[0].registered_clients, (client.public_key,))
        self.assertEqual(log.reasons(), [
            "an entry must be an object, not a string",
            'host must be an "ip:port" string, not null',
            "host: node address 'localhost:1789': 'localhost' is not an IPv4 or IPv6 address",
            "pubKey: key 'short' is neither base58 nor base64url of 32 bytes",
            "pubKey must be a base58 or base64url string, not a number",
            "layer must be an integer, not a string",
            "layer must be an integer, not a boolean",
            "layer 4 is not in 1..3",
            "layer 0 is not in 1..3",
            "lastSeen must be an integer, not a number",
            "version must be a string, not a number",
            f"public key {good.public_text} was already listed; keeping the first",
            "it has neither host nor mixnetListener",
            "clientListener: node address 'nope' is not of the form ip:port",
            "registeredClients must be an array, not an object",
            "pubKey: key 'bad' is neither base58 nor base64url of 32 bytes",
            "it must be an object, not a string",
            "pubKey must be a base58 or base64url string, not null",
        ])
        texts = log.text()
        self.assertIn("dropping mixnode entry 1: an entry must be an object", texts[0])
        self.assertIn("dropping gateway entry 0:", texts[12])
        self.assertIn("gateway entry 3: dropping registered client 1:", texts[15])

    def test_duplicate_key_across_mixnode_and_gateway(self):
        log = LogRecorder(self)
        pair = KeyPair.generate()
        topology = Topology.from_json({
            "MixNodes": [{"host": "1.1.1.1:1", "pubKey": pair.public_text, "layer": 1}],
            "MixProviderNodes": [{"host": "2.2.2.2:1", "pubKey": pair.public_text}]})
        self.assertEqual(len(topology.mixnodes), 1)
        self.assertEqual(topology.gateways, ())
        self.assertEqual(len(log.events), 1)

    def test_host_wins_over_mixnet_listener(self):
        pair = KeyPair.generate()
        topology = Topology.from_json({"MixProviderNodes": [
            {"host": "2.2.2.2:1", "mixnetListener": "3.3.3.3:1", "pubKey": pair.public_text}]})
        self.assertEqual(topology.gateways[0].address, NodeAddress.parse("2.2.2.2:1"))

    def test_both_spellings_present(self):
        log = LogRecorder(self)
        a, b = keys(2)
        topology = Topology.from_json({
            "MixNodes": [{"host": "1.1.1.1:1", "pubKey": a.public_text, "layer": 1}],
            "mixNodes": [{"host": "1.1.1.2:1", "pubKey": b.public_text, "layer": 1}]})
        self.assertEqual([n.public_key for n in topology.mixnodes], [a.public_key])
        self.assertEqual(log.events[0]["ignored"], "mixNodes")


class ModelTests(SynchronousTestCase):
    def test_to_json_is_the_seed_form(self):
        topology, _ = small_network(per_layer=1)
        document = topology.to_json()
        self.assertEqual(sorted(document), ["MixNodes", "MixProviderNodes"])
        node = topology.mixnodes[0]
        self.assertEqual(document["MixNodes"][0], {
            "host": "10.0.1.1:1789", "pubKey": encode_key(node.public_key),
            "layer": 1, "lastSeen": 5, "version": "0.5.0"})
        gw = document["MixProviderNodes"][0]
        self.assertEqual(gw["host"], "10.1.0.1:1789")
        self.assertEqual(gw["mixnetListener"], "10.1.0.1:1789")
        self.assertEqual(gw["clientListener"], "10.1.0.1:9000")
        self.assertEqual(gw["registeredClients"], [])

    def test_round_trip_through_text(self):
        topology = Topology.from_json(SEED_SAMPLE)
        text = json.dumps(topology.to_json())
        self.assertEqual(Topology.from_json(text), topology)

    def test_constructor_validates(self):
        a = KeyPair.generate().public_key
        with self.assertRaises(TopologyError) as caught:
            Topology([mixnode(1, 1, a), mixnode(2, 2, a)])
        self.assertIn("appears twice", str(caught.exception))
        with self.assertRaises(TopologyError):
            Topology([mixnode(1, 1, a)], [gateway(1, a)])
        with self.assertRaises(TopologyError):
            mixnode(1, 4, a)
        with self.assertRaises(TopologyError):
            mixnode(1, 1, a[:31])
        with self.assertRaises(TopologyError):
            gateway(1, a, clients=[b"x"])
        with self.assertRaises(TopologyError):
            Topology(["not a node"])
        with self.assertRaises(TopologyError):
            Topology([], [mixnode(1, 1, a)])

    def test_lookups(self):
        c1, c2, c3 = (k.public_key for k in keys(3))
        g1, g2 = (k.public_key for k in keys(2))
        topology = Topology([], [gateway(1, g1, [c1, c2]), gateway(2, g2, [c2, c3])])
        self.assertEqual(topology.gateway_for(c1).public_key, g1)
        self.assertEqual(topology.gateway_for(c3).public_key, g2)
        # Listed at two gateways: the first listed wins.
        self.assertEqual(topology.gateway_for(c2).public_key, g1)
        self.assertIsNone(topology.gateway_for(bytes(32)))
        self.assertEqual(topology.gateway_by_key(g2), topology.gateways[1])
        self.assertIsNone(topology.gateway_by_key(c1))
        self.assertEqual(topology.clients(), [c1, c2, c3])


class RouteTests(SynchronousTestCase):
    def test_one_node_per_layer_then_the_gateway(self):
        topology, _ = small_network(per_layer=3, gateways=2)
        target = topology.gateways[1]
        route = topology.route(target, random.Random(1))
        self.assertEqual(len(route), LAYERS + 1)
        for layer, hop in enumerate(route[:-1], start=1):
            self.assertIsInstance(hop, Hop)
            node = next(n for n in topology.mixnodes if n.public_key == hop.public_key)
            self.assertEqual(node.layer, layer)
            self.assertEqual(hop.address, node.address.to_bytes())
        self.assertEqual(route[-1], Hop(target.address.to_bytes(), target.public_key))

    def test_random_source_is_injected(self):
        topology, _ = small_network(per_layer=5)
        gw = topology.gateways[0]
        a = [topology.route(gw, random.Random(7)) for _ in range(3)]
        self.assertEqual(a[0], a[1])
        self.assertEqual(a[0], a[2])
        rng = random.Random(7)
        routes = {tuple(topology.route(gw, rng)) for _ in range(50)}
        self.assertGreater(len(routes), 30)

    def test_choice_is_uniform(self):
        topology, _ = small_network(per_layer=3)
        gw = topology.gateways[0]
        rng = random.Random(2020)
        n = 3000
        counts = collections.Counter()
        for _ in range(n):
            for hop in topology.route(gw, rng)[:-1]:
                counts[hop.public_key] += 1
        # Each node is picked with p = 1/3 in its layer: binomial(n, 1/3),
        # sd ~ 25.8; five sd either way.
        self.assertEqual(len(counts), 9)
        for count in counts.values():
            self.assertLess(abs(count - n / 3), 5 * (n * (1 / 3) * (2 / 3)) ** 0.5)

    def test_empty_layer(self):
        topology, _ = small_network(per_layer=1)
        without_2 = Topology([n for n in topology.mixnodes if n.layer != 2], topology.gateways)
        with self.assertRaises(TopologyError) as caught:
            without_2.route(without_2.gateways[0], random.Random())
        self.assertEqual(str(caught.exception), "layer 2 has no mixnodes")
        with self.assertRaises(TopologyError) as caught:
            Topology().route(topology.gateways[0], random.Random())
        self.assertEqual(str(caught.exception), "layer 1 has no mixnodes")

    def test_gateway_must_be_a_gateway(self):
        topology, _ = small_network(per_layer=1)
        with self.assertRaises(TopologyError):
            topology.route(None, random.Random())
        with self.assertRaises(TopologyError):
            topology.route(topology.mixnodes[0], random.Random())

    def test_a_packet_travels_the_route(self):
        # The route is what Sphinx needs: each hop can peel its layer and
        # finds the next hop's address.
        topology, pairs = small_network(per_layer=2)
        gw = topology.gateways[0]
        route = topology.route(gw, random.Random(3))
        destination = KeyPair.generate().public_key
        packet = build_packet(route, destination, bytes(16), b"hello",
                              [1000] * len(route))
        for i, hop in enumerate(route):
            result = process_packet(pairs[hop.address].private_key, packet)
            if i < len(route) - 1:
                self.assertIsInstance(result, ForwardHop)
                self.assertEqual(result.next_address, route[i + 1].address)
                packet = result.packet
        self.assertIsInstance(result, FinalHop)
        self.assertEqual(result.destination, destination)
        self.assertEqual(result.message, b"hello")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)

FIELDS = ["host", "pubKey", "layer", "lastSeen", "version", "location", "clientListener",
          "mixnetListener", "registeredClients"]
field_values = st.one_of(
    json_values,
    st.sampled_from(["1.2.3.4:1789", "[::1]:1", "1.2.3.4:0", "x:1",
                     "_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c=",
                     "dMtoH6vWDBfwjrU0EzPd-fhZDOGJazELsTp2qLyt72U=", ""]),
    st.integers(-2, 5),
    st.lists(st.fixed_dictionaries({"pubKey": st.sampled_from(
        ["u7UTjC3UNXdz0HsjMKoxozzbvXyi3KrEvl8BxNNPcAM=", "bad", ""])}), max_size=3),
)


@st.composite
def near_valid_entries(draw):
    # A well-formed mixnode or gateway entry with at most two fields spoilt
    # or removed, so that the fuzz reaches every field check.
    entry = {
        "host": draw(st.sampled_from(["1.2.3.4:1789", "[::1]:1789"])),
        "pubKey": draw(st.one_of(
            st.binary(min_size=32, max_size=32).map(encode_key),
            st.just("_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c="))),
        "layer": draw(st.integers(1, LAYERS)),
        "clientListener": "1.2.3.4:9000",
        "registeredClients": [{"pubKey": "u7UTjC3UNXdz0HsjMKoxozzbvXyi3KrEvl8BxNNPcAM="}],
    }
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
        if draw(st.booleans()):
            entry.pop(field, None)
        else:
            entry[field] = draw(field_values)
    return entry


entries = st.one_of(
    near_valid_entries(), st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=9))
documents = st.dictionaries(
    st.sampled_from(["MixNodes", "mixNodes", "MixProviderNodes", "mixProviderNodes", "x"]),
    st.one_of(st.lists(st.one_of(entries, json_values), max_size=5), json_values),
    max_size=4)


addresses = st.builds(NodeAddress, st.ip_addresses(), st.integers(1, 65535))
key_bytes = st.binary(min_size=32, max_size=32)
mixnode_infos = st.builds(MixNodeInfo, addresses, key_bytes, st.integers(1, LAYERS),
                          st.integers(0, 2**63 - 1), st.text(max_size=10))
gateway_infos = st.builds(GatewayInfo, addresses, addresses, key_bytes,
                          st.lists(key_bytes, max_size=3, unique=True).map(tuple),
                          st.integers(0, 2**63 - 1), st.text(max_size=10))


@st.composite
def topologies(draw):
    mixnodes = draw(st.lists(mixnode_infos, max_size=6, unique_by=lambda n: n.public_key))
    used = {n.public_key for n in mixnodes}
    gateways = draw(st.lists(gateway_infos.filter(lambda g: g.public_key not in used),
                             max_size=3, unique_by=lambda g: g.public_key))
    return Topology(mixnodes, gateways)


class FuzzTests(SynchronousTestCase):
    def setUp(self):
        LogRecorder(self)

    def check(self, data):
        try:
            topology = Topology.from_json(data)
        except TopologyError:
            return
        self.assertIsInstance(topology, Topology)
        self.assertEqual(Topology.from_json(topology.to_json()), topology)

    @given(st.binary(max_size=300))
    def test_bytes(self, data):
        self.check(data)

    @given(json_values)
    def test_json_values(self, value):
        self.check(value)
        self.check(json.dumps(value))

    @given(documents)
    def test_near_miss_documents(self, document):
        self.check(document)
        self.check(json.dumps(document).encode())

    @given(topologies())
    def test_round_trip(self, topology):
        self.assertEqual(Topology.from_json(topology.to_json()), topology)
        self.assertEqual(Topology.from_json(json.dumps(topology.to_json())), topology)
