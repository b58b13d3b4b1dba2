"""Checks of the design's own promises, on a trace.

- every packet on every mix link has one size;
- send gaps and per-hop delays are exponential with the configured means
  (one-sample Kolmogorov–Smirnov test: statistic, p-value, n);
- each client's outgoing and incoming packet rates do not depend on its real
  traffic (idle phases against busy ones, with confidence intervals);
- what the client–gateway link shows besides timing (counts, sizes);
- the ack stream (docs/surb.md §2.5): each gateway sends one ack into
  layer 1 per packet that ends at it, whatever the packet was, so its
  outgoing rate follows its incoming one and its delay does not tell real
  from cover; and the acks arriving for a client do not rise with its real
  traffic;
- anonymous replies (:mod:`nymtx.measure.replies`): what the builder's and
  the replier's gateways can tell of them, in a run that has them.
"""

import math

import numpy as np

from nymtx.measure import replies
from nymtx.measure.trace import ACK, DROP, FORWARD, KIND_NAMES, LOOP, REAL


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


def ks_two_samples(a, b):
    """Two-sample KS test: (D, p, n, m), the p-value asymptotic (Kolmogorov,
    with Stephens' correction on the effective size), None for an empty side."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return {"statistic": None, "p": None, "n": n, "m": m}
    both = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, both, side="right") / n
                            - np.searchsorted(b, both, side="right") / m)))
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return {"statistic": d, "p": float(min(max(p, 0.0), 1.0)), "n": n, "m": m}


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
    cover = np.isin(trace.packet_kind, [LOOP, DROP])
    cover_in = cover & (trace.packet_recipient >= 0) & (arrived < trace.duration)
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


def _busy_idle(trace, c, times):
    """(busy, idle, z) rates of *times* for client *c*, as in rate_independence;
    None when the client has no busy phase or no idle time."""
    queued = trace.message_queued[trace.message_sender == c]
    busy = [(s, e) for s, e, _ in trace.phases if np.any((queued >= s) & (queued < e))]
    busy_seconds = sum(e - s for s, e in busy)
    idle_seconds = trace.duration - busy_seconds
    if not busy or idle_seconds <= 0:
        return None
    inside = np.zeros(len(times), dtype=bool)
    for s, e in busy:
        inside |= (times >= s) & (times < e)
    b, i = int(inside.sum()), int((~inside).sum())
    se = math.sqrt(max(b, 1) / busy_seconds ** 2 + max(i, 1) / idle_seconds ** 2)
    return {"busy": _rate(b, busy_seconds), "idle": _rate(i, idle_seconds),
            "z": (b / busy_seconds - i / idle_seconds) / se}


def ack_stream(trace, bin_seconds=1.0):
    """The ack stream, as an observer of the mix links sees it, checked with
    the truth (docs/surb.md §2.5).

    Per gateway: the forward packets that end at it (hops into it of real,
    loop or drop packets) against the acks it sends into layer 1 (hops
    from it): counts, rates, the correlation of their counts per
    *bin_seconds*, and per kind of the packet acked, the share acked and
    the time from the packet's release (arrival plus its last delay) to its
    ack leaving: if that differed between real and cover, the ack would tell
    them apart. Per client: the acks arriving at its gateway for it, in its
    busy phases against its idle ones (``z`` as in rate_independence).
    ``None`` for a trace without acks (the model).
    """
    if trace.packet_origin is None:
        return None
    topo = trace.topology
    first_gateway = topo.first_gateway
    kind = trace.packet_kind
    into = trace.hop_dst >= first_gateway
    hop_kind = kind[trace.hop_packet]
    bins = np.arange(0.0, trace.duration + bin_seconds, bin_seconds)
    # per packet: its last hop into a gateway, and its first hop out of one
    arrival = np.full(len(kind), np.nan)
    arrival[trace.hop_packet[into]] = trace.hop_time[into]
    out_of = trace.hop_src >= first_gateway
    ack_left = np.full(len(kind), np.nan)
    ack_left[trace.hop_packet[out_of]] = trace.hop_time[out_of]
    origin = trace.packet_origin
    acked = np.zeros(len(kind), dtype=bool)
    lag = np.full(len(kind), np.nan)
    has = (kind == ACK) & (origin >= 0)
    acked[origin[has]] = True
    # the gateway holds a packet for its last delay, then stores it
    last = max(topo.mix_layers) if topo.mix_layers else 0
    released = arrival + np.nan_to_num(trace.packet_delays[np.arange(len(kind)), last])
    lag[origin[has]] = ack_left[has] - released[origin[has]]
    gateways = []
    for k, name in enumerate(topo.gateways):
        g = first_gateway + k
        final = into & (trace.hop_dst == g) & np.isin(hop_kind, FORWARD)
        sent = out_of & (trace.hop_src == g)
        a, _ = np.histogram(trace.hop_time[final], bins)
        b, _ = np.histogram(trace.hop_time[sent], bins)
        corr = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0             else None
        entry = {"gateway": name, "final hops in": int(final.sum()),
                 "acks out": int(sent.sum()),
                 "in": _rate(int(final.sum()), trace.duration),
                 "out": _rate(int(sent.sum()), trace.duration),
                 "correlation per %g s" % bin_seconds: corr, "by kind": {}}
        ended = np.zeros(len(kind), dtype=bool)
        ended[trace.hop_packet[final]] = True
        lags_of = {}
        for kd in FORWARD:
            mine = ended & (kind == kd)
            # a packet that arrived near the end may have its ack still to come
            seen = mine & (arrival < trace.duration - 2.0)
            lags = lags_of[kd] = lag[seen & acked]
            entry["by kind"][KIND_NAMES[kd]] = {
                "ended here": int(mine.sum()),
                "acked": float(acked[seen].mean()) if seen.any() else None,
                "ack lag median s": float(np.median(lags)) if len(lags) else None,
                "ack lag p90 s": float(np.percentile(lags, 90)) if len(lags) else None}
        # the promise: an ack leaves as soon after a real packet as after
        # cover (else its timing would tell them apart)
        entry["ack lag, real against cover (KS)"] = ks_two_samples(
            lags_of[REAL], np.concatenate([lags_of[LOOP], lags_of[DROP]]))
        gateways.append(entry)
    # the acks' arrival at each client's gateway: their last hop
    ack_in = into & (hop_kind == ACK)
    clients = []
    for c in range(topo.n_clients):
        mine = ack_in & (trace.packet_sender[trace.hop_packet] == c)
        split = _busy_idle(trace, c, trace.hop_time[mine])
        if split is not None:
            clients.append(dict(split, client=topo.clients[c]))
    return {"acks": int(np.sum(kind == ACK)), "gateways": gateways, "arrivals": clients}


def run_all(trace, settings):
    return {"packet_sizes": packet_sizes(trace),
            "exponential": exponential_checks(trace, settings),
            "rates": rate_independence(trace),
            "gateway_link": gateway_link(trace),
            "ack_stream": ack_stream(trace),
            "replies": replies.run(trace, settings)}
