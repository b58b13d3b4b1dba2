"""The Heartbeat on a Clock: every interval, never overlapping, one log line per outage."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from nymtx.directory.client import DirectoryError
from nymtx.heartbeat import Heartbeat


class HeartbeatTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.calls = []
        self.results = []
        self.events = []

    def action(self):
        self.calls.append(self.clock.seconds())
        if self.results:
            outcome = self.results.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return succeed(None)

    def heartbeat(self, interval=1.5):
        beat = Heartbeat(self.clock, interval, self.action, "presence to the directory")
        beat.log = Logger(observer=self.events.append)
        return beat

    def warnings(self):
        return [e for e in self.events if e["log_level"].name == "warn"]

    def test_runs_now_and_every_interval(self):
        beat = self.heartbeat()
        beat.startService()
        self.assertEqual(self.calls, [0])
        self.clock.pump([0.5] * 9)
        self.assertEqual(self.calls, [0, 1.5, 3.0, 4.5])
        self.successResultOf(beat.stopService())
        self.clock.advance(10)
        self.assertEqual(len(self.calls), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_never_overlaps(self):
        slow = Deferred()
        self.results = [slow]
        beat = self.heartbeat()
        beat.startService()
        self.clock.advance(10)
        self.assertEqual(self.calls, [0])
        slow.callback(None)
        # It ran over its interval: the next run starts at once, then on time.
        self.clock.advance(0)
        self.assertEqual(self.calls, [0, 10])
        self.clock.advance(1.5)
        self.assertEqual(self.calls, [0, 10, 11.5])
        beat.stopService()

    def test_a_quick_action_keeps_the_rhythm(self):
        pending = Deferred()
        self.results = [pending]
        beat = self.heartbeat()
        beat.startService()
        self.clock.advance(1.0)
        pending.callback(None)
        self.clock.advance(0.5)
        self.assertEqual(self.calls, [0, 1.5])
        beat.stopService()

    def test_survives_failures_and_logs_once_per_outage(self):
        self.results = [DirectoryError("down"), fail(DirectoryError("still down")),
                        ValueError("bug"), succeed(None), succeed(None),
                        fail(DirectoryError("down again"))]
        beat = self.heartbeat(interval=1)
        beat.startService()
        self.clock.pump([1] * 5)
        self.assertEqual(self.calls, [0, 1, 2, 3, 4, 5])
        warnings = self.warnings()
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[0]["why"], "down")
        self.assertEqual(warnings[1]["why"], "down again")
        self.assertEqual(warnings[0]["description"], "presence to the directory")
        recovered = [e for e in self.events if e["log_level"].name == "info"]
        self.assertEqual(len(recovered), 1)
        self.assertEqual(recovered[0]["failures"], 3)
        self.assertEqual(beat.failures, 1)
        beat.stopService()

    def test_stop_cancels_an_action_in_flight_quietly(self):
        cancelled = []
        in_flight = Deferred(lambda d: cancelled.append(True))
        self.results = [in_flight]
        beat = self.heartbeat()
        beat.startService()
        self.successResultOf(beat.stopService())
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self):
        beat = self.heartbeat()
        beat.startService()
        beat.stopService()
        beat.startService()
        self.clock.advance(1.5)
        self.assertEqual(self.calls, [0, 0, 1.5])
        beat.stopService()

    def test_interval_must_be_positive(self):
        for interval in (0, -1, float("nan")):
            with self.assertRaises(ValueError):
                Heartbeat(self.clock, interval, self.action, "x")
