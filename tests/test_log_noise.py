"""What reaches the log at info: no line a second, a few lines a websocket, no traceback."""

import io
import itertools
import random
import warnings

import txaio
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import LogBeginner, LogLevel, LogPublisher, Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.apiclient import connect_api
from nymtx.client.api import ApiDispatcher
from nymtx.client.config import ClientConfig
from nymtx.client.core import ClientCore
from nymtx.client.inbox import Inbox
from nymtx.client.websocket import MixWebSocketProtocol, websocket_site
from nymtx.keys import KeyPair, encode_key
from nymtx.logfilter import filter_log, level_filter
from nymtx.testing import FakeLinks, FakeDirectory, FakeGatewayLink, FakeNetwork


class _Stdio:
    stdout = io.StringIO()
    stderr = io.StringIO()


def beginner_with(publisher):
    """A LogBeginner of its own: the tests never touch the process's global one."""
    return LogBeginner(publisher, io.StringIO(), _Stdio(), warnings)


def keep_txaio_level(case):
    level = txaio.get_global_log_level()
    case.addCleanup(txaio.set_global_log_level, level)


class FilterLogTests(SynchronousTestCase):
    def setUp(self):
        keep_txaio_level(self)
        self.publisher = LogPublisher()
        self.beginner = beginner_with(self.publisher)
        self.log = Logger(observer=self.publisher, namespace="test")
        self.seen = []

    def texts(self):
        return [(e["log_level"].name, e["log_format"]) for e in self.seen]

    def test_only_info_and_above_reach_the_observers_twistd_begins_with(self):
        self.log.debug("buffered debug")
        self.log.info("buffered info")
        filter_log("info", beginner=self.beginner)
        self.beginner.beginLoggingTo([self.seen.append], redirectStandardIO=False)
        self.log.debug("debug")
        self.log.info("info")
        self.log.error("error")
        self.assertEqual(self.texts(), [("info", "buffered info"), ("info", "info"),
                                        ("error", "error")])

    def test_the_last_level_wins_and_the_filter_goes_in_once(self):
        filter_log("info", beginner=self.beginner)
        filter_log("warn", beginner=self.beginner)
        self.beginner.beginLoggingTo([self.seen.append], redirectStandardIO=False)
        # beginLoggingTo is the class's own again: a second begin is not filtered twice
        self.assertNotIn("beginLoggingTo", vars(self.beginner))
        self.log.info("info")
        self.log.warn("warn")
        self.assertEqual(self.texts(), [("warn", "warn")])

    def test_debug_lets_everything_through(self):
        filter_log("debug", beginner=self.beginner)
        self.beginner.beginLoggingTo([self.seen.append], redirectStandardIO=False)
        self.log.debug("debug")
        self.assertEqual(self.texts(), [("debug", "debug")])

    def test_a_level_that_is_not_one(self):
        for bad in ("loud", "INFO ", "", None):
            with self.assertRaises(ValueError) as cm:
                level_filter(bad)
            self.assertIn("debug, info, warn, error, critical", str(cm.exception))
        self.assertRaises(ValueError, filter_log, "loud", beginner=self.beginner)
        self.assertNotIn("beginLoggingTo", vars(self.beginner))

    def test_autobahns_debug_is_not_even_emitted_unless_asked_for(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        filter_log("info", beginner=self.beginner)
        MixWebSocketProtocol.log.debug("autobahn at debug")
        self.assertEqual(events, [])
        filter_log("debug", beginner=self.beginner)
        MixWebSocketProtocol.log.debug("autobahn at debug")
        self.assertEqual([e["log_format"] for e in events], ["autobahn at debug"])


class _LoopBack(FakeLinks):
    """Mix links that deliver every packet straight to the gateway's mailbox
    (the one fake of IPacketLinks, nymtx.testing.FakeLinks, plus delivery)."""

    def __init__(self, network, gateway_link):
        super().__init__()
        self.network = network
        self.gateway_link = gateway_link
        self.ids = itertools.count(1)

    def send(self, address, packet):
        super().send(address, packet)
        _, message, _ = self.network.unwrap(packet)
        self.gateway_link.mail.append((next(self.ids), message))


class QuietClientTests(SynchronousTestCase):
    def test_a_minute_of_loop_cover_logs_no_line_a_second_at_info(self):
        clock = Clock()
        keys = KeyPair.generate()
        network = FakeNetwork(clients=[keys.public_key])
        config = ClientConfig.new(
            self.mktemp(), "Alice", provider_id=encode_key(network.gateway_keys.public_key),
            provider_authtoken=encode_key(bytes(32)))
        link = FakeGatewayLink()
        inbox = Inbox(":memory:", clock)
        self.addCleanup(inbox.close)
        core = ClientCore(clock, config, keys, FakeDirectory(network.topology()),
                          _LoopBack(network, link), link, inbox, rng=random.Random(9))
        publisher = LogPublisher()
        beginner = beginner_with(publisher)
        everything, shown = [], []
        publisher.addObserver(everything.append)
        filter_log("info", beginner=beginner)
        keep_txaio_level(self)
        beginner.beginLoggingTo([shown.append], redirectStandardIO=False)
        globalLogPublisher.addObserver(publisher)  # the core logs to the global one
        self.addCleanup(globalLogPublisher.removeObserver, publisher)
        core.start()
        for _ in range(600):
            clock.advance(0.1)
        core.stop()
        # the cover did come back every second, and the core said so at debug ...
        covers = [e for e in everything if "payload(s)" in e["log_format"]]
        self.assertGreater(len(covers), 30)
        self.assertTrue(all(e["log_level"] == LogLevel.debug for e in covers))
        # ... which the log at info never shows: what it shows is a few lines, once
        self.assertLessEqual(len(shown), 3, [e["log_format"] for e in shown])


class WebSocketNoiseTests(TestCase):
    """A real websocket over a real socket: connect, one request, a clean close."""

    async def test_connect_and_close_log_a_few_lines_and_no_traceback(self):
        class Core:
            address = KeyPair.generate().public_text

            def clients(self):
                return []
        site = websocket_site(ApiDispatcher(Core()), reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        api = await connect_api(reactor, f"ws://127.0.0.1:{port.getHost().port}/mix")
        answer = await api.request({"type": "ownDetails"})
        self.assertEqual(answer["address"], Core.address)
        await api.close()
        # the server sees the close a moment after the client does
        from twisted.internet.task import deferLater
        await deferLater(reactor, 0.1, lambda: None)
        shown = [e for e in events if e["log_level"] >= LogLevel.info]
        self.assertLessEqual(len(shown), 3, [e.get("log_format") for e in shown])
        self.assertEqual([e for e in events if "log_failure" in e], [])
        # autobahn's debug output (options, headers, frames) is not even produced
        self.assertEqual([e.get("log_format") for e in events
                          if e["log_level"] == LogLevel.debug], [])
