"""A non-zero exit status for a twistd process whose service failed.

twistd returns 0 whenever its reactor stopped cleanly, and a plugin has no
way to change that: a service that cannot start (a port in use, no
directory) can stop the reactor, but the shell would still see success.
``exit_with(status)`` makes the interpreter end with *status* once twistd
has returned and cleaned up (its pid file removed, its log closed).
"""

import atexit
import os
import sys

_status = {}


def exit_with(status=1):
    """Make this process exit with *status* when the interpreter ends."""
    if not _status:
        atexit.register(_exit)
    _status["code"] = status


def _exit():
    # os._exit skips the atexit handlers still to run (registered earlier):
    # do what the standard library's would, then end with the status.
    import logging
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass  # a closed stream: nothing left to flush
    os._exit(_status["code"])
