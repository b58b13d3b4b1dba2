"""The wait between reconnect attempts, shared by every reconnecting link.

A policy is a ``twisted.application.internet.ClientService`` retry policy:
``policy(attempt) -> seconds``, where *attempt* counts the failures in a
row (1 for the first). The wait doubles from ``initial`` up to ``maximum``
and never beyond, whatever the attempt number (``initial * 2 ** attempt``
overflows a float at attempt 1,024: a link that met that never retried
again). Each wait then loses a random share of up to ``jitter`` of itself,
so that the clients of a gateway that restarts do not all come back in the
same instant, and again ``maximum`` later, for ever.

Twisted's own ``backoffPolicy`` adds up to a second of jitter whatever the
delay, which is most of a 0.1 s first wait and nothing next to a 30 s one;
a proportional share is spread the same at every step.
"""

import math
import random


def backoff_policy(initial=0.1, maximum=30.0, factor=2.0, jitter=0.5, rng=None):
    """A capped, jittered exponential backoff: ``policy(attempt) -> seconds``.

    The wait for *attempt* (1, 2, …) is ``d = min(maximum, initial *
    factor ** (attempt - 1))`` less ``jitter * d * rng.random()``, so it lies
    in ``((1 - jitter) * d, d]``. ValueError for values that make no sense.
    """
    if not (isinstance(initial, (int, float)) and isinstance(maximum, (int, float))
            and math.isfinite(initial) and math.isfinite(maximum)
            and 0 < initial <= maximum):
        raise ValueError(
            "backoffs must satisfy 0 < initial_backoff <= maximum_backoff,"
            f" not {initial!r} and {maximum!r}")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"the backoff factor must be at least 1, not {factor!r}")
    if not 0 <= jitter < 1:
        raise ValueError(f"the backoff jitter must be in [0, 1), not {jitter!r}")
    rng = rng or random.SystemRandom()
    # Past this many doublings the cap always applies: the exponent stops
    # growing there, so no attempt count can overflow.
    if factor > 1 and maximum > initial:
        steps = math.ceil(math.log(maximum / initial, factor))
    else:
        steps = 0

    def policy(attempt):
        n = min(max(int(attempt) - 1, 0), steps)
        delay = min(maximum, initial * factor ** n)
        if jitter:
            delay -= jitter * delay * rng.random()
        return delay

    return policy
