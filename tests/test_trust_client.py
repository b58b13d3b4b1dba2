"""TrustedDirectoryClient: nodes and clients facing several directories
through StubTreq around the real directory resource."""

import json

from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from nymtx.directory.client import DirectoryClient, DirectoryError
from nymtx.directory.resource import DirectoryResource
from nymtx.directory.signed import SignedRegistry
from nymtx.interfaces import IDirectoryClient
from nymtx.trust.agreement import TrustedDirectories
from nymtx.keys import encode_key
from nymtx.trust.client import SigningDirectoryClient, TopologyExpired, TrustedDirectoryClient
from nymtx.trust.metrics import parse_signed_metrics, sign_metrics
from nymtx.trust.presence import NS, parse_signed_gateway, parse_signed_mixnode
from nymtx.trust.rotation import KeyPeriod, RotationSchedule

from tests.trustnet import document, gateway, identity, mixnode, network, sphinx

START = 1_700_000_000.0
A, B, L = identity(501), identity(502), identity(666)


class _Liar(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body, self.code = b"", 200

    def render(self, request):
        request.setResponseCode(self.code)
        return self.body


class TrustedDirectoryClientTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.registries = [SignedRegistry(self.clock, key) for key in (A, B)]
        self.liar = _Liar()
        resources = [DirectoryResource(r) for r in self.registries] + [self.liar]
        self.directories = [
            DirectoryClient(f"http://directory-{i}.test", treq=StubTreq(resource))
            for i, resource in enumerate(resources)]
        self.trust = TrustedDirectories([A.public_key, B.public_key, L.public_key], 2)
        self.client = TrustedDirectoryClient(self.directories, self.trust, self.clock)
        self.nodes = network()

    def now(self):
        return int(self.clock.seconds() * NS)

    def announce_all(self):
        for node in self.nodes:
            announce = (self.client.announce_mixnode if node.layer
                        else self.client.announce_gateway)
            self.successResultOf(announce(node.presence(self.now()).to_json()))

    def test_provides_the_interface(self):
        verifyObject(IDirectoryClient, self.client)

    def test_one_lying_directory(self):
        self.announce_all()  # the liar refuses them (405): the others took them
        fakes = [mixnode(200 + i, 2) for i in range(5)] + [gateway(301, [sphinx(901)], port=1)]
        self.liar.body = document(L, 1, self.now(), [
            n.presence(self.now()) for n in self.nodes[2:] + fakes]).to_bytes()
        topology = self.successResultOf(self.client.get_topology())
        self.assertEqual({n.public_key for n in topology.mixnodes},
                         {n.sphinx_key for n in self.nodes[:6]})
        self.assertEqual(topology.gateway_for(sphinx(901)).public_key, sphinx(42))

    def test_garbage_or_silence_from_one_directory(self):
        self.announce_all()
        for body, code in [(b"<html>", 200), (b'{"MixNodes": []}', 200), (b"", 500),
                           (b"[1, 2]", 200)]:
            self.liar.body, self.liar.code = body, code
            topology = self.successResultOf(self.client.get_topology())
            self.assertEqual(len(topology.mixnodes), 6)
        self.assertIn("not a JSON object", self.client._trouble["http://directory-2.test"])
        self.assertIsNone(self.client._trouble["http://directory-0.test"])

    def test_keeps_the_last_good_documents_until_they_expire(self):
        self.announce_all()
        self.successResultOf(self.client.get_topology())
        # both honest directories stop answering
        for d in self.directories[:2]:
            d.treq = StubTreq(_Dead())
        self.clock.advance(100)
        self.assertEqual(len(self.successResultOf(self.client.get_topology()).mixnodes), 6)
        self.clock.advance(20)
        failure = self.failureResultOf(self.client.get_topology(), TopologyExpired)
        self.assertIn("0 of 3 pinned directories", failure.getErrorMessage())
        self.assertIsInstance(failure.value, DirectoryError)

    def test_announce_fails_only_when_every_directory_does(self):
        self.liar.code = 500
        presence = self.nodes[0].presence(self.now()).to_json()
        self.successResultOf(self.client.announce_mixnode(presence))
        for d in self.directories[:2]:
            d.treq = StubTreq(_Dead())
        failure = self.failureResultOf(self.client.announce_mixnode(presence), DirectoryError)
        self.assertIn("every directory failed", failure.getErrorMessage())

    def test_metrics(self):
        self.announce_all()
        node = self.nodes[0]
        self.successResultOf(self.client.report_metrics(sign_metrics(
            node.identity, node.sphinx_key, {"received": 1, "sent": 1}, self.now()).to_json()))
        self.assertEqual(self.successResultOf(self.client.get_metrics()), [])
        self.successResultOf(self.client.close())


class _Dead(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        return b'{"error": "down"}'


class _Recorder:
    """Records what a node would send to its directory."""

    def __init__(self):
        self.sent = []

    def announce_mixnode(self, body):
        self.sent.append(("mixnode", body))
        return succeed(None)

    def announce_gateway(self, body):
        self.sent.append(("gateway", body))
        return succeed(None)

    def report_metrics(self, body):
        self.sent.append(("metrics", body))
        return succeed(None)

    def get_topology(self):
        return succeed("topology")

    def get_metrics(self):
        return succeed([])

    def close(self):
        return succeed(None)


class SigningDirectoryClientTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.inner = _Recorder()
        self.client = SigningDirectoryClient(self.inner, identity(1), self.clock)
        self.seed = {"host": "127.0.0.1:1789", "pubKey": encode_key(sphinx(1)), "layer": 2,
                     "version": "0.5.0", "location": "unknown"}

    def test_provides_the_interface(self):
        verifyObject(IDirectoryClient, self.client)

    def test_presences_and_metrics_go_out_signed(self):
        self.successResultOf(self.client.announce_mixnode(self.seed))
        self.clock.advance(1)
        self.successResultOf(self.client.report_metrics(
            {"pubKey": encode_key(sphinx(1)), "received": 3, "sent": {"1.2.3.4:5": 2},
             "dropped": {}}))
        (kind, presence), (_, metrics) = self.inner.sent
        signed = parse_signed_mixnode(json.dumps(presence).encode())
        self.assertEqual((signed.identity_key, signed.presence.timestamp),
                         (identity(1).public_key, int(START * NS)))
        report = parse_signed_metrics(json.dumps(metrics).encode())
        self.assertEqual((report.metrics.sent, report.metrics.timestamp),
                         (2, int((START + 1) * NS)))
        self.assertEqual(self.successResultOf(self.client.get_topology()), "topology")

    def test_a_gateway(self):
        seed = {"host": "127.0.0.1:1790", "mixnetListener": "127.0.0.1:1790",
                "clientListener": "127.0.0.1:9000", "pubKey": encode_key(sphinx(2)),
                "registeredClients": [{"pubKey": encode_key(sphinx(7))}], "version": "v"}
        self.successResultOf(self.client.announce_gateway(seed))
        signed = parse_signed_gateway(json.dumps(self.inner.sent[0][1]).encode())
        self.assertEqual(signed.clients, (sphinx(7),))

    def test_rotation_schedule_sets_the_keys(self):
        now = int(START * NS)
        self.client.schedule = RotationSchedule([KeyPeriod(sphinx(1), 0)]).rotate(
            sphinx(5), now + NS)
        self.successResultOf(self.client.announce_mixnode(self.seed))
        self.clock.advance(1)
        self.successResultOf(self.client.announce_mixnode(self.seed))
        first, second = (parse_signed_mixnode(json.dumps(b).encode()).presence
                         for _, b in self.inner.sent)
        self.assertEqual((first.sphinx_key, first.next_sphinx_key, first.next_key_from),
                         (sphinx(1), sphinx(5), now + NS))
        self.assertEqual((second.sphinx_key, second.next_sphinx_key), (sphinx(5), None))

    def test_what_cannot_be_signed_fails_clearly(self):
        failure = self.failureResultOf(self.client.announce_mixnode({"host": "x"}),
                                       DirectoryError)
        self.assertIn("cannot sign the presence: host", failure.getErrorMessage())
        failure = self.failureResultOf(self.client.report_metrics({}), DirectoryError)
        self.assertIn("cannot sign the metrics", failure.getErrorMessage())
        self.assertEqual(self.inner.sent, [])


class _Silent(Resource):
    """A directory that accepts the request and never answers."""

    isLeaf = True

    def render(self, request):
        return NOT_DONE_YET


class SilentDirectoryTests(SynchronousTestCase):
    def test_a_directory_that_answers_nothing(self):
        clock = Clock()
        clock.advance(START)
        registry = SignedRegistry(clock, A)
        stub = StubTreq(DirectoryResource(registry))
        honest = DirectoryClient("http://a.test", treq=stub, reactor=clock)
        silent = DirectoryClient("http://silent.test", treq=StubTreq(_Silent()),
                                 reactor=clock, timeout=5.0)
        trust = TrustedDirectories([A.public_key, L.public_key], 1)
        client = TrustedDirectoryClient([honest, silent], trust, clock)
        now = int(START * NS)
        for node in network():
            body = node.presence(now).to_json()
            self.successResultOf((honest.announce_mixnode if node.layer
                                  else honest.announce_gateway)(body))
        d = client.get_topology()
        self.assertNoResult(d)
        clock.advance(5)
        stub.flush()
        topology = self.successResultOf(d)
        self.assertEqual(len(topology.mixnodes), 6)
        self.assertIn("no answer in time", client._trouble["http://silent.test"])
