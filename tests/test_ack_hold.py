"""The gateway's hold on every ack (docs/surb.md §2.5), on a Clock with a
real sqlite file: the hold's distribution, no ack before its commit (even
when the commit is slower than the hold), none after a crash, and drop
cover's acks with the same lag distribution as stored messages' (KS)."""

import math
import os
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx import sphinx
from nymtx.gateway.mix import FinalHopHandler
from nymtx.gateway.store import MailboxStore
from nymtx.measure.checks import ks_two_samples
from nymtx.reliable import ack
from nymtx.reliable.retransmit import GATEWAY_ACK_HOLD
from nymtx.testing import FakeLinks

from tests.test_gateway_acks import CLIENT, GATEWAY, surb_ack

HOLD = 0.05


def timed_links(clock):
    """nymtx.testing's FakeLinks, also noting when each ack left (on the clock)."""
    links = FakeLinks()
    links.times = []
    send = links.send

    def timed_send(address, packet):
        links.times.append((clock.seconds(), packet[:sphinx.HEADER_SIZE]))
        send(address, packet)
    links.send = timed_send
    return links


class Hold(SynchronousTestCase):
    def make(self, commit_interval=0.0, hold=HOLD, seed=7):
        self.clock = Clock()
        self.path = self.mktemp()
        self.store = MailboxStore.open(self.clock, self.path, commit_interval=commit_interval)
        self.addCleanup(lambda: self.store.db.close() if self.crashed else self.store.close())
        self.crashed = False
        self.store.register(CLIENT.public_key, b"t" * 32)
        self.links = timed_links(self.clock)
        self.handler = FinalHopHandler(self.clock, GATEWAY.private_key, self.store,
                                       links=self.links, public_key=GATEWAY.public_key,
                                       ack_hold=hold, rng=random.Random(seed))

    def until(self, end):
        """Advance to *end*, stopping at each call's own time on the way, so
        that what a call sees on the clock is when it was due."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            step = min([t for t in due if t <= end], default=None)
            if step is None:
                self.clock.advance(max(0.0, end - self.clock.seconds()))
                return
            self.clock.advance(max(0.0, step - self.clock.seconds()))

    def deliver(self, number, cover):
        sa = surb_ack(ack.COVER if cover else number, number)
        destination = GATEWAY.public_key if cover else CLIENT.public_key
        self.handler.deliver(sphinx.FinalHop(
            destination, bytes(16), ack.compose_payload(sa, os.urandom(ack.STORED_SIZE)), 0))
        return sa[ack.COMPACT_ADDRESS_SIZE:]

    def lags(self, count, rng, commit_interval):
        """Deliver *count* packets at Poisson times, each drop cover or
        stored at random; the lag of each one's ack, by kind."""
        released, kinds = {}, {}
        for i in range(count):
            self.until(self.clock.seconds() + rng.expovariate(1 / 0.02))
            cover = rng.random() < 0.5
            header = self.deliver(i + 1, cover)
            released[header], kinds[header] = self.clock.seconds(), cover
        self.until(self.clock.seconds() + 100)
        out = {True: [], False: []}
        for t, header in self.links.times:
            out[kinds[header]].append(t - released[header])
        return out

    def test_the_default_is_the_clients_assumption(self):
        self.make(hold=GATEWAY_ACK_HOLD)
        self.assertEqual(FinalHopHandler(self.clock, GATEWAY.private_key, self.store).ack_hold,
                         GATEWAY_ACK_HOLD)

    def test_the_hold_is_exponential_with_its_mean(self):
        self.make()
        lags = self.lags(2000, random.Random(1), 0.0)
        every = lags[True] + lags[False]
        self.assertEqual(len(every), 2000)
        mean = sum(every) / len(every)
        # the mean of 2000 draws: within 4 standard errors
        self.assertLess(abs(mean - HOLD), 4 * HOLD / math.sqrt(len(every)))
        cdf = lambda x: 1 - math.exp(-x / HOLD)  # noqa: E731
        xs = sorted(every)
        d = max(max(abs((i + 1) / len(xs) - cdf(x)), abs(i / len(xs) - cdf(x)))
                for i, x in enumerate(xs))
        self.assertLess(d, 1.63 / math.sqrt(len(xs)))   # KS at 1 %
        # not a grid: (almost) every lag is its own
        self.assertGreater(len({round(x, 9) for x in every}), 1990)

    def test_drop_cover_and_stored_acks_lag_alike(self):
        # a commit 5 ms after the first message: shorter than most holds,
        # longer than some. Before this change cover skipped the commit.
        self.make(commit_interval=0.005)
        lags = self.lags(3000, random.Random(2), 0.005)
        ks = ks_two_samples(lags[True], lags[False])
        self.assertGreater(ks["n"], 1300)
        self.assertGreater(ks["m"], 1300)
        self.assertGreater(ks["p"], 0.01, ks)
        # every ack left at its commit or later: none has a lag under the
        # commit's 5 ms (when the first message of its batch came)
        self.assertEqual(len(lags[True]) + len(lags[False]), 3000)

    def test_no_ack_before_its_commit_even_when_the_hold_is_shorter(self):
        self.make(commit_interval=0.5)
        header = self.deliver(1, cover=False)
        cover = self.deliver(2, cover=True)
        self.clock.advance(0.49)
        self.assertEqual(self.links.times, [])
        self.assertEqual(self.handler.acks_held, 0)   # not even held: not committed
        self.clock.advance(0.01)
        # committed; both holds (mean 50 ms) are long over: they leave with it
        self.assertEqual(sorted(h for _, h in self.links.times), sorted([header, cover]))
        self.assertEqual({t for t, _ in self.links.times}, {0.5})

    def test_a_held_ack_waits_for_its_hold_after_the_commit(self):
        self.make(hold=10.0)
        self.deliver(1, cover=False)
        self.clock.advance(0)
        self.assertEqual(self.store.stored, 1)
        self.assertEqual(self.handler.acks_held, 1)
        self.assertEqual(self.links.packets, [])
        self.clock.advance(1000)
        self.assertEqual(len(self.links.packets), 1)
        self.assertEqual(self.handler.acks_held, 0)

    def test_a_crash_before_the_commit_sends_no_ack_ever(self):
        self.make(commit_interval=0.5)
        self.deliver(1, cover=False)
        self.deliver(2, cover=True)
        self.store._timer.cancel()
        self.store.db.close()
        self.crashed = True
        self.clock.advance(100)
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.handler.acks_held, 0)

    def test_held_acks_leave_at_stop(self):
        self.make(hold=10.0)
        self.deliver(1, cover=False)
        self.clock.advance(0)
        self.assertEqual(self.handler.acks_held, 1)
        self.handler.release_all()
        self.deliver(2, cover=True)   # what the last flush commits goes at once
        self.store.close()
        self.crashed = True   # closed already
        self.assertEqual(len(self.links.packets), 2)
        self.assertEqual(self.handler.acks_unheld, 2)

    def test_drop_cover_is_committed_and_never_stored(self):
        self.make(hold=0)
        self.deliver(1, cover=True)
        self.deliver(2, cover=False)
        self.clock.advance(0)
        self.assertEqual(self.store.stored, 1)
        self.assertEqual(self.store.usage(GATEWAY.public_key), (0, 0))
        self.assertEqual(self.store.pull(GATEWAY.public_key, 10), [])
        [(ident, _)] = self.store.pull(CLIENT.public_key, 10)
        # the cover's row took an id: the ids a client sees count every
        # final-hop packet, as an observer of the links does
        self.assertEqual(ident, 2)
        self.assertEqual(len(self.links.packets), 2)

    def test_a_bad_hold_is_refused(self):
        self.make()
        for bad in (-1, float("inf"), float("nan"), True, "50"):
            self.assertRaises(ValueError, FinalHopHandler, self.clock, GATEWAY.private_key,
                              self.store, ack_hold=bad)
