"""The nym-directory tap and command, and the directory on real sockets."""

import io
import os
import sys

import treq
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from nymtx.directory import cli, tap
from nymtx.directory.client import DirectoryClient
from nymtx.directory.registry import Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import DirectoryService, ListenError
from nymtx.keys import KeyPair

LOCAL = "tcp:0:interface=127.0.0.1"


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):

    def test_defaults(self):
        options = parse()
        self.assertEqual(options["port"], "tcp:8080:interface=127.0.0.1")
        self.assertEqual(options["expiry"], 10.0)

    def test_a_bare_port_number_means_localhost(self):
        self.assertEqual(parse("--port", "9080")["port"], "tcp:9080:interface=127.0.0.1")

    def test_a_bad_endpoint_is_refused_clearly(self):
        for bad in ("bogus:1", "tcp:notaport", "tcp:1:nonsense=3"):
            e = self.assertRaises(usage.UsageError, parse, "--port", bad)
            self.assertIn("--port", str(e))
            self.assertIn(repr(bad), str(e))

    def test_a_bad_expiry_is_refused_clearly(self):
        for bad in ("soon", "0", "-3", "inf", "nan"):
            e = self.assertRaises(usage.UsageError, parse, "--expiry", bad)
            self.assertIn("--expiry", str(e))

    def test_make_service(self):
        service = tap.makeService(parse("--port", LOCAL, "--expiry", "3.5"))
        self.assertTrue(IService.providedBy(service))
        self.assertIsInstance(service, DirectoryService)
        self.assertEqual(service.registry.expiry, 3.5)
        self.assertEqual(service.description, LOCAL)

    def test_cli_refuses_a_bad_endpoint_without_a_traceback(self):
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["--port", "bogus:1"]), 2)
        self.assertIn("nym-directory: error: --port must be a server endpoint", err.getvalue())
        self.assertIn("'bogus:1'", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())


class RealSocketTests(TestCase):
    """The directory on 127.0.0.1 with the real treq."""

    @inlineCallbacks
    def start(self, description=LOCAL, **kwargs):
        registry = Registry(reactor)
        service = DirectoryService(serverFromString(reactor, description),
                                   make_site(registry), description, registry, **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.whenListening()
        return service, port

    def http(self, persistent=False):
        pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.addCleanup(pool.closeCachedConnections)
        return treq.client.HTTPClient(Agent(reactor, pool=pool))

    @inlineCallbacks
    def test_connections_past_the_maximum_are_closed_at_once(self):
        from twisted.internet.defer import Deferred, gatherResults
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol
        service, port = yield self.start(max_connections=2, fd_limit=lambda: 100_000)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        peers = []
        for _ in range(3):
            peer = Protocol()
            peer.lost = Deferred()
            peer.connectionLost = lambda reason, lost=peer.lost: lost.callback(None)
            yield connectProtocol(endpoint, peer)
            peers.append(peer)
        yield peers[2].lost  # idle, like a slowloris: the third is refused
        self.assertEqual(len(service._factory.protocols), 2)
        self.assertEqual(service._factory.refused, 1)
        for peer in peers[:2]:
            peer.transport.loseConnection()
        yield gatherResults([p.lost for p in peers[:2]])

    def test_max_connections_option(self):
        options = tap.Options()
        options.parseOptions(["--max-connections", "50"])
        self.assertEqual(options["max-connections"], 50)
        self.assertEqual(tap.makeService(options, reactor)._factory.max_connections, 50)
        for bad in ("0", "x", "-3"):
            with self.assertRaises(usage.UsageError):
                tap.Options().parseOptions(["--max-connections", bad])

    @inlineCallbacks
    def test_stopping_closes_persistent_connections(self):
        service, port = yield self.start()
        url = f"http://127.0.0.1:{port.getHost().port}/api/healthcheck"
        http = self.http(persistent=True)
        for _ in range(2):
            response = yield http.get(url)
            yield response.content()
        self.assertEqual(len(service._factory.protocols), 1)
        yield service.stopService()
        self.assertEqual(service._factory.protocols, {})

    @inlineCallbacks
    def test_announce_and_read_over_tcp(self):
        service, port = yield self.start()
        url = f"http://127.0.0.1:{port.getHost().port}"
        client = DirectoryClient(url, self.http())
        key = KeyPair.generate()
        yield client.announce_mixnode({"host": "127.0.0.1:1789", "pubKey": key.public_text,
                                       "layer": 1, "version": "0.5.0"})
        topology = yield client.get_topology()
        self.assertEqual([m.public_key for m in topology.mixnodes], [key.public_key])
        response = yield self.http().get(url + "/")
        page = yield response.text()
        self.assertIn(key.public_text, page)

    @inlineCallbacks
    def test_an_oversized_body_over_tcp_is_413(self):
        service, port = yield self.start()
        url = f"http://127.0.0.1:{port.getHost().port}/api/presence/mixnodes"
        response = yield self.http().post(url, data=b"{" + b" " * (1024 * 1024) + b"}")
        self.assertEqual(response.code, 413)
        body = yield response.json()
        self.assertIn("limit", body["error"])

    @inlineCallbacks
    def test_a_port_in_use_is_a_clear_error(self):
        _, port = yield self.start()
        taken = f"tcp:{port.getHost().port}:interface=127.0.0.1"
        second = DirectoryService(serverFromString(reactor, taken),
                                  make_site(Registry(reactor)), taken)
        second.startService()
        f = yield self.assertFailure(second.whenListening(), ListenError)
        self.assertIn(f"cannot listen on {taken}", str(f))
        self.assertIn("in use", str(f))
        yield second.stopService()
        # twistd binds in privilegedStartService and must fail there.
        third = DirectoryService(serverFromString(reactor, taken),
                                 make_site(Registry(reactor)), taken)
        self.assertRaises(ListenError, third.privilegedStartService)

    @inlineCallbacks
    def test_nym_directory_on_a_port_in_use_exits_1_with_one_line(self):
        _, port = yield self.start()
        taken = f"tcp:{port.getHost().port}:interface=127.0.0.1"
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "nymtx.directory.cli", "--port", taken],
            env=os.environ)
        self.assertEqual(code, 1, err)
        self.assertIn(b"error: could not start: the directory cannot listen on " +
                      taken.encode(), err)
        self.assertNotIn(b"Traceback", err)

    @inlineCallbacks
    def test_the_default_client_keeps_and_closes_its_own_pool(self):
        service, port = yield self.start()
        client = DirectoryClient(f"http://127.0.0.1:{port.getHost().port}")
        self.addCleanup(client.close)
        yield client.get_metrics()
        yield client.get_metrics()
        self.assertEqual(len(service._factory.protocols), 1)
        yield client.close()
        yield service.stopService()
        self.assertEqual(service._factory.protocols, {})

    @inlineCallbacks
    def test_the_default_client_does_not_log_each_connection(self):
        # While the directory is down a node retries every second or so:
        # Twisted's "Starting factory" lines would be two log lines a try.
        service, port = yield self.start()
        client = DirectoryClient(f"http://127.0.0.1:{port.getHost().port}")
        self.addCleanup(client.close)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield client.get_metrics()
        yield client.close()
        yield service.stopService()
        texts = [formatEvent(e) for e in events]
        self.assertFalse([t for t in texts if "ClientFactory" in t], texts)
