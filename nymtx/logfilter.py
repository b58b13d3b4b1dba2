"""Which log events reach the log: a level for twistd's log and autobahn's.

``twistd`` logs every event it sees, debug included: it has no level of its
own. ``filter_log(level)``, called before twistd begins logging (from the
plugin's ``makeService``; see docs/decisions.md), puts a level filter in
front of whatever twistd logs to (stdout, ``--logfile``, ``--syslog``), and
sets the level of autobahn's txaio loggers, which otherwise build their
debug events (an option dump and the raw headers of every websocket) only
for the filter to throw them away.
"""

from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner)

#: the levels, most verbose first (twisted.logger's names)
LEVELS = ("debug", "info", "warn", "error", "critical")
DEFAULT_LEVEL = "info"


def level_filter(level=DEFAULT_LEVEL):
    """A twisted.logger filter predicate letting events at *level* and above through."""
    if level not in LEVELS:
        raise ValueError(f"a log level is one of {', '.join(LEVELS)}, not {level!r}")
    return LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))


def filter_log(level=DEFAULT_LEVEL, beginner=globalLogBeginner):
    """Log only events at *level* and above once *beginner* begins logging.

    The observers later given to ``beginner.beginLoggingTo`` (twistd's) are
    wrapped in a FilteringLogObserver, once; the events buffered until then
    are filtered too. Called again before that, the last level wins.
    """
    predicate = level_filter(level)
    _set_txaio_level(level)
    begin = vars(beginner).get("beginLoggingTo")
    if isinstance(begin, _FilteredBeginning):
        begin.predicate = predicate
    else:
        beginner.beginLoggingTo = _FilteredBeginning(beginner, predicate)


class _FilteredBeginning:
    """Stands in for ``beginner.beginLoggingTo`` until it is called, once."""

    def __init__(self, beginner, predicate):
        self.beginner = beginner
        self.predicate = predicate

    def __call__(self, observers, *args, **kwargs):
        del self.beginner.beginLoggingTo  # the class's own method again
        filtered = [FilteringLogObserver(o, [self.predicate]) for o in observers]
        return self.beginner.beginLoggingTo(filtered, *args, **kwargs)


def _set_txaio_level(level):
    # autobahn's loggers come from txaio; its levels have the same names
    import txaio
    txaio.use_twisted()  # what importing autobahn.twisted does too
    txaio.set_global_log_level(level)
