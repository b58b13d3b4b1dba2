"""Run an action now and every interval, forever, whatever happens to it.

Nodes announce their presence and report metrics this way. The directory
being down must never stop a node, and must not flood its log either: a
failure is logged once when an outage starts and once when it ends.
"""

from twisted.application.service import Service
from twisted.internet.defer import maybeDeferred, succeed
from twisted.logger import Logger


class Heartbeat(Service):
    """Call ``action()`` (which may return a Deferred) every ``interval`` seconds.

    Runs never overlap: the next one is scheduled ``interval`` after the
    previous one started, or right away if that one took longer.
    """

    log = Logger()

    def __init__(self, clock, interval, action, description):
        if not interval > 0:
            raise ValueError(f"a heartbeat interval must be positive, not {interval!r}")
        self.clock = clock
        self.interval = interval
        self.action = action
        self.description = description
        self.failures = 0    # in a row; 0 while things work
        self.runs = 0
        self._call = None
        self._running_action = None

    def startService(self):
        super().startService()
        self._beat()

    def stopService(self):
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._running_action is None:
            return succeed(None)
        # Do not leave a request in flight behind a stopped service.
        settled = self._running_action
        settled.cancel()
        return settled

    def _beat(self):
        self._call = None
        started = self.clock.seconds()
        self.runs += 1
        d = maybeDeferred(self.action)
        d.addCallbacks(self._succeeded, self._failed)
        d.addBoth(self._schedule, started)
        if not d.called:
            self._running_action = d

    def _succeeded(self, result):
        if self.failures:
            self.log.info("{description} works again after {failures} failed attempts",
                          description=self.description, failures=self.failures)
        self.failures = 0

    def _failed(self, failure):
        if not self.running:
            return  # cancelled by stopService: not an outage
        self.failures += 1
        if self.failures == 1:
            self.log.warn("{description} failed: {why}; retrying every {interval}s, "
                          "quietly until it works again",
                          description=self.description, interval=self.interval,
                          why=failure.getErrorMessage() or failure.type.__name__)
        else:
            self.log.debug("{description} failed again: {why}",
                           description=self.description,
                           why=failure.getErrorMessage() or failure.type.__name__)

    def _schedule(self, _, started):
        self._running_action = None
        if not self.running:
            return None
        delay = max(0.0, started + self.interval - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._beat)
        return None
