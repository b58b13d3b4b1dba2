"""Run one service in the foreground, for the ``nym-*`` commands.

twistd does the same for the plugins; this is the plain-command path: log
text to stderr, stop the service on Ctrl-C, and turn a failure to start
(a port already in use, a bad config) into one clear line and exit code 1.
"""

import sys

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger,
    globalLogBeginner, textFileLogObserver)

log = Logger()


def start_logging(level="info", stream=None):
    predicate = LogLevelFilterPredicate(
        defaultLogLevel=LogLevel.levelWithName(level))
    observer = FilteringLogObserver(
        textFileLogObserver(stream or sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run_service(service, reactor=None, level="info"):
    """Start *service*, run the reactor until interrupted, return an exit code."""
    if reactor is None:
        from twisted.internet import reactor
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
