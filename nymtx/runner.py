"""Run one service in the foreground, for the ``nym-*`` commands.

twistd does the same for the plugins; this is the plain-command path: log
text to stderr, stop the service on Ctrl-C, and turn a failure to start
(a port already in use, a bad config) into one clear line and exit code 1.
"""

import sys

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger,
    globalLogBeginner, textFileLogObserver)

log = Logger()


def start_logging(level="info", stream=None):
    predicate = LogLevelFilterPredicate(
        defaultLogLevel=LogLevel.levelWithName(level))
    # the reactor's own "Main loop terminated." at info ends every command's
    # output (after an error it reads like a second message); debug shows it
    if level != "debug":
        predicate.setLogLevelForNamespace("twisted.internet.base", LogLevel.warn)
    observer = FilteringLogObserver(
        textFileLogObserver(stream or sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


class ExitOnFailure(MultiService):
    """For twistd: stop the process with *status* when *service* cannot start.

    *service* reports its start-up through ``whenListening()``. A failure
    that comes after the reactor started (a client whose directory does not
    answer; its API port taken once it is initialised) cannot be raised to
    twistd, which has no way to set an exit status once its reactor runs:
    this logs the reason, stops the reactor (the services stop as usual)
    and, through ``nymtx.exitstatus.exit_with``, makes the process exit with
    *status* once twistd has cleaned up. Tests pass their own *exit*.
    ``run_service`` disarms it and reports the failure itself.
    """

    def __init__(self, service, reactor=None, status=1, exit=None):
        super().__init__()
        self.service = service
        self.reactor = reactor
        self.status = status
        if exit is None:
            from nymtx.exitstatus import exit_with as exit
        self._exit = exit
        self.armed = True
        service.setServiceParent(self)

    def startService(self):
        super().startService()
        if self.armed:
            self.service.whenListening().addErrback(self._failed)

    def whenListening(self):
        return self.service.whenListening()

    def disarm(self):
        self.armed = False

    def _failed(self, failure):
        if not self.armed:
            return
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        log.critical("could not start: {why}; stopping with exit status {status}",
                     why=failure.getErrorMessage() or failure.type.__name__,
                     status=self.status)
        self._exit(self.status)
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)


def run_service(service, reactor=None, level="info"):
    """Start *service*, run the reactor until interrupted, return an exit code."""
    if reactor is None:
        from twisted.internet import reactor
    if isinstance(service, ExitOnFailure):
        service.disarm()  # the exit code is ours to give
    start_logging(level)
    outcome = {"code": 0}

    def start():
        d = maybeDeferred(service.startService)
        d.addErrback(failed)

    def failed(f):
        if outcome["code"]:
            return  # startService and whenListening may both report one failure
        outcome["code"] = 1
        log.critical("could not start: {why}", why=f.getErrorMessage()
                     or f.type.__name__)
        print(f"error: could not start: {f.getErrorMessage() or f.type.__name__}",
              file=sys.stderr)
        if reactor.running:
            reactor.stop()

    def stop():
        if service.running:
            return maybeDeferred(service.stopService)

    # startService of a MultiService does not return the listeners' Deferreds,
    # so a listener that fails to bind logs an error instead; the services
    # here report that through ``whenListening`` when they have one.
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    listening = getattr(service, "whenListening", None)
    if listening is not None:
        reactor.callWhenRunning(lambda: Deferred.addErrback(listening(), failed))
    reactor.run()
    return outcome["code"]
