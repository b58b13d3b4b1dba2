"""TrustedDirectoryClient: nodes and clients facing several directories
through StubTreq around the real directory resource."""

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from nymtx.directory.client import DirectoryClient, DirectoryError
from nymtx.directory.resource import DirectoryResource
from nymtx.directory.signed import SignedRegistry
from nymtx.interfaces import IDirectoryClient
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.client import TopologyExpired, TrustedDirectoryClient
from nymtx.trust.metrics import sign_metrics
from nymtx.trust.presence import NS

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
