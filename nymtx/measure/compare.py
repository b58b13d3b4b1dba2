"""The model checked against the real network: the same workload, several seeds.

:func:`compare` runs the model (:mod:`nymtx.measure.sim`) with the settings
the real network showed (its cover design and pull pattern included) for
several seeds, and sets each attack's success and mean entropy, and the
rate checks, beside the real network's, with their sampling errors: the
spread of the model over its seeds, a Wilson interval on the real success
(a binomial count of messages), the standard error of the real mean
entropy. A figure agrees when the two differ by less than twice their
combined standard error.
"""

import math

import numpy as np

from nymtx.measure import attacks, checks, sim
from nymtx.measure.attacks import ATTACKS


def wilson(successes, n, z=1.96):
    """The 95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return (None, None)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rates(result):
    """Per client: sent and cover-received per minute, busy and idle, and z."""
    out = {}
    for r in result["rates"]:
        out[r["client"]] = {f"{what} {phase}": r[what][phase]["per_minute"]
                            for what in ("sent", "received") for phase in ("busy", "idle")}
        out[r["client"]].update({f"{what} z": r[what]["z"] for what in ("sent", "received")})
    return out


def compare(settings, phases, duration, real_scores, real_checks, seeds=10):
    """The comparison as a dict (see the module doc), ready for figures.json."""
    model = {name: {"success": [], "entropy": []} for name in ATTACKS}
    model_rates = []
    for seed in range(seeds):
        trace = sim.simulate(settings, phases, duration, seed=seed)
        view = trace.view()
        posteriors = attacks.run_all(view, settings, trace.target_recipients())
        truth = trace.target_senders()
        for name, p in posteriors.items():
            s = attacks.score(p, truth)
            if s["messages"]:
                model[name]["success"].append(s["success"])
                model[name]["entropy"].append(s["mean_entropy_bits"])
        model_rates.append(_rates(checks.run_all(trace, settings)))
    out = {"seeds": seeds, "settings": {k: getattr(settings, k) for k in (
        "clients", "send_gap", "loop_gap", "hop_delay", "fetch_gap", "cover", "pulls")},
        "attacks": {}, "rates": {}}
    for name in ATTACKS:
        real = real_scores[name]
        n = real["messages"]
        ms, me = np.array(model[name]["success"]), np.array(model[name]["entropy"])
        entry = {"messages": n}
        if n and len(ms):
            h = np.asarray(real["entropy_bits"])
            se_success = math.sqrt(max(real["success"] * (1 - real["success"]), 1e-12) / n)
            se_entropy = float(h.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
            entry.update({
                "real success": real["success"],
                "real success 95%": wilson(real["success"] * n, n),
                "model success mean": float(ms.mean()), "model success sd": float(ms.std(ddof=1))
                if len(ms) > 1 else 0.0,
                "real entropy": real["mean_entropy_bits"], "real entropy se": se_entropy,
                "model entropy mean": float(me.mean()), "model entropy sd": float(me.std(ddof=1))
                if len(me) > 1 else 0.0})
            entry["success agrees"] = bool(abs(entry["real success"] - entry["model success mean"])
                                           <= 2 * math.hypot(se_success, entry["model success sd"]))
            entry["entropy agrees"] = bool(abs(entry["real entropy"] - entry["model entropy mean"])
                                           <= 2 * math.hypot(se_entropy, entry["model entropy sd"]))
        out["attacks"][name] = entry
    real_rates = _rates(real_checks)
    for client, values in real_rates.items():
        rows = {}
        for key, value in values.items():
            seen = [r[client][key] for r in model_rates if client in r]
            rows[key] = {"real": value,
                         "model mean": float(np.mean(seen)) if seen else None,
                         "model sd": float(np.std(seen, ddof=1)) if len(seen) > 1 else None}
        out["rates"][client] = rows
    return out


def markdown(comparison):
    """The comparison as the lines of a summary.md section."""
    c = comparison
    lines = ["", f"## The model checked against this run ({c['seeds']} seeds of the model,"
                 f" {c['settings']['cover']} cover, {c['settings']['pulls']} pulls)", "",
             "| attack | messages | real: names the sender (95%) | model: mean ± sd | agree |"
             " real entropy ± se | model entropy ± sd | agree |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ATTACKS:
        e = c["attacks"][name]
        if "real success" not in e:
            lines.append(f"| {name} | {e['messages']} | – | – | – | – | – | – |")
            continue
        lo, hi = e["real success 95%"]
        lines.append(
            f"| {name} | {e['messages']} | {100 * e['real success']:.1f}%"
            f" ({100 * lo:.1f}–{100 * hi:.1f}) | {100 * e['model success mean']:.1f}% ±"
            f" {100 * e['model success sd']:.1f} | {'yes' if e['success agrees'] else 'NO'} |"
            f" {e['real entropy']:.2f} ± {e['real entropy se']:.2f} |"
            f" {e['model entropy mean']:.2f} ± {e['model entropy sd']:.2f} |"
            f" {'yes' if e['entropy agrees'] else 'NO'} |")
    lines += ["", "Packets per minute (real / model mean ± sd):", "",
              "| client | sent busy | sent idle | sent z | cover received busy |"
              " cover received idle | received z |", "|---|---|---|---|---|---|---|"]
    for client, rows in c["rates"].items():
        def cell(key):
            r = rows[key]
            if r["model mean"] is None:
                return f"{r['real']:.1f} / –"
            return f"{r['real']:.1f} / {r['model mean']:.1f} ± {r['model sd'] or 0:.1f}"
        lines.append(f"| {client} | " + " | ".join(cell(k) for k in (
            "sent busy", "sent idle", "sent z", "received busy", "received idle",
            "received z")) + " |")
    return lines
