"""Attacks of a global passive adversary, each scored against the truth.

Every attack reads only a :class:`~nymtx.measure.trace.View` (and the public
settings: mean delays and gaps are in every client's config) and returns,
for each target (a real message's exit from the last mix layer into its
gateway), a probability distribution over the clients: who sent it. The
scoring (:func:`score`) alone compares them with the truth.

- ``timing``: correlates the target's exit time with every client's send
  times, weighted by the density of the three mix delays (Erlang).
- ``tracing``: follows packets through every mix by timing. With
  exponential delays a mix is memoryless, so a packet leaving it is equally
  likely to be any packet inside; propagating each mix's pool as a
  distribution over senders (Loopix §4; WPES'21's simulator) is the exact
  posterior of this adversary. Packets a gateway sends into layer 1 (acks,
  docs/surb.md §2.5) enter the pools too, as mass of no client: the
  adversary knows they are not a client's message, and a target is one.
- ``deficit``: volume counting. Where the client–gateway link shows how
  many messages each pull held, a client that sends real messages in place
  of loop cover receives less while it sends: sent minus received, around
  the target's time, counts its real messages.
- ``combined``: ``tracing`` × ``deficit`` × a per-recipient profile learned
  from the adversary's own earlier guesses (no truth): who has written to
  this recipient before.
"""

import math

import numpy as np

#: attack names, in report order
ATTACKS = ("timing", "tracing", "deficit", "combined")


def _normalise(weights):
    total = weights.sum(axis=-1, keepdims=True)
    n = weights.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, weights / np.where(total > 0, total, 1), 1.0 / n)
    return out


def _erlang_pdf(x, k, mean_each):
    """Density of the sum of *k* exponential delays of mean *mean_each*."""
    rate = 1.0 / mean_each
    x = np.maximum(x, 0.0)
    return rate ** k * x ** (k - 1) * np.exp(-rate * x) / math.factorial(k - 1)


def timing(view, hop_delay, mix_layers=3):
    n = view.topology.n_clients
    sends = view.hop_src < n
    send_time = view.hop_time[sends]
    send_client = view.hop_src[sends]
    horizon = 12 * hop_delay * mix_layers   # past it the density is negligible
    out = np.zeros((len(view.targets), n))
    for i, hop in enumerate(view.targets):
        t = view.hop_time[hop]
        lo, hi = np.searchsorted(send_time, [t - horizon, t], side="left")
        w = _erlang_pdf(t - send_time[lo:hi], mix_layers, hop_delay)
        out[i] = np.bincount(send_client[lo:hi], weights=w, minlength=n)
    return _normalise(out)


def tracing(view):
    """The pool-propagation posterior of every target (see the module doc)."""
    topo = view.topology
    n = topo.n_clients
    first_mix, first_gateway = topo.first_mix, topo.first_gateway
    n_mix = first_gateway - first_mix
    # column n: the mass of packets no client sent (a gateway's acks)
    pools = np.zeros((n_mix, n + 1))
    counts = np.zeros(n_mix)
    wanted = {int(h): i for i, h in enumerate(view.targets)}
    out = np.full((len(view.targets), n + 1), 1.0 / n)
    out[:, n] = 0.0
    src, dst = view.hop_src, view.hop_dst
    for hop in range(len(view.hop_time)):
        a, b = int(src[hop]), int(dst[hop])
        if a < first_mix:
            vec = None
        elif a >= first_gateway:
            vec = np.eye(n + 1)[n]
        else:
            m = a - first_mix
            if counts[m] <= 0:
                # a packet leaves a mix the adversary saw nothing enter (the
                # capture began with packets inside): it knows nothing of it
                vec = np.append(np.full(n, 1.0 / n), 0.0)
            else:
                vec = pools[m] / counts[m]
                pools[m] -= vec
                counts[m] -= 1
                if counts[m] < 0.5:
                    pools[m] = 0.0
                    counts[m] = 0
        if first_mix <= b < first_gateway:
            m = b - first_mix
            if vec is None:
                pools[m, a] += 1.0
            else:
                pools[m] += vec
            counts[m] += 1
        elif b >= first_gateway and hop in wanted:
            out[wanted[hop]] = vec if vec is not None else np.eye(n + 1)[a]
    # the target is a client's message: the mass of acks in it drops out
    return _normalise(np.clip(out[:, :n], 0, None))


def deficit(view, hop_delay, fetch_gap, window=5.0, hops=4):
    """Sent minus received around each target, where pulls show their counts."""
    n = view.topology.n_clients
    out = np.ones((len(view.targets), n))
    if len(view.pull_count) == 0 or np.all(view.pull_count < 0):
        return _normalise(out)   # the link hides the counts: nothing to count
    sends = view.hop_src < n
    send_time = view.hop_time[sends]
    send_client = view.hop_src[sends]
    seen = view.pull_count >= 0
    pull_time = view.pull_time[seen]
    pull_client = view.pull_client[seen]
    pull_count = view.pull_count[seen].astype(float)
    # what a client's own cover takes to come back: four hop delays and
    # half a pull interval on average
    lag = hops * hop_delay + fetch_gap / 2
    for i, hop in enumerate(view.targets):
        t = view.hop_time[hop] - (hops - 1) * hop_delay   # about when it was sent
        lo, hi = np.searchsorted(send_time, [t - window, t + window])
        sent = np.bincount(send_client[lo:hi], minlength=n).astype(float)
        lo, hi = np.searchsorted(pull_time, [t - window + lag, t + window + lag])
        got = np.bincount(pull_client[lo:hi], weights=pull_count[lo:hi], minlength=n)
        out[i] = np.maximum(sent - got, 0.0) + 0.5
    return _normalise(out)


def with_profile(view, base, target_recipients, prior_weight=1.0):
    """*base* posteriors sharpened by a per-recipient profile learned from the
    adversary's own earlier posteriors (in time order; no truth used)."""
    n = view.topology.n_clients
    order = np.argsort(view.hop_time[view.targets], kind="stable")
    profiles = {}
    out = np.empty_like(base)
    for i in order:
        r = int(target_recipients[i])
        prior = profiles.get(r)
        if prior is None:
            prior = np.full(n, prior_weight / n)
        out[i] = _normalise(base[i] * (prior / prior.sum()))
        # the profile accumulates the evidence, not the sharpened belief: fed
        # its own output it would lock onto its first guess, right or wrong
        profiles[r] = prior + base[i]
    return out


def run_all(view, settings, target_recipients):
    """Every attack's posteriors, by name."""
    t = timing(view, settings.hop_delay, settings.layers)
    tr = tracing(view)
    d = deficit(view, settings.hop_delay, settings.fetch_gap, hops=settings.layers + 1)
    combined = with_profile(view, _normalise(tr * d), target_recipients)
    return {"timing": t, "tracing": tr, "deficit": d, "combined": combined}


def entropy_bits(posteriors):
    p = np.clip(posteriors, 1e-300, 1.0)
    return -(posteriors * np.log2(p)).sum(axis=1)


def uncertainty(posteriors, n):
    """What can be said of *posteriors* without the truth: the entropy of each
    (a capture's report). ``None`` posteriors: an attack not computed."""
    if posteriors is None:
        return {"packets": 0, "mean_entropy_bits": None, "entropy_bits": [],
                "max_entropy_bits": math.log2(n), "success": None,
                "why": "it needs each message's recipient, which a capture does not show"}
    h = entropy_bits(posteriors) if len(posteriors) else np.zeros(0)
    return {"packets": int(len(h)), "entropy_bits": [float(x) for x in h],
            "mean_entropy_bits": float(h.mean()) if len(h) else None,
            "max_entropy_bits": math.log2(n), "success": None,
            "why": "success needs the true senders: a capture has no truth"}


def score(posteriors, true_senders):
    """Success rate (ties share the credit), entropy per message, against chance."""
    n = posteriors.shape[1] if posteriors.ndim == 2 else 0
    count = len(true_senders)
    if count == 0:
        return {"messages": 0, "success": None, "chance": 1.0 / n if n else None,
                "entropy_bits": [], "mean_entropy_bits": None, "max_entropy_bits":
                math.log2(n) if n else None}
    best = posteriors.max(axis=1, keepdims=True)
    top = np.isclose(posteriors, best, rtol=1e-9, atol=1e-12)
    hit = top[np.arange(count), true_senders] / top.sum(axis=1)
    h = entropy_bits(posteriors)
    return {"messages": int(count), "success": float(hit.mean()), "chance": 1.0 / n,
            "entropy_bits": [float(x) for x in h], "mean_entropy_bits": float(h.mean()),
            "max_entropy_bits": math.log2(n),
            "true_sender_probability": float(posteriors[np.arange(count), true_senders].mean())}
