"""What the gateways see of anonymous replies, scored against the truth.

A reply reaches its **builder** (the client that sent the reply blocks)
through the builder's own gateway as a SURB delivery, as every ack does;
that gateway tells SURB deliveries from forward packets by design
(docs/surb.md §1.7), not a reply from an ack. The checks here play that
gateway, which also sees (as the global observer of the suite does) its
client's packets into layer 1, and the **replier's** gateway:

- ``builders`` (the builder's gateway counting): per time window, the SURB
  deliveries for its client minus its client's sends one round trip
  earlier. Every packet a client sends comes back as one ack, so what is
  left over would be its replies — but the builder's client sends the ack
  of each reply it gets in a slot of its sending stream, a send like any
  other that comes back as no ack to it, so over a window longer than
  the builder's pull and send waits the count balances. Windows in phases
  where the client gets replies against the others: per minute, with 95%
  intervals and z, and the correlation of the windows' differences with
  the true replies in them.
- ``reply or ack`` (the builder's gateway, delivery by delivery): an ack
  follows one of its client's sends by a forward path, the ack hold and
  an ack path (about seven hop delays); a reply follows no send of the
  client. Each delivery is scored by the density of that lag summed over
  the client's earlier sends (the Erlang kernel of the timing attack); a
  low score says "reply". AUC against the truth (0.5: no better than a
  coin), and how many of the lowest-scored deliveries, as many as there
  were replies, are replies, against the base rate.
- ``sends with no ack`` (the same gateway, send by send): the dual. Each
  of its client's sends is scored by the density of the ack lag summed
  over the SURB deliveries that follow; the sends that come back as
  nothing are the acks of replies the client sent on, so a low score
  says "this send was a reply's ack, so a reply came shortly before".
- ``repliers`` (the replier's side): its packets into layer 1 per minute
  while it replies and while it does not, their sizes, the SURB deliveries
  for it at its gateway (the acks of its packets: a reply's ack comes from
  the builder's client, after the builder's pull and a slot of its stream),
  and the same timing score at its gateway, asking whether an ack is a
  reply's (which would say the client replied about then).
"""

import math

import numpy as np

from nymtx.measure.attacks import _erlang_pdf
from nymtx.measure.trace import ACK, REPLY
from nymtx.reliable.retransmit import GATEWAY_ACK_HOLD


def auc(positive, negative):
    """P(a positive scores above a negative), ties half: the Mann–Whitney
    AUC, with the Hanley–McNeil standard error and a 95% interval."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return {"auc": None, "se": None, "ci95": None, "positives": m, "negatives": n}
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_ = both[order]
    # average ranks over ties
    i = 0
    while i < len(both):
        j = i
        while j + 1 < len(both) and sorted_[j + 1] == sorted_[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    a = float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(max(a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a), 0.0)
                   / (m * n))
    return {"auc": a, "se": se, "ci95": [max(0.0, a - 1.96 * se), min(1.0, a + 1.96 * se)],
            "positives": m, "negatives": n}


def _round_trip(settings):
    """(the mean lag from a send to its ack's arrival at the sender's
    gateway, the kernel of that lag): the forward route's hop delays
    (three mixes and the recipient gateway's), the gateway's ack hold, the
    ack's three mixes."""
    hops = 2 * settings.layers + 1
    mean = hops * settings.hop_delay + GATEWAY_ACK_HOLD

    def kernel(lag):
        return _erlang_pdf(lag - GATEWAY_ACK_HOLD, hops, settings.hop_delay)
    return mean, kernel


def _surb_deliveries(trace):
    """(time into the gateway, client it is for, kind, packet) of every SURB
    packet (ack or reply) whose last hop is in the trace."""
    into = trace.hop_dst >= trace.topology.first_gateway
    packets = trace.hop_packet[into]
    kind = trace.packet_kind[packets]
    surb = (kind == ACK) | (kind == REPLY)
    return (trace.hop_time[into][surb], trace.packet_recipient[packets[surb]], kind[surb],
            packets[surb])


def _sends(trace, client):
    return np.sort(trace.hop_time[trace.hop_src == client])


def _in_phases(times, phases):
    inside = np.zeros(len(times), dtype=bool)
    for s, e in phases:
        inside |= (times >= s) & (times < e)
    return inside


def _mean_ci(values, seconds):
    """Mean per minute of per-window *values* (windows of *seconds*), 95% interval."""
    v = np.asarray(values, dtype=float) * 60.0 / seconds
    if len(v) == 0:
        return {"windows": 0, "per_minute": None, "ci95": None}
    if len(v) < 2:
        return {"windows": int(len(v)), "per_minute": float(v.mean()), "ci95": None}
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v))
    return {"windows": int(len(v)), "per_minute": float(v.mean()),
            "ci95": [float(v.mean() - half), float(v.mean() + half)]}


def _z(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return float((a.mean() - b.mean()) / se) if se > 0 else None


def _timing_scores(times, sends, kernel, horizon):
    """Per delivery at *times*, the summed density of the ack lag over the
    earlier *sends*: how well a send of the client explains it."""
    out = np.empty(len(times))
    for i, t in enumerate(times):
        lo, hi = np.searchsorted(sends, [t - horizon, t])
        out[i] = kernel(t - sends[lo:hi]).sum()
    return out


def _answered_phases(trace, replies):
    """The (start, end) of the phases whose messages the replies *replies*
    (a mask) answer: the workload's phases with replies, for these clients
    (a reply itself may leave a little after its phase ends)."""
    queued = trace.message_queued[trace.reply_to[replies]]
    return [(s, e) for s, e, _ in trace.phases if np.any((queued >= s) & (queued < e))]


def builders(trace, settings, window=20.0):
    """The builder's gateway counting SURB deliveries against sends (see the module doc)."""
    lag, _ = _round_trip(settings)
    t, client, kind, _ = _surb_deliveries(trace)
    edges = np.arange(0.0, trace.duration + 1e-9, window)
    if len(edges) < 4:
        return []
    # the first window holds acks of packets sent before the workload, the
    # last misses the acks of its last sends: both left out
    use = np.arange(1, len(edges) - 2)
    out = []
    for c in sorted(set(int(x) for x in trace.reply_recipient)):
        mine = client == c
        got, _ = np.histogram(t[mine], edges)
        replies, _ = np.histogram(t[mine & (kind == REPLY)], edges)
        sent, _ = np.histogram(_sends(trace, c) + lag, edges)
        diff = (got - sent)[use]
        answered = _answered_phases(trace, trace.reply_recipient == c)
        # windows wholly inside a phase with replies, and windows that touch
        # none (one that straddles a phase's edge is neither)
        lo, hi = edges[use], edges[use] + window
        whole = np.zeros(len(use), dtype=bool)
        none = np.ones(len(use), dtype=bool)
        for s, e in answered:
            whole |= (lo >= s) & (hi <= e)
            none &= ~((lo < e) & (hi > s))
        entry = {"client": trace.topology.clients[c], "window s": window,
                 "round trip s": lag, "surb deliveries": int(mine.sum()),
                 "replies received": int((mine & (kind == REPLY)).sum()),
                 "sends": int(len(_sends(trace, c)))}
        for name, sel in (("with replies", whole), ("without replies", none)):
            entry[name] = {"surb deliveries": _mean_ci(got[use][sel], window),
                           "sends": _mean_ci(sent[use][sel], window),
                           "deliveries minus sends": _mean_ci(diff[sel], window),
                           "true replies": _mean_ci(replies[use][sel], window)}
        entry["z, deliveries minus sends, with against without"] = _z(diff[whole], diff[none])
        r = replies[use]
        entry["correlation with the true replies per window"] = (
            float(np.corrcoef(diff, r)[0, 1]) if len(r) > 2 and r.std() > 0 and diff.std() > 0
            else None)
        entry["estimated replies (sum of the differences)"] = int(diff.sum())
        entry["true replies (in the same windows)"] = int(r.sum())
        out.append(entry)
    return out


def reply_or_ack(trace, settings):
    """Each SURB delivery at a builder's gateway, scored by timing (module doc)."""
    lag, kernel = _round_trip(settings)
    horizon = 4 * lag
    t, client, kind, _ = _surb_deliveries(trace)
    keep = t > horizon   # earlier ones may be acks of sends before the workload
    scores, labels = [], []
    for c in sorted(set(int(x) for x in trace.reply_recipient)):
        mine = keep & (client == c)
        scores.append(_timing_scores(t[mine], _sends(trace, c), kernel, horizon))
        labels.append(kind[mine] == REPLY)
    return _classification(scores, labels, "reply")


def unacked_sends(trace, settings):
    """The dual of :func:`reply_or_ack`: each of a builder's sends, scored by
    the summed density of the ack lag over the SURB deliveries for it that
    follow. Every packet the client sends comes back as an ack except the
    acks of replies it sends on: a send nothing comes back for is one."""
    lag, kernel = _round_trip(settings)
    horizon = 4 * lag
    t, client, _, _ = _surb_deliveries(trace)
    scores, labels = [], []
    for c in sorted(set(int(x) for x in trace.reply_recipient)):
        mine = trace.hop_src == c
        sends = trace.hop_time[mine]
        kinds = trace.packet_kind[trace.hop_packet[mine]]
        keep = (sends > horizon) & (sends < trace.duration - horizon)
        arrivals = np.sort(t[client == c])
        out = np.empty(int(keep.sum()))
        for i, s in enumerate(sends[keep]):
            lo, hi = np.searchsorted(arrivals, [s, s + horizon])
            out[i] = kernel(arrivals[lo:hi] - s).sum()
        scores.append(out)
        labels.append(kinds[keep] == ACK)
    got = _classification(scores, labels, "reply ack")
    got["sends"] = got.pop("deliveries")
    return got


def _classification(scores, labels, what):
    scores = np.concatenate(scores) if scores else np.zeros(0)
    labels = np.concatenate(labels) if labels else np.zeros(0, dtype=bool)
    positives = int(labels.sum())
    out = {"deliveries": int(len(labels)), "replies" if what == "reply" else "reply acks":
           positives, "base rate": positives / len(labels) if len(labels) else None}
    # a low score (no send explains it) says "reply": AUC of the negated score
    out.update(auc(-scores[labels], -scores[~labels]))
    if positives and len(labels):
        top = np.argsort(scores, kind="stable")[:positives]
        out["precision of the lowest-scored, as many as the positives"] = float(
            labels[top].mean())
        out["median score, positives"] = float(np.median(scores[labels]))
        out["median score, others"] = float(np.median(scores[~labels])) \
            if (~labels).any() else None
    return out


def repliers(trace, settings):
    """The replier's sends and the acks at its gateway, replying against not."""
    lag, kernel = _round_trip(settings)
    horizon = 4 * lag
    t, client, kind, packet = _surb_deliveries(trace)
    origin = trace.packet_origin
    out = []
    for b in sorted(set(int(x) for x in trace.reply_sender)):
        # within [horizon, duration − horizon]: the first acks may be of
        # packets sent before the workload, the last ones' acks after the end
        lo, hi = horizon, trace.duration - horizon
        answering = [(max(s, lo), min(e, hi)) for s, e in
                     _answered_phases(trace, trace.reply_sender == b) if min(e, hi) > max(s, lo)]
        seconds_in = sum(e - s for s, e in answering)
        seconds_out = max(hi - lo - seconds_in, 0.0)
        sends = _sends(trace, b)
        sizes = sorted(set(int(x) for x in trace.hop_size[trace.hop_src == b]))
        entry = {"client": trace.topology.clients[b],
                 "replies sent": int(np.sum(trace.reply_sender == b)),
                 "sizes": sizes, "seconds replying": seconds_in,
                 "seconds not replying": seconds_out}
        mine = client == b
        for name, times in (("sent", sends), ("surb deliveries at its gateway", t[mine])):
            times = times[(times >= lo) & (times < hi)]
            inside = _in_phases(times, answering)
            k_in, k_out = int(inside.sum()), int((~inside).sum())
            entry[name] = {"replying per minute": 60 * k_in / seconds_in if seconds_in else None,
                           "not replying per minute": 60 * k_out / seconds_out
                           if seconds_out > 0 else None,
                           "z": _poisson_z(k_in, seconds_in, k_out, seconds_out)}
        # is a delivery the ack of a reply (sent on by its builder, late)?
        sel = mine & (t > horizon)
        of_reply = np.zeros(len(t), dtype=bool)
        if origin is not None:
            o = origin[packet]
            of_reply = (kind == ACK) & (o >= 0) & (trace.packet_kind[np.maximum(o, 0)] == REPLY)
        entry["ack of a reply or of another packet"] = _classification(
            [_timing_scores(t[sel], sends, kernel, horizon)], [of_reply[sel]], "reply ack")
        out.append(entry)
    return out


def _poisson_z(k_in, s_in, k_out, s_out):
    if s_in <= 0 or s_out <= 0:
        return None
    se = math.sqrt(max(k_in, 1) / s_in ** 2 + max(k_out, 1) / s_out ** 2)
    return (k_in / s_in - k_out / s_out) / se


def run(trace, settings, window=20.0):
    """Every reply check, or None for a trace without replies (the model, a
    workload with no anonymous conversations). *window*: the builder's
    gateway's counting window, s."""
    if trace.reply_sender is None:
        return None
    return {"replies": int(len(trace.reply_sender)),
            "builders": builders(trace, settings, window),
            "reply or ack": reply_or_ack(trace, settings),
            "sends with no ack": unacked_sends(trace, settings),
            "repliers": repliers(trace, settings)}
