"""Checks of the design's own promises, on a trace.

- every packet on every mix link has one size;
- send gaps and per-hop delays are exponential with the configured means
  (one-sample Kolmogorov–Smirnov test: statistic, p-value, n);
- each client's outgoing and incoming packet rates do not depend on its real
  traffic (idle phases against busy ones, with confidence intervals);
- what the client–gateway link shows besides timing (counts, sizes).
"""

import math

import numpy as np

from nymtx.measure.trace import REAL


def ks_exponential(samples, mean):
    """One-sample KS test of *samples* against Exp(mean): (D, p, n).

    The p-value uses the asymptotic Kolmogorov distribution with Stephens'
    small-sample correction, good to about 1% for n ≥ 5.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return {"statistic": None, "p": None, "n": 0}
    cdf = 1.0 - np.exp(-x / mean)
    i = np.arange(1, n + 1)
    d = float(max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n)))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return {"statistic": d, "p": float(min(max(p, 0.0), 1.0)), "n": n}


def packet_sizes(trace):
    sizes = np.unique(trace.hop_size)
    return {"sizes": [int(s) for s in sizes], "one_size": len(sizes) == 1,
            "packets": int(len(trace.hop_size))}


def send_gaps(trace, client=0):
    """Gaps between a client's consecutive packets into the mixnet, all
    streams together: the sum of Poisson streams is Poisson."""
    mine = trace.hop_src == client
    return np.diff(trace.hop_time[mine])


def exponential_checks(trace, settings):
    n = trace.topology.n_clients
    out = {"send_gaps": [], "hop_delays": []}
    # the sending stream and the loop stream together have mean gap
    # 1 / (1/send_gap + 1/loop_gap)
    merged = 1.0 / (1.0 / settings.send_gap + 1.0 / settings.loop_gap)
    for c in range(n):
        result = ks_exponential(send_gaps(trace, c), merged)
        out["send_gaps"].append(dict(result, client=trace.topology.clients[c], mean=merged))
    for hop in range(settings.layers + 1):
        delays = trace.packet_delays[:, hop]
        delays = delays[~np.isnan(delays)]
        out["hop_delays"].append(dict(ks_exponential(delays, settings.hop_delay),
                                      hop=hop + 1, mean=settings.hop_delay))
    return out


def _rate(count, seconds):
    rate = count / seconds
    half = 1.96 * math.sqrt(max(count, 1)) / seconds
    return {"count": int(count), "seconds": seconds, "per_minute": 60 * rate,
            "ci95_per_minute": [60 * (rate - half), 60 * (rate + half)]}


def rate_independence(trace):
    """Per client, packets sent and cover received per minute in the phases
    where it sends real messages (busy) against those where it does not.

    "Sent" is what an observer counts on its link into the mixnet. "Cover
    received" is the cover that reaches its mailbox (its own loops, and drop
    cover where drops end at clients): the promise is that this does not
    depend on what the client sends. Real mail *to* a client adds on top
    (a client written to receives more), and the padded pulls hide that on
    the wire. ``z`` is the busy−idle difference in standard errors.
    """
    n = trace.topology.n_clients
    real = trace.packet_kind == REAL
    sends = trace.hop_src < n
    send_time, send_client = trace.hop_time[sends], trace.hop_src[sends]
    arrived = trace.packet_sent + np.nansum(trace.packet_delays, axis=1)
    cover_in = (~real) & (trace.packet_recipient >= 0) & (arrived < trace.duration)
    out = []
    for c in range(n):
        queued = trace.message_queued[trace.message_sender == c]
        busy = [(s, e) for s, e, _ in trace.phases
                if np.any((queued >= s) & (queued < e))]
        busy_seconds = sum(e - s for s, e in busy)
        idle_seconds = trace.duration - busy_seconds
        if not busy or idle_seconds <= 0:
            continue

        def split(times):
            inside = np.zeros(len(times), dtype=bool)
            for s, e in busy:
                inside |= (times >= s) & (times < e)
            return int(inside.sum()), int((~inside).sum())

        entry = {"client": trace.topology.clients[c],
                 "real_sent": int(np.sum(real & (trace.packet_sender == c)))}
        for name, times in (("sent", send_time[send_client == c]),
                            ("received", arrived[cover_in & (trace.packet_recipient == c)])):
            b, i = split(times)
            rb, ri = _rate(b, busy_seconds), _rate(i, idle_seconds)
            se = math.sqrt(max(b, 1) / busy_seconds ** 2 + max(i, 1) / idle_seconds ** 2)
            entry[name] = {"busy": rb, "idle": ri,
                           "z": (b / busy_seconds - i / idle_seconds) / se}
        out.append(entry)
    return out


def gateway_link(trace):
    """What the pulls show beyond their timing."""
    visible = trace.pull_count >= 0
    return {"pulls": int(len(trace.pull_time)),
            "counts_visible": int(visible.sum()),
            "shows_only_timing": not bool(visible.any())}


def run_all(trace, settings):
    return {"packet_sizes": packet_sizes(trace),
            "exponential": exponential_checks(trace, settings),
            "rates": rate_independence(trace),
            "gateway_link": gateway_link(trace)}
