"""The directory with signatures on (nymtx.directory.signed): the attacks of
issue 15 through its HTTP API, and clients trusting several directories
over real sockets."""

import json

import treq
from hypothesis import given, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from treq.testing import StubTreq

from nymtx.directory.registry import Registry
from nymtx.directory.resource import DirectoryResource, make_site
from nymtx.directory.signed import SignedRegistry
from nymtx.keys import encode_key
from nymtx.topology import Topology
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.allowlist import AllowList
from nymtx.trust.document import parse_document
from nymtx.trust.metrics import sign_metrics
from nymtx.trust.presence import NS

from tests.trustnet import document, gateway, identity, mixnode, network, sphinx

START = 1_700_000_000.0
T = int(START * NS)
DIRECTORY = identity(501)


class SignedDirectoryTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = SignedRegistry(self.clock, DIRECTORY)
        self.stub = StubTreq(DirectoryResource(self.registry))
        self.nodes = network()

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        response = self.successResultOf(
            self.stub.request(method, "http://directory.test" + path, data=data))
        return response.code, self.successResultOf(response.content())

    def announce(self, signed, expect=201):
        path = ("/api/presence/mixnodes" if signed.presence.kind == "mixnode"
                else "/api/presence/gateways")
        code, content = self.call("POST", path, signed.to_json())
        self.assertEqual(code, expect, content)
        return json.loads(content)

    def refused(self, signed, text, path=None):
        answer = self.announce(signed, 400)
        self.assertIn(text, answer["error"])

    def topology_bytes(self):
        code, content = self.call("GET", "/api/presence/topology")
        self.assertEqual(code, 200)
        return content

    def announce_all(self, t=T):
        for node in self.nodes:
            self.announce(node.presence(t))

    def test_the_topology_is_signed_and_seed_readable(self):
        self.announce_all()
        content = self.topology_bytes()
        signed = parse_document(content)
        self.assertEqual(signed.document.directory_key, DIRECTORY.public_key)
        self.assertEqual(len(signed.document.mixnodes), 6)
        seed = Topology.from_json(content)
        self.assertEqual(seed.gateway_for(sphinx(901)).public_key, sphinx(42))
        self.assertEqual(json.loads(content)["MixNodes"][0]["lastSeen"], T)
        trust = TrustedDirectories([DIRECTORY.public_key], 1)
        trust.offer(content, T)
        self.assertEqual(len(trust.topology(T).mixnodes), 6)

    def test_the_compact_topology(self):
        self.announce_all()
        code, full = self.call("GET", "/api/presence/topology")
        code, compact = self.call("GET", "/api/presence/topology?clients=none")
        self.assertEqual(code, 200)
        self.assertNotIn(b"registeredClients", compact)
        self.assertIn(b"registeredClients", full)
        self.assertEqual(parse_document(compact).signature, parse_document(full).signature)
        trust = TrustedDirectories([DIRECTORY.public_key], 1)
        trust.offer(compact, T)
        topology = trust.topology(T)
        self.assertEqual((len(topology.mixnodes), len(topology.gateways)), (6, 2))
        self.assertEqual(topology.clients(), [])
        # a plain directory ignores the query
        plain = StubTreq(DirectoryResource(Registry(self.clock)))
        response = self.successResultOf(plain.get(
            "http://directory.test/api/presence/topology?clients=none"))
        self.assertEqual(json.loads(self.successResultOf(response.content())),
                         {"MixNodes": [], "MixProviderNodes": []})

    def test_the_page_still_works(self):
        self.announce_all()
        code, page = self.call("GET", "/")
        self.assertEqual(code, 200)
        self.assertIn(b"127.0.0.1:1011", page)

    def report(self, signed, expect=201):
        code, content = self.call("POST", "/api/metrics/mixes",
                                  signed if isinstance(signed, dict) else signed.to_json())
        self.assertEqual(code, expect, content)
        return json.loads(content)

    def test_signed_metrics_from_the_node_itself(self):
        self.announce_all()
        node = self.nodes[0]
        self.report(sign_metrics(node.identity, node.sphinx_key,
                                 {"received": 7, "sent": 6, "dropped": {"queue full": 1}}, T))
        self.clock.advance(60)
        code, content = self.call("GET", "/api/metrics/mixes")
        [metrics] = json.loads(content)
        self.assertEqual((metrics["pubKey"], metrics["received"], metrics["dropped"]),
                         (encode_key(node.sphinx_key), 7, {"queue full": 1}))

    def test_metrics_not_from_the_node_refused(self):
        self.announce_all()
        node, other = self.nodes[0], self.nodes[1]
        counts = {"received": 1, "sent": 1}
        unsigned = {"pubKey": encode_key(node.sphinx_key), "received": 1, "sent": 1}
        self.assertIn("signature: missing", self.report(unsigned, 400)["error"])
        # another node (or anyone) reporting for node 11's key
        self.assertIn("is not a Sphinx key of this identity",
                      self.report(sign_metrics(other.identity, node.sphinx_key, counts, T),
                                  400)["error"])
        self.assertIn("has no mixnode presence",
                      self.report(sign_metrics(identity(999), node.sphinx_key, counts, T),
                                  400)["error"])
        self.assertIn("has no mixnode presence",
                      self.report(sign_metrics(self.nodes[6].identity,
                                               self.nodes[6].sphinx_key, counts, T),
                                  400)["error"])
        # counts changed under the node's signature
        body = sign_metrics(node.identity, node.sphinx_key, counts, T).to_json()
        body["received"] = 1000
        self.assertIn("does not verify", self.report(body, 400)["error"])
        body["sent"] = {"127.0.0.1:1": 5}
        self.assertIn("the total", self.report(body, 400)["error"])

    def test_metrics_replayed_or_stale_refused(self):
        self.announce_all()
        node = self.nodes[0]
        counts = {"received": 1, "sent": 1}
        first = sign_metrics(node.identity, node.sphinx_key, counts, T)
        self.report(first)
        self.assertIn("a replay", self.report(first, 400)["error"])
        self.report(sign_metrics(node.identity, node.sphinx_key, counts, T + 1))
        self.assertIn("tolerance", self.report(
            sign_metrics(node.identity, node.sphinx_key, counts, T - 61 * NS), 400)["error"])
        self.assertIn("tolerance", self.report(
            sign_metrics(node.identity, node.sphinx_key, counts, T + 61 * NS), 400)["error"])
        # still a replay after the node expired and came back
        self.clock.advance(11)
        self.announce(node.presence(T + 11 * NS))
        self.assertIn("a replay", self.report(first, 400)["error"])

    def test_unsigned_presence_refused(self):
        body = {"host": "127.0.0.1:1", "pubKey": encode_key(sphinx(1)), "layer": 1,
                "version": "0.5.0"}
        code, content = self.call("POST", "/api/presence/mixnodes", body)
        self.assertEqual(code, 400)
        self.assertIn(b"signature: missing", content)

    def test_fake_nodes_not_on_the_allow_list_refused(self):
        allowed = AllowList({n.identity.public_key: "" for n in self.nodes})
        self.registry = SignedRegistry(self.clock, DIRECTORY, allowed)
        self.stub = StubTreq(DirectoryResource(self.registry))
        self.announce_all()
        for i in range(20):
            self.refused(mixnode(200 + i, 2).presence(T), "not on the directory's allow list")
        self.assertEqual(len(parse_document(self.topology_bytes()).document.mixnodes), 6)

    def test_a_real_nodes_key_at_the_attackers_host_refused(self):
        self.announce_all()
        thief = mixnode(300, 2, port=6666)
        self.refused(thief.presence(T, sphinx_key=self.nodes[2].sphinx_key),
                     "is held by another identity")

    def test_a_mixnode_entry_carrying_the_gateways_key_refused(self):
        self.announce_all()
        self.refused(mixnode(300, 2).presence(T, sphinx_key=self.nodes[6].sphinx_key),
                     "pubKey: Sphinx key")
        self.clock.advance(1)
        topology = Topology.from_json(self.topology_bytes())
        self.assertIsNotNone(topology.gateway_by_key(self.nodes[6].sphinx_key))

    def test_a_gateway_list_that_is_not_the_gateways_refused(self):
        self.announce_all()
        data = self.nodes[6].presence(T + 1).to_json()
        data["registeredClients"].append({"pubKey": encode_key(sphinx(901))})
        code, content = self.call("POST", "/api/presence/gateways", data)
        self.assertEqual(code, 400)
        self.assertIn(b"do not match the signed clientsDigest", content)
        data = self.nodes[6].presence(T + 2).to_json(with_clients=False)
        code, content = self.call("POST", "/api/presence/gateways", data)
        self.assertEqual(code, 400)
        self.assertIn(b"registeredClients: missing", content)

    def test_a_fake_gateway_listing_bob_at_a_host_that_sorts_first(self):
        # in an open network it may join under its own key; a verifying
        # client then resolves Bob through neither gateway
        self.announce_all()
        fake = gateway(301, [sphinx(901)], port=1)
        self.announce(fake.presence(T))
        self.clock.advance(1)
        content = self.topology_bytes()
        self.assertEqual(Topology.from_json(content).gateways[0].public_key, fake.sphinx_key)
        trust = TrustedDirectories([DIRECTORY.public_key], 1)
        trust.offer(content, T + NS)
        topology = trust.topology(T + NS)
        self.assertIsNone(topology.gateway_for(sphinx(901)))
        self.assertEqual(topology.gateway_for(sphinx(900)).public_key, sphinx(41))

    def test_replay_stale_and_future_refused(self):
        first = self.nodes[0].presence(T)
        self.announce(first)
        self.announce(self.nodes[0].presence(T + 1))
        self.refused(first, "a replay")
        self.refused(self.nodes[1].presence(T - 61 * NS), "stale")
        self.refused(self.nodes[1].presence(T + 61 * NS), "in the future")

    def test_a_signature_over_different_bytes_refused(self):
        data = self.nodes[0].presence(T).to_json()
        data["host"] = "10.6.6.6:1789"
        code, content = self.call("POST", "/api/presence/mixnodes", data)
        self.assertEqual((code, b"does not verify" in content), (400, True))

    def test_a_presence_on_the_wrong_endpoint_refused(self):
        code, content = self.call("POST", "/api/presence/mixnodes",
                                  self.nodes[6].presence(T).to_json())
        self.assertEqual(code, 400)

    def test_refusals_change_nothing(self):
        self.announce_all()
        before = self.topology_bytes()
        self.refused(mixnode(300, 2).presence(T, sphinx_key=self.nodes[0].sphinx_key),
                     "held")
        self.clock.advance(1)
        after = parse_document(self.topology_bytes()).document
        self.assertEqual(after.mixnodes, parse_document(before).document.mixnodes)

    def test_resigned_at_most_once_a_second_with_growing_serials(self):
        self.announce(self.nodes[0].presence(T))
        first = parse_document(self.topology_bytes()).document
        self.announce(self.nodes[1].presence(T))
        self.assertEqual(parse_document(self.topology_bytes()).document, first)
        self.clock.advance(1)
        second = parse_document(self.topology_bytes()).document
        self.assertGreater(second.serial, first.serial)
        self.assertEqual(len(second.mixnodes), 2)
        # unchanged: the same document until half its lifetime has passed
        self.clock.advance(5)
        self.assertEqual(parse_document(self.topology_bytes()).document, second)

    def test_silent_nodes_leave_and_free_their_keys(self):
        self.announce(self.nodes[0].presence(T))
        self.clock.advance(10)
        self.assertEqual(parse_document(self.topology_bytes()).document.mixnodes, ())
        now = T + 10 * NS
        self.announce(mixnode(300, 2).presence(now, sphinx_key=self.nodes[0].sphinx_key))

    @given(path=st.sampled_from(["/api/presence/mixnodes", "/api/presence/gateways",
                                 "/api/presence/mixproviders", "/api/metrics/mixes"]),
           data=st.one_of(st.binary(max_size=300), st.sampled_from([
               b"{}", b"[]", b"null", b'{"signature": 1}', b'{"signature": "x"}'])))
    def test_fuzz_bodies(self, path, data):
        response = self.successResultOf(
            self.stub.request("POST", "http://directory.test" + path, data=data))
        self.assertIn(response.code, (201, 400))
        json.loads(self.successResultOf(response.content()))

    @given(st.data())
    def test_fuzz_signed_fields(self, data):
        # a real presence with one field replaced: refused with 400, or
        # (a field outside the signed bytes) taken; never a 500
        signed = data.draw(st.sampled_from(self.nodes)).presence(T)
        body = signed.to_json()
        field = data.draw(st.sampled_from(sorted(body)))
        body[field] = data.draw(st.one_of(st.none(), st.integers(-1, 2 ** 65),
                                          st.text(max_size=60), st.lists(st.none())))
        path = "/api/presence/" + ("mixnodes" if signed.presence.layer else "gateways")
        code, content = self.call("POST", path, body)
        self.assertIn(code, (201, 400), content)

    def test_capacity(self):
        self.registry = SignedRegistry(self.clock, DIRECTORY, capacity=2)
        self.stub = StubTreq(DirectoryResource(self.registry))
        self.announce(self.nodes[0].presence(T))
        self.announce(self.nodes[1].presence(T))
        self.announce(self.nodes[2].presence(T), 503)
        self.announce(self.nodes[0].presence(T + 1))
        self.announce(self.nodes[6].presence(T))


    def test_a_node_that_left_is_not_listed_by_the_cached_document(self):
        self.announce(self.nodes[0].presence(T))
        self.clock.advance(9.5)
        self.announce(self.nodes[1].presence(T + int(9.5 * NS)))
        self.topology_bytes()  # signed now
        self.clock.advance(0.6)  # node 0 has been silent for 10.1 s
        code, page = self.call("GET", "/")
        self.assertEqual(code, 200)
        listed = parse_document(self.topology_bytes()).document.mixnodes
        self.assertEqual([s.identity_key for s in listed], [self.nodes[1].identity.public_key])


class _Static(Resource):
    """A lying directory: it answers whatever document it was given."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body = b""

    def render_GET(self, request):
        return self.body


class SeveralDirectoriesOverSocketsTests(TestCase):
    """Three directories on 127.0.0.1; nodes announce to the two honest ones;
    a client pinning all three, threshold two, fetches over HTTP."""

    @inlineCallbacks
    def listen(self, site):
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def test_one_lying_directory_changes_nothing(self):
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        a, b, liar = identity(501), identity(502), identity(666)
        urls = []
        for key in (a, b):
            urls.append((yield self.listen(make_site(SignedRegistry(reactor, key)))))
        lying = _Static()
        urls.append((yield self.listen(Site(lying))))
        nodes = network()
        now = int(reactor.seconds() * NS)
        for url in urls[:2]:
            for node in nodes:
                path = "mixnodes" if node.layer else "gateways"
                response = yield http.post(f"{url}/api/presence/{path}",
                                           json=node.presence(now).to_json())
                self.assertEqual(response.code, 201, (yield response.text()))
        fakes = [mixnode(200 + i, 1 + i % 3) for i in range(9)] + [
            gateway(301, [sphinx(900), sphinx(901)], port=1)]
        lying.body = document(liar, 1, now, [n.presence(now) for n in nodes[3:] + fakes]
                              ).to_bytes()
        trust = TrustedDirectories([a.public_key, b.public_key, liar.public_key], 2)
        for url in urls:
            content = yield (yield http.get(f"{url}/api/presence/topology")).content()
            trust.offer(content, int(reactor.seconds() * NS))
        topology = trust.topology(int(reactor.seconds() * NS))
        self.assertEqual({n.public_key for n in topology.mixnodes},
                         {n.sphinx_key for n in nodes[:6]})
        self.assertEqual({g.public_key for g in topology.gateways},
                         {sphinx(41), sphinx(42)})
        self.assertEqual(topology.gateway_for(sphinx(901)).public_key, sphinx(42))
        yield pool.closeCachedConnections()

