"""The gateway on real loopback sockets, driven through the client link."""

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx import sphinx
from nymtx.addressing import NodeAddress
from nymtx.gateway.link import GatewayLink, GatewayLinkError, register
from nymtx.gateway.service import GatewayService
from nymtx.keys import KeyPair
from nymtx.testing import FakeDirectory

LOCAL = "tcp:0:interface=127.0.0.1"


def sleep(seconds):
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class Sender(Protocol):
    """Writes packets on a mix link, as a mixnode would."""

    def connectionMade(self):
        self.closed = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


class GatewayEndToEnd(TestCase):
    timeout = 20

    def setUp(self):
        self.keys = KeyPair.generate()
        self.data_dir = self.mktemp()
        self.alice = KeyPair.generate()

    @inlineCallbacks
    def start(self, **kw):
        kw.setdefault("commit_interval", 0.001)
        service = GatewayService(reactor, self.keys, self.data_dir, LOCAL, LOCAL,
                                 "127.0.0.1", **kw)
        service.startService()
        yield service.whenListening()
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service):
        if service.running:
            return service.stopService()

    def address(self, service, which="client"):
        port = service.client_port if which == "client" else service.mix_port
        return NodeAddress.parse(f"127.0.0.1:{port}")

    @inlineCallbacks
    def link(self, service, keys, token=None):
        link = GatewayLink(reactor, self.address(service), keys, self.keys.public_key)
        link.start()
        self.addCleanup(link.stop)
        yield link.when_ready()
        return link

    def packet(self, service, message, route=None):
        gateway_hop = sphinx.Hop(self.address(service, "mix").to_bytes(), self.keys.public_key)
        route = (route or []) + [gateway_hop]
        return sphinx.build_packet(route, self.alice.public_key, b"\x00" * 16, message,
                                   [1_000_000] * len(route))

    @inlineCallbacks
    def send_packets(self, address, packets):
        proto = yield connectProtocol(HostnameEndpoint(reactor, address.host, address.port),
                                      Sender())
        proto.transport.write(b"".join(packets))
        proto.transport.loseConnection()
        yield proto.closed

    @inlineCallbacks
    def wait_stored(self, service, count):
        for _ in range(400):
            if service.store.stored >= count:
                return
            yield sleep(0.005)
        self.fail(f"only {service.store.stored} of {count} messages stored")

    @inlineCallbacks
    def test_one_hop_register_pull_ack(self):
        service = yield self.start()
        token = yield register(reactor, self.address(service), self.alice,
                               gateway_key=self.keys.public_key)
        self.assertIsNone(token)  # no bearer secret: the key is proven in each handshake
        self.assertTrue(service.store.is_registered(self.alice.public_key))
        yield self.send_packets(self.address(service, "mix"),
                                [self.packet(service, b"m%d" % i) for i in range(3)])
        yield self.wait_stored(service, 3)
        link = yield self.link(service, self.alice, token)
        got = yield link.pull()
        self.assertEqual([m for _, m in got], [b"m0", b"m1", b"m2"])
        # sent once per connection; not acknowledged: delivered again on the next
        self.assertEqual((yield link.pull()), [])
        yield link.stop()
        link = yield self.link(service, self.alice)
        again = yield link.pull()
        self.assertEqual(again, got)
        # the ack rides on the next pull, and fires once that pull is answered
        deleted = link.ack([i for i, _ in got])
        self.assertNoResult(deleted)
        self.assertEqual((yield link.pull()), [])
        self.assertEqual((yield deleted), 3)
        self.assertEqual(service.store.usage(self.alice.public_key), (0, 0))

    @inlineCallbacks
    def test_survives_restart(self):
        service = yield self.start()
        token = yield register(reactor, self.address(service), self.alice, self.keys.public_key)
        yield self.send_packets(self.address(service, "mix"), [self.packet(service, b"kept")])
        yield self.wait_stored(service, 1)
        link = yield self.link(service, self.alice, token)
        [(ident, _)] = yield link.pull()   # pulled, never acknowledged
        yield link.stop()
        yield service.stopService()
        again = yield self.start()
        self.assertTrue(again.store.is_registered(self.alice.public_key))
        self.assertEqual(again.presence()["registeredClients"],
                         [{"pubKey": self.alice.public_text}])
        link = yield self.link(again, self.alice, token)
        self.assertEqual((yield link.pull()), [(ident, b"kept")])

    @inlineCallbacks
    def test_refused_key_backs_off(self):
        # a full gateway refuses a new key inside the channel: the link says
        # why and backs off, as it did for a wrong token on the old link
        service = yield self.start(max_clients=1)
        yield register(reactor, self.address(service), KeyPair.generate(),
                       self.keys.public_key)
        link = GatewayLink(reactor, self.address(service), self.alice, self.keys.public_key,
                           initial_backoff=5)
        link.start()
        self.addCleanup(link.stop)
        while link.last_error is None:
            yield sleep(0.005)
        self.assertIn("(full)", str(link.last_error))
        e = yield self.assertFailure(link.pull(), GatewayLinkError)
        self.assertIn("not connected", str(e))
        self.assertIn("full", str(e))

    @inlineCallbacks
    def test_wrong_gateway_key(self):
        service = yield self.start()
        d = register(reactor, self.address(service), self.alice,
                     gateway_key=KeyPair.generate().public_key)
        e = yield self.assertFailure(d, GatewayLinkError)
        self.assertIn("handshake", str(e))
        self.assertFalse(service.store.is_registered(self.alice.public_key))

    @inlineCallbacks
    def test_register_refused_connection(self):
        service = yield self.start()
        address = self.address(service)
        yield service.stopService()
        e = yield self.assertFailure(register(reactor, address, self.alice, self.keys.public_key),
                                     GatewayLinkError)
        self.assertIn("cannot connect", str(e))

    @inlineCallbacks
    def test_link_reconnects(self):
        service = yield self.start()
        token = yield register(reactor, self.address(service), self.alice, self.keys.public_key)
        link = yield self.link(service, self.alice, token)
        yield service.client_listener.factory.close_all(abort=True)
        yield self.assertFailure(link.pull(), GatewayLinkError)
        yield link.when_ready()
        self.assertEqual((yield link.pull()), [])

    @inlineCallbacks
    def test_port_in_use(self):
        service = yield self.start()
        other = GatewayService(reactor, KeyPair.generate(), self.mktemp(),
                               f"tcp:{service.mix_port}:interface=127.0.0.1", LOCAL,
                               "127.0.0.1")
        other.startService()
        e = yield self.assertFailure(other.whenListening(), RuntimeError)
        self.assertIn("mix listener", str(e))
        self.assertIn(str(service.mix_port), str(e))
        yield other.stopService()

    @inlineCallbacks
    def test_bad_endpoint(self):
        other = GatewayService(reactor, KeyPair.generate(), self.mktemp(), "nonsense:1",
                               LOCAL, "127.0.0.1")
        other.startService()
        e = yield self.assertFailure(other.whenListening(), RuntimeError)
        self.assertIn("mix listener: listening endpoint 'nonsense:1'", str(e))
        yield other.stopService()

    def test_bad_announce_host(self):
        e = self.assertRaises(ValueError, GatewayService, reactor, self.keys, self.mktemp(),
                              LOCAL, LOCAL, "gateway.example")
        self.assertIn("gateway.example", str(e))

    @inlineCallbacks
    def test_presence(self):
        directory = FakeDirectory()
        service = yield self.start(directory=directory, location="lab")
        yield register(reactor, self.address(service), self.alice, self.keys.public_key)
        while len(directory.announced_gateways) < 1:
            yield sleep(0.005)
        first = directory.announced_gateways[0]
        self.assertEqual(first["host"], f"127.0.0.1:{service.mix_port}")
        self.assertEqual(first["mixnetListener"], first["host"])
        self.assertEqual(first["clientListener"], f"127.0.0.1:{service.client_port}")
        self.assertEqual(first["pubKey"], self.keys.public_text)
        self.assertEqual(first["location"], "lab")
        self.assertIn("version", first)
        self.assertEqual(service.presence()["registeredClients"],
                         [{"pubKey": self.alice.public_text}])

    @inlineCallbacks
    def test_through_three_mixnodes(self):
        from nymtx.mixnode.service import MixnodeService
        service = yield self.start()
        token = yield register(reactor, self.address(service), self.alice, self.keys.public_key)
        hops = []
        for layer in (1, 2, 3):
            keys = KeyPair.generate()
            node = MixnodeService(reactor, keys, layer, LOCAL, "127.0.0.1")
            node.startService()
            self.addCleanup(node.stopService)
            port = yield node.whenListening()
            hops.append(sphinx.Hop(
                NodeAddress.parse(f"127.0.0.1:{port.getHost().port}").to_bytes(),
                keys.public_key))
        messages = [b"through the mixnet %d" % i for i in range(5)]
        packets = [self.packet(service, m, route=list(hops)) for m in messages]
        first = NodeAddress.from_bytes(hops[0].address)
        yield self.send_packets(first, packets)
        yield self.wait_stored(service, len(messages))
        link = yield self.link(service, self.alice, token)
        got = yield link.pull()
        self.assertEqual(sorted(m for _, m in got), sorted(messages))


class WithDirectory(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_announces_to_a_real_directory_and_stops_cleanly(self):
        from nymtx.directory import tap as directory_tap
        from nymtx.directory.client import DirectoryClient
        options = directory_tap.Options()
        options.parseOptions(["--port", LOCAL])
        directory = directory_tap.makeService(options, reactor)
        directory.startService()
        port = yield directory.whenListening()
        self.addCleanup(directory.stopService)
        url = f"http://127.0.0.1:{port.getHost().port}"
        keys, alice = KeyPair.generate(), KeyPair.generate()
        service = GatewayService(reactor, keys, self.mktemp(), LOCAL, LOCAL, "127.0.0.1",
                                 url, presence_interval=0.05)
        service.startService()
        _, client_port = yield service.whenListening()
        yield register(reactor, NodeAddress.parse(f"127.0.0.1:{client_port}"), alice,
                       keys.public_key)
        reader = DirectoryClient(url, reactor=reactor, treq=service.directory.treq)
        for _ in range(200):
            topology = yield reader.get_topology()
            gateway = topology.gateway_by_key(keys.public_key)
            if gateway is not None and alice.public_key in gateway.registered_clients:
                break
            yield sleep(0.02)
        else:
            self.fail("the gateway and its client never appeared in the topology")
        self.assertEqual(gateway.client_listener.port, client_port)
        self.assertEqual(topology.gateway_for(alice.public_key), gateway)
        yield service.stopService()


    @inlineCallbacks
    def test_a_directory_that_is_down_costs_no_log_line_a_retry(self):
        # Twisted logs "Starting factory" and "Stopping factory" at info for
        # every connection of a pool that is not quiet: two lines each retry.
        import socket
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        down = s.getsockname()[1]
        s.close()  # nobody listens there now: every announce is refused
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = GatewayService(reactor, KeyPair.generate(), self.mktemp(), LOCAL, LOCAL,
                                 "127.0.0.1", f"http://127.0.0.1:{down}",
                                 presence_interval=0.05)
        service.startService()
        yield service.whenListening()
        yield sleep(1.0)
        yield service.stopService()
        self.assertGreaterEqual(service.heartbeat.runs, 3)
        texts = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.info]
        self.assertFalse([t for t in texts if "HTTP11ClientFactory" in t], texts)


class PresenceSizeTests(SynchronousTestCase):
    def test_a_full_gateway_fits_the_directorys_body_limit(self):
        # registeredClients grows with every registration; past the
        # directory's limit the presence is refused (413) and the gateway
        # drops out of the topology, so max_clients must keep it under.
        import json
        import os
        from twisted.internet.task import Clock
        from nymtx.directory.presence import MAX_BODY_SIZE
        service = GatewayService(Clock(), KeyPair.generate(), self.mktemp(), LOCAL, LOCAL,
                                 "255.255.255.255", location="x" * 100)
        self.addCleanup(service.store.close)
        store = service.store
        for _ in range(store.max_clients):
            store.register(os.urandom(32), b"t" * 32)
        self.assertFalse(store.has_room(os.urandom(32)))
        service.mix_port = service.client_port = 65535
        body = json.dumps(service.presence()).encode("utf-8")
        self.assertLess(len(body), MAX_BODY_SIZE)
