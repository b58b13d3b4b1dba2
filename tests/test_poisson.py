import math
import random

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, LoopingCall
from twisted.trial.unittest import SynchronousTestCase

from nymtx.poisson import PoissonLoop

SEED = 20200323
N = 4000


def run_until(clock, times, n):
    """Advance the clock call by call until ``times`` holds ``n`` entries."""
    while len(times) < n:
        pending = clock.getDelayedCalls()
        assert pending, "the loop stopped scheduling itself"
        clock.advance(min(c.getTime() for c in pending) - clock.seconds())


def gaps_of(times):
    return [b - a for a, b in zip(times, times[1:])]


def exponential_problems(gaps, mean):
    """Why ``gaps`` do not look like i.i.d. exponential gaps of ``mean``; [] if they do."""
    n = len(gaps)
    problems = []
    sample_mean = sum(gaps) / n
    # The standard error of the mean of n exponential draws is mean / sqrt(n).
    if abs(sample_mean - mean) > 4 * mean / math.sqrt(n):
        problems.append(f"mean {sample_mean} is not {mean}")
    sd = math.sqrt(sum((g - sample_mean) ** 2 for g in gaps) / (n - 1))
    cv = sd / sample_mean
    # An exponential's coefficient of variation is 1; its sample CV has an
    # sd near 1/sqrt(n) (0.016 at n=4000).
    if not 0.9 < cv < 1.1:
        problems.append(f"coefficient of variation {cv} is not ~1")
    # Kolmogorov-Smirnov against Exp(mean); 1.95/sqrt(n) is the 0.1% critical value.
    ordered = sorted(gaps)
    d = max(max((i + 1) / n - (1 - math.exp(-g / mean)),
                (1 - math.exp(-g / mean)) - i / n) for i, g in enumerate(ordered))
    if d > 1.95 / math.sqrt(n):
        problems.append(f"Kolmogorov-Smirnov distance {d} to Exp({mean})")
    if len({round(g, 12) for g in gaps}) < 0.99 * n:
        problems.append("gaps repeat")
    for grid in (1e-3, 1e-2, 0.1, 1.0, mean / 10, mean):
        on_grid = sum(abs(g / grid - round(g / grid)) < 1e-6 for g in gaps)
        if on_grid > 0.01 * n:
            problems.append(f"{on_grid} gaps are multiples of {grid}")
    return problems


class StatisticsHelperTests(SynchronousTestCase):
    """The statistical checks reject what is not a Poisson process."""

    def test_accepts_exponential(self):
        rng = random.Random(SEED)
        self.assertEqual(exponential_problems([rng.expovariate(2.0) for _ in range(N)], 0.5), [])

    def test_rejects_a_looping_call(self):
        clock = Clock()
        times = []
        call = LoopingCall(lambda: times.append(clock.seconds()))
        call.clock = clock
        call.start(0.5, now=False)
        self.addCleanup(call.stop)
        run_until(clock, times, N)
        problems = exponential_problems(gaps_of(times), 0.5)
        self.assertIn("gaps repeat", problems)
        self.assertTrue(any("coefficient of variation" in p for p in problems))

    def test_rejects_a_grid(self):
        # Right mean and spread, but every gap a multiple of 10 ms.
        rng = random.Random(SEED)
        gaps = [round(rng.expovariate(2.0), 2) for _ in range(N)]
        problems = exponential_problems(gaps, 0.5)
        self.assertTrue(any("multiples of 0.01" in p for p in problems), problems)

    def test_rejects_uniform_gaps(self):
        rng = random.Random(SEED)
        problems = exponential_problems([rng.uniform(0, 1) for _ in range(N)], 0.5)
        self.assertTrue(any("coefficient of variation" in p for p in problems), problems)

    def test_rejects_a_wrong_mean(self):
        rng = random.Random(SEED)
        problems = exponential_problems([rng.expovariate(1 / 0.55) for _ in range(N)], 0.5)
        self.assertTrue(any(p.startswith("mean") for p in problems), problems)


class PoissonLoopTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.times = []

    def record(self):
        self.times.append(self.clock.seconds())

    def make(self, f=None, mean=0.5, rng=None):
        loop = PoissonLoop(f or self.record, mean, self.clock,
                           rng if rng is not None else random.Random(SEED))
        self.addCleanup(loop.stop)
        return loop

    def test_gaps_are_exponential(self):
        loop = self.make(mean=0.5)
        loop.start()
        run_until(self.clock, self.times, N + 1)
        # The first call comes after a gap too.
        self.assertGreater(self.times[0], 0)
        self.assertEqual(exponential_problems(gaps_of([0.0] + self.times), 0.5), [])

    def test_a_late_reactor_does_not_lower_the_rate(self):
        # The reactor runs the calls late: here, only every 0.1 s, when the
        # mean gap is 0.05 s. Counting each gap from when the call ran would
        # send at under half the rate; counted from when it was due, the
        # calls keep the rate (and the due times stay exponential).
        due = []

        def call():
            self.record()
            due.append(loop._due)   # the next call's due time, drawn just before
        loop = self.make(call, mean=0.05)
        loop.start()
        for _ in range(2000):
            self.clock.advance(0.1)
        rate = len(self.times) / self.clock.seconds()
        # four standard errors of a Poisson count
        self.assertLess(abs(rate - 20.0), 20.0 * 4 / math.sqrt(len(self.times)))
        self.assertEqual(exponential_problems(gaps_of([0.0] + due[:N]), 0.05)[:1], [])

    def test_a_suspended_loop_starts_afresh_not_in_a_burst(self):
        loop = self.make(mean=0.5)
        loop.start()
        run_until(self.clock, self.times, 3)
        before = len(self.times)
        self.clock.advance(3600)   # the process was suspended for an hour
        self.assertLess(len(self.times) - before, 20)

    def test_start_now_calls_at_once(self):
        loop = self.make()
        loop.start(now=True)
        self.assertEqual(self.times, [0])
        self.assertTrue(loop.running)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stop_cancels_the_pending_call(self):
        loop = self.make()
        loop.start()
        run_until(self.clock, self.times, 3)
        loop.stop()
        self.assertFalse(loop.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(len(self.times), 3)
        loop.stop()  # stopping twice is harmless

    def test_start_twice_raises(self):
        loop = self.make()
        loop.start()
        with self.assertRaises(RuntimeError):
            loop.start()
        with self.assertRaises(RuntimeError):
            loop.start(now=True)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.times, [])

    def test_restart_after_stop(self):
        loop = self.make()
        loop.start()
        loop.stop()
        loop.start()
        run_until(self.clock, self.times, 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stop_from_inside_the_call(self):
        loop = self.make(f=lambda: (self.record(), loop.stop()))
        loop.start()
        run_until(self.clock, self.times, 1)
        self.assertFalse(loop.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_next_call_is_scheduled_before_the_call_runs(self):
        # So the call's own duration or result never shifts the timing.
        seen = []
        loop = self.make(f=lambda: seen.append(
            [c.getTime() for c in self.clock.getDelayedCalls()]))
        loop.start()
        run_until(self.clock, seen, 1)
        self.assertEqual(len(seen[0]), 1)
        self.assertGreaterEqual(seen[0][0], self.clock.seconds())

    def test_unfired_deferred_does_not_hold_the_loop(self):
        pending = []

        def f():
            self.record()
            pending.append(Deferred())
            return pending[-1]

        loop = self.make(f=f)
        loop.start()
        run_until(self.clock, self.times, 5)
        self.assertEqual(len(pending), 5)
        self.assertFalse(any(d.called for d in pending))

    def test_exception_is_logged_and_loop_goes_on(self):
        def f():
            self.record()
            1 / 0

        loop = self.make(f=f)
        loop.start()
        run_until(self.clock, self.times, 4)
        self.assertTrue(loop.running)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 4)

    def test_failing_deferred_is_logged_and_loop_goes_on(self):
        def f():
            self.record()
            return fail(KeyError("gone"))

        loop = self.make(f=f)
        loop.start()
        run_until(self.clock, self.times, 3)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 3)
        self.assertTrue(loop.running)

    def test_async_function(self):
        # recorded after the await: three entries mean three runs to the end
        async def f():
            await succeed(None)
            self.record()

        loop = self.make(f=f)
        loop.start()
        run_until(self.clock, self.times, 3)
        self.assertEqual(len(self.times), 3)
        self.assertTrue(loop.running)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_mean_change_takes_effect_at_the_next_gap(self):
        loop = self.make(mean=0.5)
        loop.start()
        run_until(self.clock, self.times, 10)
        [pending] = self.clock.getDelayedCalls()
        due = pending.getTime()
        loop.mean = 5.0
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [due])
        run_until(self.clock, self.times, 11)
        self.assertEqual(self.times[-1], due)
        run_until(self.clock, self.times, 11 + N)
        self.assertEqual(exponential_problems(gaps_of(self.times[10:]), 5.0), [])

    def test_bad_means_are_refused(self):
        for mean in (0, -1, 0.0, float("nan"), float("inf"), True, "1", None):
            with self.assertRaises(ValueError) as caught:
                PoissonLoop(self.record, mean, self.clock)
            self.assertIn("mean gap", str(caught.exception))
        loop = self.make(mean=2)
        with self.assertRaises(ValueError):
            loop.mean = 0
        self.assertEqual(loop.mean, 2)

    def test_default_rng_is_the_system_source(self):
        loop = PoissonLoop(self.record, 1.0, self.clock)
        self.assertIsInstance(loop.rng, random.SystemRandom)
        loop.start()
        self.addCleanup(loop.stop)
        run_until(self.clock, self.times, 2)

    def test_same_seed_same_timing(self):
        other = Clock()
        other_times = []
        a = self.make(rng=random.Random(5))
        b = PoissonLoop(lambda: other_times.append(other.seconds()), 0.5, other, random.Random(5))
        self.addCleanup(b.stop)
        a.start()
        b.start()
        run_until(self.clock, self.times, 20)
        run_until(other, other_times, 20)
        self.assertEqual(self.times, other_times)
