"""The client core on task.Clock with recording fakes of its collaborators."""

import random
import statistics

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from nymtx.client.config import ClientConfig
from nymtx.client.core import ClientCore, ClientStopped, SendError, parse_recipient
from nymtx.client.cover import LoopCover
from nymtx.client.inbox import Inbox
from nymtx.interfaces import IInbox
from nymtx.keys import KeyPair, encode_key
from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork as Network


@implementer(IInbox)
class RecordingInbox(Inbox):
    """The real inbox, adding its commits to a shared list of events."""

    def __init__(self, events, *args):
        super().__init__(*args)
        self.events = events

    def store(self, messages):
        stored = super().store(messages)
        self.events.append(("commit", tuple(i for i, _ in messages)))
        return stored


def run_until(clock, end):
    """Advance to each pending call's exact time up to *end*.

    Clock.advance(step) runs a call late (at the end of the step), and a
    Poisson loop reschedules from "now", so stepping would stretch the gaps.
    """
    while True:
        calls = clock.getDelayedCalls()
        next_time = min((c.getTime() for c in calls), default=None)
        if next_time is None or next_time > end:
            break
        clock.advance(max(0.0, next_time - clock.seconds()))
    clock.advance(max(0.0, end - clock.seconds()))


def make_core(case, topology="default", **config_values):
    clock = Clock()
    keys = KeyPair.generate()
    bob = KeyPair.generate()
    network = Network(clients=[keys.public_key, bob.public_key])
    if topology == "default":
        topology = network.topology()
    values = dict(provider_id=encode_key(network.gateway_keys.public_key),
                  provider_authtoken=encode_key(bytes(32)))
    values.update(config_values)
    config = ClientConfig.new(case.mktemp(), "Alice", **values)
    events = []
    link = FakeGatewayLink(events)
    inbox = RecordingInbox(events, ":memory:", clock)
    core = ClientCore(clock, config, keys, FakeDirectory(topology), FakeLinks(), link, inbox,
                      rng=random.Random(4))
    case.addCleanup(inbox.close)
    return core, network, bob, clock


def run(clock, seconds, step=0.05):
    """Advance *clock* by *seconds* in small steps: a Clock runs each call
    due once per advance, so a loop needs many advances to tick often."""
    for _ in range(int(seconds / step)):
        clock.advance(step)


class ParseRecipientTests(SynchronousTestCase):
    def test_plain_and_at_gateway(self):
        a, g = KeyPair.generate(), KeyPair.generate()
        self.assertEqual(parse_recipient(a.public_text), (a.public_key, None))
        self.assertEqual(parse_recipient(f"{a.public_text}@{g.public_text}"),
                         (a.public_key, g.public_key))

    def test_errors_name_the_problem(self):
        for bad, fragment in [("0OIl", "not base58"), ("", "empty"),
                              (5, "not int"), ("abc", "decodes to"),
                              (KeyPair.generate().public_text + "@xyz", "gateway")]:
            with self.assertRaises(SendError) as cm:
                parse_recipient(bad)
            self.assertIn(fragment, str(cm.exception))


class SendingTests(SynchronousTestCase):
    def test_message_too_long(self):
        core, network, bob, clock = make_core(self)
        with self.assertRaises(SendError) as cm:
            core.send(bob.public_text, b"x" * 976)
        self.assertEqual(str(cm.exception),
                         "message too long. Sent 976 bytes, but the maximum is 975")
        core.send(bob.public_text, b"x" * 975)
        self.assertEqual(core.queued, 1)

    def test_unknown_recipient(self):
        core, network, bob, clock = make_core(self)
        core.start()
        stranger = KeyPair.generate().public_text
        with self.assertRaises(SendError) as cm:
            core.send(stranger, b"hi")
        self.assertIn(stranger, str(cm.exception))
        self.assertIn("unknown recipient", str(cm.exception))
        # Given with its gateway, the same recipient is fine.
        d = core.send(f"{stranger}@{encode_key(network.gateway.public_key)}", b"hi")
        with self.assertRaises(SendError) as cm:
            core.send(f"{stranger}@{KeyPair.generate().public_text}", b"hi")
        self.assertIn("unknown gateway", str(cm.exception))
        core.stop()
        self.failureResultOf(d, ClientStopped)

    def test_real_message_replaces_cover_in_sending_stream(self):
        core, network, bob, clock = make_core(self)
        core.start()
        sent = core.send(bob.public_text, "héllo")
        results = []
        sent.addCallback(results.append)
        # Advance until the first packet of any stream leaves.
        while not core.links.packets:
            clock.advance(0.01)
        while core.sent_real == 0:
            clock.advance(0.01)
        self.assertEqual(results, [None])
        real = [network.unwrap(p) for _, p in core.links.packets]
        destinations = [(d, m) for d, m, _ in real]
        self.assertIn((bob.public_key, "héllo".encode()), destinations)
        for address, _ in core.links.packets:
            self.assertEqual(address, network.mixnodes[0].address)
        for _, _, delays in real:
            self.assertEqual(len(delays), 4)
        core.stop()

    def test_cover_flows_when_idle_and_is_recognised(self):
        core, network, bob, clock = make_core(self)
        core.start()
        for _ in range(200):
            clock.advance(0.1)
        self.assertGreater(core.sent_cover, 10)
        self.assertEqual(core.sent_real, 0)
        cover = LoopCover(core.keys.private_key)
        for _, packet in core.links.packets:
            destination, message, _ = network.unwrap(packet)
            self.assertEqual(destination, core.keys.public_key)
            self.assertTrue(cover.is_own_cover(message))
            self.assertFalse(LoopCover(KeyPair.generate().private_key).is_own_cover(message))
        core.stop()

    def test_rates_match_their_means(self):
        core, network, bob, clock = make_core(
            self, message_sending_average_delay=500, loop_cover_traffic_average_delay=1000,
            average_packet_delay=200)
        core.start()
        seconds = 2000
        run_until(clock, seconds)
        # Idle: both streams send cover: 2/s + 1/s on average.
        rate = core.sent_cover / seconds
        self.assertApproximates(rate, 3.0, 0.15)
        delays = [d for _, p in core.links.packets[:300] for d in network.unwrap(p)[2]]
        self.assertApproximates(statistics.mean(delays) / 1e9, 0.2, 0.02)
        core.stop()

    def test_real_messages_take_the_sending_rate(self):
        core, network, bob, clock = make_core(self, message_sending_average_delay=500)
        core.start()
        for i in range(300):
            core.send(bob.public_text, b"m%d" % i)
        times, covers = [], []

        def left(_):
            times.append(clock.seconds())
            covers.append(core.sent_cover)
        for item in list(core._queue):
            item.sent.addCallback(left)
        run_until(clock, 250)
        self.assertEqual(core.queued, 0)
        gaps = [b - a for a, b in zip(times, times[1:])]
        # While real messages wait, no cover goes out of the sending stream:
        # only the loop cover stream's (mean gap 1 s) does.
        self.assertApproximates(statistics.mean(gaps), 0.5, 0.05)
        self.assertApproximates(covers[-1] / times[-1], 1.0, 0.2)
        core.stop()

    def test_no_topology_keeps_real_messages_queued(self):
        core, network, bob, clock = make_core(self, topology=None)
        logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        core.start()
        core.send(bob.public_text, b"wait for me")
        run_until(clock, 30)
        self.assertGreater(core.skipped_cover, 10)  # many ticks of the stream went by
        self.assertEqual(core.queued, 1)
        self.assertEqual(core.links.packets, [])
        self.assertGreater(core.skipped_cover, 0)
        # said once, not on each of the ~60 ticks of the stream in 30 s
        self.assertEqual(len([e for e in logged if "stay queued" in e.get("log_format", "")]), 1)
        # The directory comes back: the message leaves with the next tick.
        core.directory.topology = network.topology(clients=[bob.public_key])
        clock.advance(core.config.topology_refresh_rate / 1000)
        for _ in range(100):
            clock.advance(0.1)
        self.assertEqual(core.queued, 0)
        self.assertEqual(core.sent_real, 1)
        core.stop()

    def test_empty_layer_keeps_messages_queued(self):
        core, network, bob, clock = make_core(self)
        core.topology = None
        core.directory.topology = network.topology(
            clients=[bob.public_key, core.keys.public_key], mixnodes=network.mixnodes[:2])
        core.start()
        d = core.send(bob.public_text, b"x")
        run_until(clock, 20)  # every tick of the streams, not one
        self.assertEqual((core.queued, core.sent_real, core.sent_cover), (1, 0, 0))
        self.assertGreater(core.skipped_cover, 10)
        self.failureResultOf(core.stop() and d, ClientStopped)

    def test_stop_fails_queued_messages(self):
        core, network, bob, clock = make_core(self)
        core.start()
        d = core.send(bob.public_text, b"x")
        core.stop()
        self.failureResultOf(d, ClientStopped)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_send_after_stop_fails_instead_of_waiting_for_ever(self):
        core, network, bob, clock = make_core(self)
        core.start()
        core.stop()
        d = core.send(bob.public_text, b"x")
        self.failureResultOf(d, ClientStopped)
        self.assertEqual(core.queued, 0)


class TopologyTests(SynchronousTestCase):
    def test_clients_before_any_topology_is_an_error(self):
        core, network, bob, clock = make_core(self)
        core.directory.topology = None
        core.start()
        self.assertIsNone(core.topology)
        e = self.assertRaises(SendError, core.clients)
        self.assertIn("topology is not known yet", str(e))
        core.stop()

    def test_refreshes_soon_until_listed(self):
        core, network, bob, clock = make_core(self)
        unlisted = network.topology(clients=[bob.public_key])
        core.directory.topology = unlisted
        core.start()
        self.assertEqual(core.directory.calls, 1)
        clock.advance(1.0)  # not listed yet: again after a second, not ten
        self.assertEqual(core.directory.calls, 2)
        core.directory.topology = network.topology(clients=[core.keys.public_key, bob.public_key])
        clock.advance(1.0)
        self.assertEqual(core.directory.calls, 3)
        clock.advance(5.0)  # listed: back to topology_refresh_rate (10 s)
        self.assertEqual(core.directory.calls, 3)
        clock.advance(5.0)
        self.assertEqual(core.directory.calls, 4)
        core.stop()

    def test_refresh_keeps_last_good(self):
        core, network, bob, clock = make_core(self)
        core.start()
        good = core.topology
        self.assertIsNotNone(good)
        core.directory.topology = None
        clock.advance(10)
        self.assertEqual(core.directory.calls, 2)
        self.assertIs(core.topology, good)
        newer = network.topology(clients=[bob.public_key])
        core.directory.topology = newer
        clock.advance(10)
        self.assertIs(core.topology, newer)
        self.assertEqual(core.clients(), [bob.public_text])
        core.stop()


class QueueBoundTests(SynchronousTestCase):
    def test_send_refused_when_the_queue_is_full(self):
        core, network, bob, clock = make_core(self)
        core.max_queued = 3
        for i in range(3):
            core.send(bob.public_text, b"m%d" % i)
        e = self.assertRaises(SendError, core.send, bob.public_text, b"one too many")
        self.assertIn("send queue is full", str(e))
        self.assertEqual(core.queued, 3)


class FetchTests(SynchronousTestCase):
    def test_store_commits_before_ack_and_discards_cover(self):
        core, network, bob, clock = make_core(self)
        cover = LoopCover(core.keys.private_key).make()
        core.gateway_link.mail = [(1, b"one"), (2, cover), (3, b"three")]
        core.start()
        self.assertEqual(core.gateway_link.events,
                         [("pull",), ("commit", (1, 3)), ("ack", (1, 2, 3))])
        self.assertEqual(core.fetch(), [b"one", b"three"])
        self.assertEqual(core.fetch(), [])
        core.stop()

    def test_full_inbox_keeps_pulling_but_takes_nothing_until_the_app_fetches(self):
        core, network, bob, clock = make_core(self)
        core.max_inbox = 2
        link = core.gateway_link
        link.mail = [(1, b"one"), (2, b"two"), (3, b"three")]

        def pull(limit=5):
            link.events.append(("pull", limit))
            return succeed(list(link.mail[:min(limit, 2)]))
        link.pull = pull
        core.start()
        self.assertEqual(len(core.inbox), 2)
        before = len([e for e in link.events if e[0] == "pull"])
        run(clock, 20)
        # full: the pulls keep their schedule (so the gateway sees nothing
        # change) but take nothing; the third message waits at the gateway
        pulls = [e for e in link.events if e[0] == "pull"][before:]
        self.assertGreater(len(pulls), 5)
        self.assertEqual(set(pulls), {("pull", 0)})
        self.assertEqual(link.mail, [(3, b"three")])
        self.assertEqual(core.fetch(), [b"one", b"two"])
        run(clock, 20)
        self.assertEqual(core.fetch(), [b"three"])
        core.stop()

    def test_pulls_run_on_a_poisson_clock_that_answers_do_not_move(self):
        # The gaps are exponential with the configured mean, and a slow
        # answer does not delay the next pull: the times carry no information.
        core, network, bob, clock = make_core(self)
        times, answers = [], []

        def pull(limit=5):
            times.append(clock.seconds())
            d = Deferred()
            answers.append(d)
            return d
        core.gateway_link.pull = pull
        core.start()
        # a gateway that does not answer: pulls go on to max_in_flight, no more
        run(clock, 50)
        self.assertEqual(len(times), core._fetching.max_in_flight)
        self.assertGreater(core._fetching.skipped, 10)
        for d in answers:
            d.callback([])
        answers.clear()
        times.clear()
        for _ in range(4000):
            clock.advance(0.05)
            for d in answers:
                if not d.called:
                    d.callback([])
        gaps = [b - a for a, b in zip(times, times[1:])]
        mean = sum(gaps) / len(gaps)
        sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
        self.assertLess(abs(mean - core.config.fetch_message_delay / 1000), 0.25)
        self.assertLess(abs(sd / mean - 1.0), 0.3)  # exponential, not a grid
        core.stop()

    def test_an_ack_answered_only_by_the_next_pull_does_not_stall_the_loop(self):
        # The private link carries acks on the next pull: a core that waited
        # for ack() before pulling again would never pull again.
        core, network, bob, clock = make_core(self)
        link = core.gateway_link
        link.mail = [(i, b"m%d" % i) for i in range(1, 11)]
        carried = []

        def ack(ids):
            d = Deferred()
            carried.append((list(ids), d))
            return d

        def pull(limit=5):
            for ids, d in carried:
                if not d.called:
                    link.mail = [(i, m) for i, m in link.mail if i not in ids]
                    d.callback(len(ids))
            sent = [m for m in link.mail if m[0] not in {i for ids, _ in carried for i in ids}]
            return succeed(sent[:limit])
        link.ack, link.pull = ack, pull
        core.start()
        run(clock, 30)
        self.assertEqual(core.fetch(), [b"m%d" % i for i in range(1, 11)])
        self.assertEqual(link.mail, [])
        self.assertTrue(all(d.called for _, d in carried))
        core.stop()

    def test_inbox_failure_is_logged_and_nothing_acked(self):
        import sqlite3
        core, network, bob, clock = make_core(self)
        core.gateway_link.mail = [(1, b"one")]

        def broken(messages):
            raise sqlite3.OperationalError("database or disk is full")
        core.inbox.store = broken
        core.start()
        self.assertNotIn(("ack", (1,)), core.gateway_link.events)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        core.stop()

    def test_lost_ack_does_not_duplicate(self):
        core, network, bob, clock = make_core(self)
        core.gateway_link.mail = [(7, b"seven")]
        core.gateway_link.fail_next_ack = True
        core.start()
        clock.advance(1)
        self.assertEqual(core.fetch(), [b"seven"])
        self.assertEqual(core.inbox.unacked(), [])
        self.assertEqual(core.gateway_link.mail, [])
        core.stop()

    def test_imitated_cover_is_kept(self):
        core, network, bob, clock = make_core(self)
        fake = LoopCover(KeyPair.generate().private_key).make()
        core.gateway_link.mail = [(1, fake)]
        core.start()
        self.assertEqual(core.fetch(), [fake])
        core.stop()

    def test_on_message_pushes(self):
        core, network, bob, clock = make_core(self)
        got = []
        core.on_message(got.append)
        core.gateway_link.mail = [(1, b"a")]
        core.start()
        core.gateway_link.mail = [(2, b"b")]
        clock.advance(1)
        self.assertEqual(got, [b"a", b"b"])
        self.assertEqual(core.fetch(), [])
        core.stop()

    def test_fetch_loop_survives_gateway_errors(self):
        core, network, bob, clock = make_core(self)
        calls = []

        def broken(limit=100):
            calls.append(1)
            return fail(Exception("down"))
        core.gateway_link.pull = broken
        core.start()
        run(clock, 10)
        first = len(calls)
        self.assertGreater(first, 1)
        run(clock, 10)
        self.assertGreater(len(calls), first)
        core.stop()

    def test_stop_waits_for_a_pull_in_flight(self):
        core, network, bob, clock = make_core(self)
        pending = Deferred()
        core.gateway_link.pull = lambda limit=100: pending
        core.start()
        stopped = core.stop()
        self.assertNoResult(stopped)
        pending.callback([])
        self.successResultOf(stopped)


class DepartedPeerTests(SynchronousTestCase):
    def test_a_mixnode_that_left_the_topology_is_not_redialled(self):
        # The client's first hop is a fake node at [::1]:1 that never
        # answers; once a refresh no longer lists it, nothing dials it again.
        from twisted.internet.error import ConnectionRefusedError
        from twisted.internet.testing import MemoryReactorClock
        from twisted.python.failure import Failure
        from nymtx.addressing import NodeAddress
        from nymtx.links import PacketLinks
        from nymtx.topology import MixNodeInfo

        reactor = MemoryReactorClock()
        keys, bob = KeyPair.generate(), KeyPair.generate()
        network = Network(clients=[keys.public_key, bob.public_key])
        ghost = MixNodeInfo(NodeAddress.parse("[::1]:1"), KeyPair.generate().public_key, 1)
        config = ClientConfig.new(self.mktemp(), "Alice",
                                  provider_id=encode_key(network.gateway_keys.public_key),
                                  provider_authtoken=encode_key(bytes(32)))
        directory = FakeDirectory(network.topology(mixnodes=[ghost] + network.mixnodes[1:]))
        links = PacketLinks(reactor, initial_backoff=0.5, maximum_backoff=3.0)
        inbox = Inbox(":memory:", reactor)
        self.addCleanup(inbox.close)
        core = ClientCore(reactor, config, keys, directory, links, FakeGatewayLink(), inbox,
                          rng=random.Random(4))
        core.start()

        def attempts():
            return [c for c in reactor.tcpClients if c[0] == "::1"]
        # the streams send to the ghost; each attempt is refused
        for _ in range(200):
            reactor.advance(0.1)
            for c in attempts():
                if not getattr(c[2], "refused", False):
                    c[2].refused = True
                    c[2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertGreater(len(attempts()), 3)
        self.assertGreater(links.queued(ghost.address), 0)

        directory.topology = network.topology()  # it left
        run_until(reactor, reactor.seconds() + config.topology_refresh_rate / 1000)
        before = len(attempts())
        self.assertEqual(links.queued(ghost.address), 0)
        self.assertGreater(links.retired, 0)
        run_until(reactor, reactor.seconds() + 120)
        self.assertEqual(len(attempts()), before)
        core.stop()
        self.successResultOf(links.stop())


class LifecycleTests(SynchronousTestCase):
    def test_states_in_order(self):
        from nymtx.client.core import CoreState
        core, network, bob, clock = make_core(self)
        self.assertIs(core.state, CoreState.NEW)
        pull = Deferred()
        core.gateway_link.pull = lambda limit=100: pull
        started = core.start()
        self.successResultOf(started)  # the first topology fetch is done
        self.assertIs(core.state, CoreState.RUNNING)
        stopped = core.stop()
        self.assertIs(core.state, CoreState.STOPPING)  # a pull is in flight
        self.assertNoResult(stopped)
        again = core.stop()
        pull.callback([])
        self.successResultOf(stopped)
        self.successResultOf(again)
        self.assertIs(core.state, CoreState.STOPPED)
        self.successResultOf(core.stop())

    def test_restart_is_refused_with_a_clear_error(self):
        # Before: start() after stop() was accepted and the fetch loop ran on
        # a closed inbox for ever, saying nothing.
        from nymtx.client.core import ClientStateError
        from nymtx.client.embed import MixnetClient
        network = Network()
        config = ClientConfig.new(
            self.mktemp(), "Alice", provider_id=network.gateway_keys.public_text,
            provider_authtoken=encode_key(bytes(32)))
        keys = KeyPair.generate()
        config.save_keys(keys)
        clock = Clock()
        client = MixnetClient(clock, config, directory=FakeDirectory(network.topology()),
                              links=FakeLinks(), gateway_link=FakeGatewayLink())
        client.start()
        with self.assertRaises(ClientStateError) as e:
            client.start()
        self.assertIn("running", str(e.exception))
        self.successResultOf(client.stop())
        self.successResultOf(client.stop())  # twice: the inbox is closed once
        with self.assertRaises(ClientStateError) as e:
            client.start()
        self.assertIn("stopped", str(e.exception))
        self.assertIn("new MixnetClient", str(e.exception))
        self.assertEqual(clock.getDelayedCalls(), [])
        # and a new client from the same config does run, on the same inbox
        link = FakeGatewayLink()
        link.mail = [(1, b"after the restart")]
        second = MixnetClient(clock, config, directory=FakeDirectory(network.topology()),
                              links=FakeLinks(), gateway_link=link)
        second.start()
        self.assertEqual(second.fetch(), [b"after the restart"])
        self.successResultOf(second.stop())


class PeriodicFailureTests(SynchronousTestCase):
    def test_an_unexpected_error_in_the_fetch_loop_is_logged_and_the_loop_goes_on(self):
        core, network, bob, clock = make_core(self)
        calls = []

        def broken(limit=100):
            calls.append(1)
            raise RuntimeError("the inbox is closed")  # synchronously, not a Deferred
        core.gateway_link.pull = broken
        core.start()
        for _ in range(1200):
            clock.advance(0.1)
        self.assertGreater(len(calls), 60)  # the loop goes on
        # heard, with the traceback: the first time, then once a minute
        self.assertIn(len(self.flushLoggedErrors(RuntimeError)), (2, 3))
        self.assertEqual(core._fetching.failures, len(calls))
        core.stop()

    def test_a_run_that_never_finishes_is_heard(self):
        from twisted.logger import capturedLogs
        core, network, bob, clock = make_core(self)
        hung = Deferred()
        core.gateway_link.pull = lambda limit=100: hung
        core.start()
        with capturedLogs() as events:
            clock.advance(29)
            self.assertEqual([e for e in events if "has not finished" in e["log_format"]], [])
            clock.advance(1)
            hung.callback([])
        lines = [e["log_format"] for e in events if "fetch from the gateway" in str(e)]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("has not finished after", lines[0])
        self.assertIn("finished at last", lines[1])
        core.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
