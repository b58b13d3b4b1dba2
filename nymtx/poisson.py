"""A loop that calls a function at the events of a Poisson process.

A ``LoopingCall`` fires on a fixed grid, which would make cover traffic
regular and fingerprintable. ``PoissonLoop`` instead waits an exponentially
distributed gap with a given mean before each call, drawn afresh each time.
"""

import math
import numbers
import random

import attrs
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger


def _check_mean(instance, attribute, value):
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(
            f"the mean gap of a Poisson loop must be a finite number of seconds "
            f"above 0, not {value!r}")


@attrs.define(eq=False)
class PoissonLoop:
    """Call ``f()`` after each of a series of exponential gaps of mean ``mean`` seconds.

    The next call is scheduled before ``f`` runs, so neither the time ``f``
    takes nor the Deferred it may return shifts the timing: traffic timing
    must not reveal processing. Each gap is counted from when the previous
    call was *due*, not from when it ran: a busy reactor that runs calls
    late would otherwise stretch every gap and send below the rate (and
    the gaps would no longer be exponential). A loop more than
    ``max_lag`` means behind (a suspended process) starts afresh from now
    rather than firing the missed calls in one burst. An exception or a failing Deferred from
    ``f`` is logged and the loop goes on; a mixnet client must not go silent.
    Setting ``mean`` takes effect from the next gap drawn.
    """

    log = Logger()

    f: object
    mean: float = attrs.field(validator=_check_mean)
    clock: object
    # Timing should not be predictable from outside, so the default source
    # is the operating system's; tests pass a seeded random.Random.
    rng: random.Random = attrs.field(default=None, converter=lambda r: r or random.SystemRandom())
    #: how many means behind the loop may fall before it starts afresh
    max_lag: float = 10.0
    _call: object = attrs.field(default=None, init=False)
    _due: float = attrs.field(default=0.0, init=False)

    @property
    def running(self):
        return self._call is not None

    def start(self, now=False):
        """Start looping; with ``now``, call ``f`` once immediately as well."""
        if self.running:
            raise RuntimeError("this Poisson loop is already running")
        self._due = self.clock.seconds()
        if now:
            self._tick()
        else:
            self._schedule()

    def stop(self):
        """Cancel the pending call. Stopping a stopped loop does nothing."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule(self):
        now = self.clock.seconds()
        if now - self._due > self.max_lag * self.mean:
            self._due = now
        self._due += self.rng.expovariate(1.0 / self.mean)
        self._call = self.clock.callLater(max(0.0, self._due - now), self._tick)

    def _tick(self):
        self._schedule()
        maybeDeferred(self.f).addErrback(self._failed)

    def _failed(self, failure):
        self.log.failure("Poisson loop call {f!r} failed; the loop goes on",
                         failure, f=self.f)
