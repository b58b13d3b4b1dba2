"""A result that comes once and that any number of callers can wait for."""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class OneShot:
    """Fire once with a value or a Failure; ``when_fired()`` gives each waiter
    its own Deferred, before or after the fact, so that no waiter's callbacks
    can change what the next one sees."""

    def __init__(self):
        self._result = None
        self._fired = False
        self._waiters = []

    @property
    def fired(self):
        return self._fired

    def fire(self, result):
        if self._fired:
            return
        self._fired = True
        self._result = result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._relay(d)

    def when_fired(self):
        d = Deferred()
        if self._fired:
            self._relay(d)
        else:
            self._waiters.append(d)
        return d

    def _relay(self, d):
        if isinstance(self._result, Failure):
            d.errback(self._result)
        else:
            d.callback(self._result)
