"""The directory client against the real resource in StubTreq."""

from treq.testing import StubTreq
from twisted.internet.defer import fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from nymtx.addressing import NodeAddress
from nymtx.directory.client import DirectoryClient, DirectoryError
from nymtx.directory.registry import Registry
from nymtx.directory.resource import DirectoryResource
from nymtx.keys import KeyPair
from nymtx.topology import GatewayInfo, MixNodeInfo, Topology

START = 1_700_000_000.0
URL = "http://directory.test:8080"


class Canned(Resource):
    """Answers every request with one status and body; records the requests."""

    isLeaf = True

    def __init__(self, code, body):
        super().__init__()
        self.code, self.body = code, body
        self.requests = []

    def render(self, request):
        self.requests.append((request, request.content.read()))
        request.setResponseCode(self.code)
        return self.body


class Hanging(Resource):
    isLeaf = True

    def render(self, request):
        return NOT_DONE_YET


class ClientTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = Registry(self.clock)
        self.stub = StubTreq(DirectoryResource(self.registry))
        self.client = DirectoryClient(URL + "/", self.stub)

    def test_announce_and_read_the_topology(self):
        mix = KeyPair.generate()
        gateway = KeyPair.generate()
        client_key = KeyPair.generate()
        self.assertEqual(self.successResultOf(self.client.announce_mixnode(
            {"host": "127.0.0.1:1789", "pubKey": mix.public_text, "layer": 2,
             "version": "0.5.0"})), {"ok": True})
        self.successResultOf(self.client.announce_gateway(
            {"host": "127.0.0.1:1790", "mixnetListener": "127.0.0.1:1790",
             "clientListener": "127.0.0.1:9000", "pubKey": gateway.public_text,
             "registeredClients": [{"pubKey": client_key.public_text}],
             "version": "0.5.0"}))
        topology = self.successResultOf(self.client.get_topology())
        self.assertIsInstance(topology, Topology)
        last_seen = int(START * 1e9)
        self.assertEqual(topology.mixnodes, (MixNodeInfo(
            NodeAddress.parse("127.0.0.1:1789"), mix.public_key, 2, last_seen, "0.5.0"),))
        self.assertEqual(topology.gateways, (GatewayInfo(
            NodeAddress.parse("127.0.0.1:1790"), NodeAddress.parse("127.0.0.1:9000"),
            gateway.public_key, (client_key.public_key,), last_seen, "0.5.0"),))

    def test_report_and_read_metrics(self):
        key = KeyPair.generate().public_text
        self.successResultOf(self.client.report_metrics(
            {"pubKey": key, "received": 4, "sent": {"127.0.0.1:1": 4}}))
        # shown once the window it fell in has ended (docs/directory.md)
        self.assertEqual(self.successResultOf(self.client.get_metrics()), [])
        self.clock.advance(60)
        self.successResultOf(self.client.report_metrics(
            {"pubKey": key, "received": 1, "sent": 1}))
        [metric] = self.successResultOf(self.client.get_metrics())
        self.assertEqual((metric["pubKey"], metric["received"], metric["sent"]), (key, 4, 4))

    def test_a_refused_announce_carries_the_servers_reason(self):
        f = self.failureOf(self.client.announce_mixnode(
            {"host": "127.0.0.1:1789", "pubKey": KeyPair.generate().public_text,
             "layer": 7, "version": "0.5.0"}), DirectoryError)
        self.assertIn("400", str(f.value))
        self.assertIn("layer: 7 is not a layer", str(f.value))
        self.assertIn("/api/presence/mixnodes", str(f.value))

    def failureOf(self, d, kind):
        return self.failureResultOf(d, kind)

    def canned(self, code, body, **kw):
        resource = Canned(code, body)
        return resource, DirectoryClient(URL, StubTreq(resource), **kw)

    def test_an_error_status_without_json(self):
        _, client = self.canned(500, b"<html>oops</html>")
        f = self.failureOf(client.get_topology(), DirectoryError)
        self.assertIn("500", str(f.value))
        self.assertIn("oops", str(f.value))

    def test_an_answer_that_is_not_json(self):
        _, client = self.canned(200, b"\xff not json")
        f = self.failureOf(client.get_metrics(), DirectoryError)
        self.assertIn("not JSON", str(f.value))

    def test_a_topology_of_the_wrong_shape(self):
        _, client = self.canned(200, b"[]")
        self.assertIn("not a JSON object",
                      str(self.failureOf(client.get_topology(), DirectoryError).value))
        _, client = self.canned(200, b"{}")
        self.assertIn("not a JSON array",
                      str(self.failureOf(client.get_metrics(), DirectoryError).value))

    def test_a_topology_that_cannot_be_read(self):
        _, client = self.canned(200, b'{"MixNodes": 5}')
        f = self.failureOf(client.get_topology(), DirectoryError)
        self.assertIn("cannot be read", str(f.value))

    def test_a_topology_is_parsed_by_topology_from_json(self):
        # Malformed entries are Topology.from_json's to drop, not the client's.
        key = KeyPair.generate().public_text
        _, client = self.canned(200, (
            '{"MixNodes": [{"host": "127.0.0.1:1", "pubKey": "%s", "layer": 1,'
            ' "lastSeen": 1, "version": "x"}, {"host": "bad"}], "MixProviderNodes": []}'
            % key).encode())
        topology = self.successResultOf(client.get_topology())
        self.assertEqual(len(topology.mixnodes), 1)

    def test_an_oversized_answer(self):
        _, client = self.canned(200, b"[" + b"1," * 1000 + b"1]", max_response_size=100)
        f = self.failureOf(client.get_metrics(), DirectoryError)
        self.assertIn("exceeds 100 bytes", str(f.value))

    def test_requests_carry_json(self):
        resource, client = self.canned(201, b'{"ok": true}')
        self.successResultOf(client.report_metrics({"a": 1}))
        [(request, body)] = resource.requests
        self.assertEqual(request.method, b"POST")
        self.assertEqual(request.uri, b"/api/metrics/mixes")
        self.assertEqual(request.requestHeaders.getRawHeaders(b"Content-Type"),
                         [b"application/json"])
        self.assertEqual(body, b'{"a": 1}')

    def test_unreachable(self):
        class Refusing:
            def request(self, method, url, **kwargs):
                return fail(ConnectionRefusedError("no one home"))
        client = DirectoryClient(URL, Refusing())
        f = self.failureOf(client.get_topology(), DirectoryError)
        self.assertIn("unreachable", str(f.value))
        self.assertIn(URL, str(f.value))
        self.assertIn("ConnectionRefusedError", str(f.value))

    def test_a_hung_directory_times_out(self):
        clock = Clock()
        client = DirectoryClient(URL, StubTreq(Hanging()), timeout=5.0, reactor=clock)
        d = client.announce_mixnode({})
        self.assertNoResult(d)
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        f = self.failureOf(d, DirectoryError)
        self.assertIn("no answer in time", str(f.value))

    def test_a_bad_url_is_refused_at_once(self):
        for url in ("127.0.0.1:8080", "ftp://x", None):
            with self.assertRaises(ValueError):
                DirectoryClient(url)
