"""The measurement's report: a folder with summary.md, figures.json and PNG plots."""

import json
import math
import os

import numpy as np

from nymtx.measure.attacks import ATTACKS

_PHASE_COLOURS = {"idle": "#eeeeee", "conversations": "#dbeafe", "flood": "#fde2e2",
                  "bursts": "#fef3c7", "anonymous": "#e0f2e9", "replies": "#ede0f7"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # no screen here, and none needed
    import matplotlib.pyplot as plt
    return plt


def _shade(ax, phases):
    for start, end, label in phases:
        ax.axvspan(start, end, color=_PHASE_COLOURS.get(label, "#f3f3f3"), zorder=0)
        ax.text((start + end) / 2, 1.0, label, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)


def plot_rates(trace, path, bin_seconds=10.0):
    plt = _pyplot()
    n = trace.topology.n_clients
    edges = np.arange(0, trace.duration + bin_seconds, bin_seconds)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    sends = trace.hop_src < n
    for c in range(n):
        t = trace.hop_time[sends & (trace.hop_src == c)]
        counts, _ = np.histogram(t, edges)
        top.plot(edges[:-1], counts * 60 / bin_seconds, label=trace.topology.clients[c])
        pulls = trace.pull_client == c
        got, _ = np.histogram(trace.pull_time[pulls], edges,
                              weights=trace.pull_true_count[pulls])
        bottom.plot(edges[:-1], got * 60 / bin_seconds, label=trace.topology.clients[c])
    # the received panel counts what pulls delivered: cover and real mail
    _shade(top, trace.phases)
    _shade(bottom, trace.phases)
    top.set_ylabel("sent, packets/min")
    bottom.set_ylabel("received, packets/min")
    bottom.set_xlabel("time (s)")
    top.legend(fontsize=7, ncol=min(n, 6), loc="lower right")
    fig.suptitle("Packets each client sends and receives (cover included)", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_entropy_cdf(scores, n_clients, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ATTACKS:
        h = np.sort(scores[name]["entropy_bits"])
        if len(h):
            ax.step(h, np.arange(1, len(h) + 1) / len(h), where="post", label=name)
    ax.axvline(math.log2(n_clients), color="k", ls="--", lw=1,
               label=f"log2 N = {math.log2(n_clients):.2f}")
    ax.set_xlabel("entropy of the sender distribution (bits)")
    ax.set_ylabel("fraction of messages")
    ax.set_title("Per-message sender entropy, by attack")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_delays(trace, settings, path):
    plt = _pyplot()
    hops = settings.layers + 1
    fig, axes = plt.subplots(1, hops, figsize=(3 * hops, 3), sharey=True)
    for hop, ax in enumerate(np.atleast_1d(axes)):
        d = trace.packet_delays[:, hop]
        d = d[~np.isnan(d)]
        top = settings.hop_delay * 6
        ax.hist(d, bins=40, range=(0, top), density=True, color="#93c5fd")
        x = np.linspace(0, top, 200)
        ax.plot(x, np.exp(-x / settings.hop_delay) / settings.hop_delay, "k-", lw=1)
        ax.set_title(f"hop {hop + 1}" + (" (gateway)" if hop == hops - 1 else ""), fontsize=9)
        ax.set_xlabel("delay (s)")
    np.atleast_1d(axes)[0].set_ylabel("density")
    fig.suptitle(f"Per-hop delays against Exp(mean {settings.hop_delay} s)", y=0.99)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(folder, trace, settings, scores, checks, meta):
    """Write the report; returns the path of summary.md."""
    os.makedirs(folder, exist_ok=True)
    n = trace.topology.n_clients
    figures = {"meta": meta, "settings": {k: getattr(settings, k) for k in (
        "clients", "mixnodes_per_layer", "gateways", "send_gap", "loop_gap", "hop_delay",
        "fetch_gap", "cover", "pulls", "drop_to", "layers")},
        "attacks": scores, "checks": checks}
    with open(os.path.join(folder, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    plot_rates(trace, os.path.join(folder, "rates.png"))
    plot_entropy_cdf(scores, n, os.path.join(folder, "entropy_cdf.png"))
    plot_delays(trace, settings, os.path.join(folder, "delays.png"))
    lines = [f"# nym-measure: {meta.get('title', 'report')}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "title"]
    lines += ["", "## Attacks (scored against the truth)", "",
              "| attack | messages | names the true sender | chance | mean entropy (bits) | of log2 N |",
              "|---|---|---|---|---|---|"]
    for name in ATTACKS:
        s = scores[name]
        if not s["messages"]:
            lines.append(f"| {name} | 0 | – | – | – | – |")
            continue
        lines.append(
            f"| {name} | {s['messages']} | {100 * s['success']:.1f}% | {100 * s['chance']:.1f}% |"
            f" {s['mean_entropy_bits']:.2f} of {s['max_entropy_bits']:.2f} |"
            f" {s['mean_entropy_bits'] / s['max_entropy_bits']:.2f} |")
    lines += ["", "![entropy](entropy_cdf.png)", "", "## The design's promises", ""]
    sizes = checks["packet_sizes"]
    lines.append(f"- Packet sizes on the mix links: {sizes['sizes']} over {sizes['packets']}"
                 f" packets ({'one size' if sizes['one_size'] else 'MORE THAN ONE SIZE'}).")
    gl = checks["gateway_link"]
    lines.append(f"- Client–gateway link: {gl['pulls']} pulls, {gl['counts_visible']} of them"
                 f" showing how many messages they held"
                 f" ({'timing only' if gl['shows_only_timing'] else 'COUNTS VISIBLE'}).")
    lines += ["", "| exponential? | n | KS D | p |", "|---|---|---|---|"]
    for g in checks["exponential"]["send_gaps"]:
        lines.append(f"| send gaps of {g['client']} | {g['n']} | {g['statistic']:.4f} | {g['p']:.3f} |")
    for g in checks["exponential"]["hop_delays"]:
        lines.append(f"| delays at hop {g['hop']} | {g['n']} | {g['statistic']:.4f} | {g['p']:.3f} |")
    lines += ["", "Per client, packets per minute while it sends real messages (busy) and"
              " while it does not (idle); z is the difference in standard errors (|z| < 2:"
              " no visible difference). Cover received is the cover reaching its mailbox;"
              " real mail to a client comes on top, hidden on the wire by padded pulls.", "",
              "| client | real sent | sent busy | sent idle | z | cover received busy | cover received idle | z |",
              "|---|---|---|---|---|---|---|---|"]
    for r in checks["rates"]:
        s, g = r["sent"], r["received"]
        lines.append(
            f"| {r['client']} | {r['real_sent']} | {s['busy']['per_minute']:.1f} |"
            f" {s['idle']['per_minute']:.1f} | {s['z']:+.2f} | {g['busy']['per_minute']:.1f} |"
            f" {g['idle']['per_minute']:.1f} | {g['z']:+.2f} |")
    lines += _ack_lines(checks.get("ack_stream"))
    lines += _reply_lines(checks.get("replies"))
    lines += ["", "![rates](rates.png)", "", "![delays](delays.png)", ""]
    summary = os.path.join(folder, "summary.md")
    with open(summary, "w") as f:
        f.write("\n".join(lines))
    return summary


def _ack_lines(stream):
    """The ack stream's section of the summary (docs/surb.md §2.5), or none
    for a trace without acks (the model)."""
    if stream is None:
        return []

    def f(x, fmt):
        return "–" if x is None else format(x, fmt)
    lines = ["", "### The ack stream", "",
             f"{stream['acks']} ack packets. Per gateway: the packets that end at it"
             " (real, loop and drop) and the acks it sends into layer 1, per minute;"
             " the correlation of their counts per second; per kind of packet, the"
             " share acked and the median time from its release to its ack leaving;"
             " the two-sample KS test of the lags of real packets against cover's"
             " (a small p: the ack's timing tells real from cover).", "",
             "| gateway | in / min | acks out / min | correlation | real: acked, lag |"
             " loop: acked, lag | drop: acked, lag | lag real vs cover: KS D, p |",
             "|---|---|---|---|---|---|---|---|"]
    for g in stream["gateways"]:
        corr = next(v for k, v in g.items() if k.startswith("correlation"))
        kinds = " | ".join(
            f"{f(k['acked'], '.3f')}, {f(k['ack lag median s'], '.3f')} s"
            for k in (g["by kind"][name] for name in ("real", "loop", "drop")))
        ks = g["ack lag, real against cover (KS)"]
        lines.append(f"| {g['gateway']} | {g['in']['per_minute']:.1f} |"
                     f" {g['out']['per_minute']:.1f} | {f(corr, '.2f')} | {kinds} |"
                     f" {f(ks['statistic'], '.3f')}, {f(ks['p'], '.3f')} |")
    lines += ["", "Acks arriving at each client's gateway for it, per minute, while it"
              " sends real messages (busy) and while it does not (idle):", "",
              "| client | busy | idle | z |", "|---|---|---|---|"]
    for a in stream["arrivals"]:
        lines.append(f"| {a['client']} | {a['busy']['per_minute']:.1f} |"
                     f" {a['idle']['per_minute']:.1f} | {a['z']:+.2f} |")
    return lines


def _reply_lines(result):
    """The anonymous replies' section of the summary (nymtx.measure.replies),
    or none for a run without them."""
    if result is None:
        return []

    def f(x, fmt):
        return "–" if x is None else format(x, fmt)

    def rate(r):
        return (f"{f(r['per_minute'], '.1f')} ({f(r['ci95'] and r['ci95'][0], '.1f')} to"
                f" {f(r['ci95'] and r['ci95'][1], '.1f')}, {r['windows']} windows)")
    lines = ["", "### Anonymous replies", "",
             f"{result['replies']} replies. **The builder's gateway counting**: per window,"
             " the SURB deliveries for its client (acks and replies: it tells them from"
             " forward packets, docs/surb.md §1.7) minus its client's sends one round trip"
             " earlier, per minute, in windows inside the phases whose messages were"
             " answered and in windows touching none (95% intervals over the windows);"
             " z of the difference; its correlation with the true replies per window.", "",
             "| builder | window | with replies: deliveries − sends | true replies |"
             " without: deliveries − sends | z | correlation | estimated / true replies |",
             "|---|---|---|---|---|---|---|---|"]
    for b in result["builders"]:
        w, wo = b["with replies"], b["without replies"]
        lines.append(
            f"| {b['client']} | {b['window s']:g} s | {rate(w['deliveries minus sends'])} |"
            f" {f(w['true replies']['per_minute'], '.1f')} |"
            f" {rate(wo['deliveries minus sends'])} |"
            f" {f(b['z, deliveries minus sends, with against without'], '+.2f')} |"
            f" {f(b['correlation with the true replies per window'], '.2f')} |"
            f" {b['estimated replies (sum of the differences)']} /"
            f" {b['true replies (in the same windows)']} |")
    r = result["reply or ack"]
    lines += ["", "**Reply or ack, at the builder's gateway, by timing** (a delivery no send"
              " of its client explains, one round trip earlier, is taken for a reply):"
              f" {r['deliveries']} deliveries, {r['replies']} replies (base rate"
              f" {f(r['base rate'], '.4f')}); AUC {f(r['auc'], '.3f')} (95%"
              f" {f(r['ci95'] and r['ci95'][0], '.3f')}–{f(r['ci95'] and r['ci95'][1], '.3f')};"
              " 0.5 is a coin); of the lowest-scored deliveries, as many as there were"
              " replies, a share"
              f" {f(r.get('precision of the lowest-scored, as many as the positives'), '.3f')}"
              " were replies.", ""]
    u = result.get("sends with no ack")
    if u is not None:
        lines += [f"**Sends with no ack** (the dual: a send of the builder that no delivery"
                  " follows one round trip later is taken for a reply's ack, which comes back"
                  f" as nothing): {u['sends']} sends, {u['reply acks']} acks of replies (base"
                  f" rate {f(u['base rate'], '.4f')}); AUC {f(u['auc'], '.3f')} (95%"
                  f" {f(u['ci95'] and u['ci95'][0], '.3f')}–"
                  f"{f(u['ci95'] and u['ci95'][1], '.3f')}); precision"
                  f" {f(u.get('precision of the lowest-scored, as many as the positives'), '.3f')}.",
                  ""]
    lines += ["**The replier's side**: its packets into layer 1 and the SURB deliveries for it"
              " at its gateway, per minute, in the phases whose messages it answered and in"
              " the others; the sizes of its packets; whether an ack at its gateway is a"
              " reply's (sent on by the builder after its pull), by the same timing score.", "",
              "| replier | replies | sizes | sent replying / not / z |"
              " deliveries replying / not / z | reply's ack by timing: AUC (95%), base rate |",
              "|---|---|---|---|---|---|"]
    for p in result["repliers"]:
        s, d = p["sent"], p["surb deliveries at its gateway"]
        a = p["ack of a reply or of another packet"]
        lines.append(
            f"| {p['client']} | {p['replies sent']} | {p['sizes']} |"
            f" {f(s['replying per minute'], '.1f')} / {f(s['not replying per minute'], '.1f')}"
            f" / {f(s['z'], '+.2f')} | {f(d['replying per minute'], '.1f')} /"
            f" {f(d['not replying per minute'], '.1f')} / {f(d['z'], '+.2f')} |"
            f" {f(a['auc'], '.3f')} ({f(a['ci95'] and a['ci95'][0], '.3f')}–"
            f"{f(a['ci95'] and a['ci95'][1], '.3f')}), {f(a['base rate'], '.4f')} |")
    return lines


#: what a capture cannot give, and why (the report of --pcap names them)
NOT_FROM_A_CAPTURE = {
    "success of every attack (how often it names the true sender)":
        "needs the true sender of each message: only the node keys and the workload give it",
    "which packets are real messages":
        "the exits scored are every packet into a gateway, cover included: the bytes are"
        " encrypted, and the game's recipient is not in the capture",
    "combined (the learned per-recipient profile)":
        "needs the recipient of each message (behind the gateway, inside the encrypted link)",
    "per-hop delays exponential":
        "needs the delay each sender chose at each hop (in the Sphinx headers, under the"
        " node keys)",
    "rates independent of real traffic (busy against idle)":
        "needs to know when each client sends real messages",
    "completeness of the truth (every packet peeled)": "there is no truth in a capture",
}


def plot_observed_rates(view, path, bin_seconds=10.0):
    """Packets each client sends and pulls it makes, per minute (a capture's view)."""
    plt = _pyplot()
    n = view.topology.n_clients
    edges = np.arange(0, view.duration + bin_seconds, bin_seconds)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for c in range(n):
        counts, _ = np.histogram(view.hop_time[view.hop_src == c], edges)
        top.plot(edges[:-1], counts * 60 / bin_seconds, label=view.topology.clients[c])
        pulls, _ = np.histogram(view.pull_time[view.pull_client == c], edges)
        bottom.plot(edges[:-1], pulls * 60 / bin_seconds, label=view.topology.clients[c])
    top.set_ylabel("sent, packets/min")
    bottom.set_ylabel("pull answers/min")
    bottom.set_xlabel("time since the capture's first packet (s)")
    top.legend(fontsize=7, ncol=min(max(n, 1), 6), loc="lower right")
    fig.suptitle("What the capture shows of each client", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_observed(folder, view, settings, scores, checks, meta):
    """The report of a capture (no truth): entropies, the checks a view
    allows, and what cannot be computed. Returns the path of summary.md."""
    os.makedirs(folder, exist_ok=True)
    n = view.topology.n_clients
    figures = {"meta": meta, "settings": {k: getattr(settings, k) for k in (
        "send_gap", "loop_gap", "hop_delay", "fetch_gap", "layers")},
        "attacks": scores, "checks": checks, "not computed": NOT_FROM_A_CAPTURE}
    with open(os.path.join(folder, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    plot_observed_rates(view, os.path.join(folder, "rates.png"))
    plot_entropy_cdf(scores, n, os.path.join(folder, "entropy_cdf.png"))
    lines = [f"# nym-measure: {meta.get('title', 'a capture')}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "title"]
    lines += ["", "## Attacks (no truth: the adversary's own uncertainty)", "",
              "For every packet into a gateway (cover included: a capture does not say which"
              " are messages), the entropy of each attack's distribution over the clients"
              " that sent it.", "",
              "| attack | packets | mean entropy (bits) | of log2 N |", "|---|---|---|---|"]
    for name in ATTACKS:
        s = scores[name]
        if s["mean_entropy_bits"] is None:
            lines.append(f"| {name} | – | not computed | – |")
            continue
        lines.append(f"| {name} | {s['packets']} | {s['mean_entropy_bits']:.2f} of"
                     f" {s['max_entropy_bits']:.2f} |"
                     f" {s['mean_entropy_bits'] / s['max_entropy_bits']:.2f} |")
    lines += ["", "![entropy](entropy_cdf.png)", "", "## The design's promises, as far as a"
              " capture shows them", ""]
    sizes = checks["packet_sizes"]
    lines.append(f"- Packet sizes on the mix links: {sizes['sizes']} over {sizes['packets']}"
                 f" packets ({'one size' if sizes['one_size'] else 'MORE THAN ONE SIZE'}).")
    link = checks["client_gateway_link"]
    lines.append(f"- Client–gateway link, channel messages by size (bytes on the wire): up"
                 f" {link['channel messages up']}, down {link['channel messages down']}"
                 f" ({'one size each way' if link['every frame one size each way (after the handshake)'] else 'MORE THAN ONE SIZE'}).")
    lines += ["", "| exponential? | n | KS D | p |", "|---|---|---|---|"]
    for g in checks["send_gaps"]:
        if g["n"]:
            lines.append(f"| send gaps of {g['client']} | {g['n']} | {g['statistic']:.4f} |"
                         f" {g['p']:.3f} |")
    lines += ["", "## Not computed from a capture", ""]
    lines += [f"- **{k}**: {v}." for k, v in NOT_FROM_A_CAPTURE.items()]
    lines += ["", "![rates](rates.png)", ""]
    summary = os.path.join(folder, "summary.md")
    with open(summary, "w") as f:
        f.write("\n".join(lines))
    return summary
