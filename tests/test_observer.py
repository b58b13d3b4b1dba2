from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from nymtx.observer import OneShot


class OneShotTests(SynchronousTestCase):
    def test_waiters_before_and_after(self):
        shot = OneShot()
        early = shot.when_fired()
        self.assertNoResult(early)
        shot.fire(7)
        shot.fire(8)  # only the first result counts
        self.assertEqual(self.successResultOf(early), 7)
        self.assertEqual(self.successResultOf(shot.when_fired()), 7)
        self.assertTrue(shot.fired)

    def test_failure_reaches_every_waiter(self):
        shot = OneShot()
        early = shot.when_fired()
        shot.fire(Failure(ValueError("no")))
        self.failureResultOf(early, ValueError)
        self.failureResultOf(shot.when_fired(), ValueError)

    def test_one_waiter_cannot_change_another(self):
        shot = OneShot()
        first = shot.when_fired()
        first.addCallback(lambda _: "changed")
        shot.fire("original")
        self.assertEqual(self.successResultOf(shot.when_fired()), "original")
