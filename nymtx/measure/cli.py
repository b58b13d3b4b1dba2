"""``nym-measure``: run a workload, tap the links, score the attacks, write a report."""

import json
import math
import os
import sys
import time

from twisted.python import usage

try:
    import numpy as np
    from nymtx.measure import attacks, checks, report, sim
except ImportError as e:   # numpy or matplotlib missing: say how to get them
    _missing = e
    attacks = checks = report = sim = np = None
else:
    _missing = None


class WorkloadError(ValueError):
    """A workload file that cannot be used; the message says where and why."""


def _whole(value, what):
    """*value* as an int, refusing bools and non-integral numbers (JSON's 5.5)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value == int(value))):
        raise WorkloadError(f"{what} must be a whole number, not {value!r}")
    return int(value)


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkloadError(f"{what} must be a number, not {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise WorkloadError(f"{what} is too large") from None
    if not math.isfinite(value):
        raise WorkloadError(f"{what} must be finite, not {value!r}")
    return value


def _conversation(c, where, clients):
    if not isinstance(c, dict):
        raise WorkloadError(f"{where}: a conversation is an object, not {type(c).__name__}")
    pattern = c.get("pattern", "poisson")
    if pattern not in ("poisson", "flood"):
        raise WorkloadError(f"{where}: pattern must be 'poisson' or 'flood', not {pattern!r}")
    for key in ("sender", "recipient"):
        if key not in c:
            raise WorkloadError(f"{where}: no {key!r}")
    sender = _whole(c["sender"], f"{where}.sender")
    recipient = _whole(c["recipient"], f"{where}.recipient")
    rate = _number(c.get("rate", 0.0), f"{where}.rate")
    if not (0 <= sender < clients and 0 <= recipient < clients):
        raise WorkloadError(f"{where}: clients are numbered 0..{clients - 1}")
    if pattern == "poisson" and not rate > 0:
        raise WorkloadError(f"{where}: rate must be a positive number of messages per second")
    anonymous = c.get("anonymous", False)
    if not isinstance(anonymous, bool):
        raise WorkloadError(f"{where}.anonymous must be true or false, not {anonymous!r}")
    surbs = _whole(c.get("reply_surbs", 5), f"{where}.reply_surbs")
    replies = _number(c.get("replies", 0.0), f"{where}.replies")
    if not 0 <= replies <= 1:
        raise WorkloadError(f"{where}.replies is the share of messages answered, 0 to 1,"
                            f" not {replies!r}")
    if not anonymous and ("reply_surbs" in c or replies > 0):
        raise WorkloadError(f"{where}: reply_surbs and replies need \"anonymous\": true"
                            " (a plain send carries no reply blocks)")
    if anonymous and not (1 if replies > 0 else 0) <= surbs <= 500:
        raise WorkloadError(f"{where}.reply_surbs must be 0 to 500 (at least 1 to be"
                            f" answered), not {surbs}")
    if sender == recipient and anonymous:
        raise WorkloadError(f"{where}: an anonymous conversation of a client with itself")
    return sim.Conversation(sender, recipient, rate, pattern, anonymous=anonymous,
                            reply_surbs=surbs, replies=replies)


def load_workload(path, clients):
    """Phases from a JSON workload file (format in docs/anonymity.md)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError, RecursionError) as e:
        raise WorkloadError(f"cannot read workload {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
        raise WorkloadError(f"{path}: expected an object with a list 'phases'")
    phases = []
    for i, p in enumerate(data["phases"]):
        where = f"{path}: phases[{i}]"
        if not isinstance(p, dict):
            raise WorkloadError(f"{where}: a phase is an object, not {type(p).__name__}")
        for key in ("start", "end"):
            if key not in p:
                raise WorkloadError(f"{where}: no {key!r}")
        start, end = _number(p["start"], f"{where}.start"), _number(p["end"], f"{where}.end")
        label = p.get("label", f"phase {i}")
        if not isinstance(label, str):
            raise WorkloadError(f"{where}.label must be a string, not {label!r}")
        conversations = p.get("conversations", [])
        if not isinstance(conversations, list):
            raise WorkloadError(f"{where}.conversations must be a list")
        convs = [_conversation(c, f"{where}.conversations[{j}]", clients)
                 for j, c in enumerate(conversations)]
        if not 0 <= start < end:
            raise WorkloadError(f"{where}: needs 0 <= start < end")
        phases.append(sim.Phase(start, end, label, tuple(convs)))
    if not phases:
        raise WorkloadError(f"{path}: no phases")
    return phases


def workload(name, clients, minutes):
    """The phases of ``--workload NAME``: a file, or else a preset by that
    name (:data:`nymtx.measure.sim.PRESETS`)."""
    if not os.path.exists(name) and name in sim.PRESETS:
        return sim.PRESETS[name](clients, minutes)
    return load_workload(name, clients)


class Options(usage.Options):
    synopsis = "nym-measure [options]"
    longdesc = ("Runs a workload on a real local nymtx network in this process (with"
                " --processes, one process per node; with --simulate, on a model of it),"
                " records what a global passive adversary sees and the truth apart, scores"
                " a suite of attacks against the truth and writes a report folder; or, with"
                " --pcap, reads a capture of a real deployment as the adversary's view"
                " (docs/anonymity.md).")
    optParameters = [
        ["clients", None, 5, "number of clients", int],
        ["minutes", None, 10.0, "length of the workload", float],
        ["out", "o", "nym-measure-report", "folder for the report"],
        ["seed", None, 0, "random seed", int],
        ["workload", None, None, "a JSON workload file, or a preset: default (idle,"
                                 " conversations, a flood, bursts, idle) or replies"
                                 " (anonymous conversations, unanswered then answered)"],
        ["cover", None, None, "the model's cover design: loopix (the default) or legacy"
                              " (the previous release, to show its weakness); a real"
                              " network's is its code's"],
        ["mixnodes-per-layer", None, 1, "mixnodes in each layer", int],
        ["gateways", None, 1, "gateways", int],
        ["send-gap", None, 0.5, "mean gap of the sending stream, s", float],
        ["loop-gap", None, 1.0, "mean gap of the loop cover stream, s", float],
        ["hop-delay", None, 0.2, "mean delay at each hop, s", float],
        ["fetch-gap", None, 1.0, "mean gap between pulls, s", float],
        ["pcap", None, None, "read a capture (pcap or pcapng) of a real deployment instead of"
                             " running a network; needs --nodes (docs/anonymity.md)"],
        ["nodes", None, None, "with --pcap: the public topology (the directory's document),"
                              " which address is which node"],
        ["compare", None, 0, "after a real run, run the model with the settings it showed"
                             " for this many seeds and compare (docs/anonymity.md)", int],
    ]
    optFlags = [["network", None, "measure a real local network, every node and client"
                                  " in this process (the default)"],
                ["simulate", None, "measure the model of the protocol instead"],
                ["processes", None, "with the real network: one OS process per node (as"
                                    " nym-localnet --processes), each tapped inside, its"
                                    " records brought back from a file"],
                ["json", None, "print the attack scores as JSON"],
                ["save-trace", None, "also write the trace's arrays (the view and the truth)"
                                     " to trace.npz in the report folder"]]

    def postOptions(self):
        if self["clients"] < 2:
            raise usage.UsageError("--clients must be at least 2")
        if not (math.isfinite(self["minutes"]) and self["minutes"] > 0):
            raise usage.UsageError("--minutes must be a positive number")
        if self["network"] and self["simulate"]:
            raise usage.UsageError("--network and --simulate exclude each other")
        self.mode = "simulated" if self["simulate"] else "network"
        if self["processes"] and self["simulate"]:
            raise usage.UsageError("--processes runs the real network's nodes: not with"
                                   " --simulate")
        if self["pcap"] is not None or self["nodes"] is not None:
            if self["pcap"] is None or self["nodes"] is None:
                raise usage.UsageError("--pcap FILE and --nodes TOPOLOGY go together")
            if (self["network"] or self["simulate"] or self["compare"] or self["workload"]
                    or self["processes"]):
                raise usage.UsageError("--pcap reads a capture: not with --network,"
                                       " --simulate, --processes, --compare or --workload")
            self.mode = "pcap"
        if self["compare"] < 0 or (self["compare"] and self.mode != "network"):
            raise usage.UsageError("--compare N (N >= 0 seeds of the model) compares a real"
                                   " network's run with the model")
        if self["cover"] is None:
            self["cover"] = "loopix"
        elif self.mode == "network":
            raise usage.UsageError("--cover chooses the model's design: a real network's"
                                   " cover is its code's (add --simulate)")
        if self["cover"] not in ("loopix", "legacy"):
            raise usage.UsageError("--cover must be loopix or legacy")
        try:
            self.settings = sim.Settings(
                clients=self["clients"], mixnodes_per_layer=self["mixnodes-per-layer"],
                gateways=self["gateways"], send_gap=self["send-gap"],
                loop_gap=self["loop-gap"], hop_delay=self["hop-delay"],
                fetch_gap=self["fetch-gap"], cover=self["cover"],
                pulls="grid" if self["cover"] == "legacy" else "poisson")
        except ValueError as e:
            raise usage.UsageError(str(e))


def measure(settings, phases, duration, seed):
    """Trace, scores and checks of one simulated run."""
    trace = sim.simulate(settings, phases, duration, seed=seed)
    view = trace.view()
    posteriors = attacks.run_all(view, settings, trace.target_recipients())
    truth = trace.target_senders()
    scores = {name: attacks.score(p, truth) for name, p in posteriors.items()}
    return trace, scores, checks.run_all(trace, settings)


def measure_network(settings, phases, duration, seed, err, processes=False):
    """Trace, scores, checks and problems of one run of the real network.

    Runs the reactor until the capture is done (so, once per process)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from nymtx.measure import network
    outcome = []

    def run():
        d = Deferred.fromCoroutine(network.capture(
            reactor, settings, phases, duration, seed=seed, timing=network.QUICK_TIMING,
            processes=processes,
            log=lambda line: print(f"nym-measure: {line}", file=err, flush=True)))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(run)
    reactor.run()
    if not outcome:
        raise RuntimeError("the reactor stopped before the measurement ended")
    if isinstance(outcome[0], Failure):
        raise RuntimeError(f"the network measurement failed:"
                           f" {type(outcome[0].value).__name__}: {outcome[0].getErrorMessage()}")
    cap = outcome[0]
    # who listens where, for reading a capture of this run (--pcap --nodes)
    nodes = network.nodes_document(cap)
    try:
        trace, problems, stats = network.to_trace(cap)
    finally:
        network.remove_home(cap)
    settings = network.observed_settings(settings, trace)
    view = trace.view()
    posteriors = attacks.run_all(view, settings, trace.target_recipients())
    truth = trace.target_senders()
    scores = {name: attacks.score(p, truth) for name, p in posteriors.items()}
    result = checks.run_all(trace, settings)
    result["network"] = network.link_checks(cap, trace)
    return trace, settings, scores, result, problems, stats, nodes


def measure_pcap(settings, path, nodes_path):
    """View, scores (entropy only: no truth) and checks of a capture."""
    import attrs

    from nymtx.measure import pcap
    observed = pcap.read(path, nodes_path)
    view = observed.view
    n = view.topology.n_clients
    if n < 2:
        raise ValueError(f"{path}: the capture shows {n} client(s) by their addresses; the"
                         " attacks need at least 2 (is the nodes file the capture's network?)")
    settings = attrs.evolve(settings, clients=n, mixnodes_per_layer=1,
                            gateways=len(view.topology.gateways))
    posteriors = {
        "timing": attacks.timing(view, settings.hop_delay, settings.layers),
        "tracing": attacks.tracing(view),
        "deficit": attacks.deficit(view, settings.hop_delay, settings.fetch_gap,
                                   hops=settings.layers + 1)}
    scores = {name: attacks.uncertainty(posteriors.get(name), n) for name in attacks.ATTACKS}
    merged = 1.0 / (1.0 / settings.send_gap + 1.0 / settings.loop_gap)
    gaps = []
    for c in range(n):
        mine = view.hop_time[view.hop_src == c]
        gaps.append(dict(checks.ks_exponential(np.diff(mine), merged),
                         client=view.topology.clients[c], mean=merged))
    sizes = np.unique(view.hop_size)
    # the reader cuts every mix link into 1372-byte packets: what would show
    # another size is a stream that does not end on a packet boundary
    ragged = observed.stats.get("streams ending inside a packet", 0)
    result = {"packet_sizes": {"sizes": [int(x) for x in sizes],
                               "one_size": len(sizes) <= 1 and not ragged,
                               "streams ending inside a packet": ragged,
                               "packets": int(len(view.hop_size))},
              "send_gaps": gaps, "client_gateway_link": observed.link,
              "gateway_link": {"pulls": int(len(view.pull_time)),
                               "counts_visible": int(np.sum(view.pull_count >= 0)),
                               "shows_only_timing": not bool(np.any(view.pull_count >= 0))}}
    return observed, settings, scores, result


def _save_trace(folder, trace):

    import attrs
    import numpy as np
    arrays = {k: v for k, v in attrs.asdict(trace, recurse=False).items()
              if isinstance(v, np.ndarray)}
    np.savez_compressed(os.path.join(folder, "trace.npz"), **arrays)


def _add_to_report(folder, comparison, lines):
    path = os.path.join(folder, "figures.json")
    with open(path) as f:
        figures = json.load(f)
    figures["comparison"] = comparison
    with open(path, "w") as f:
        json.dump(figures, f, indent=1)
    with open(os.path.join(folder, "summary.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


def _main_pcap(options, started, out, err):
    from nymtx.measure.pcap import PcapError
    try:
        observed, settings, scores, result = measure_pcap(
            options.settings, options["pcap"], options["nodes"])
        view = observed.view
        problems = observed.problems
        meta = {"title": f"a capture, {options['pcap']}", "mode": "pcap",
                "clients": view.topology.n_clients, "seconds captured": round(view.duration, 1),
                **observed.stats,
                "problems (what the reader could not make sense of)":
                    "; ".join(problems[:20]) or "none",
                "seconds to compute": round(time.monotonic() - started, 1)}
        summary = report.write_observed(options["out"], view, settings, scores, result, meta)
    except (PcapError, OSError, ValueError) as e:
        print(f"nym-measure: {e}", file=err)
        return 1
    if problems:
        print(f"nym-measure: {len(problems)} problems reading the capture (listed in"
              f" {summary}): " + "; ".join(problems[:5]), file=err)
    if options["json"]:
        print(json.dumps({k: {f: v for f, v in s.items() if f != "entropy_bits"}
                          for k, s in scores.items()}, indent=1), file=out)
    else:
        print(f"report: {summary}", file=out)
        for name in attacks.ATTACKS:
            s = scores[name]
            if s["mean_entropy_bits"] is None:
                print(f"  {name:9s} not computed from a capture ({s['why']})", file=out)
            else:
                print(f"  {name:9s} sender entropy {s['mean_entropy_bits']:.2f} of"
                      f" {s['max_entropy_bits']:.2f} bits over {s['packets']} packets into"
                      " gateways (success: not computed, no truth)", file=out)
    return 1 if problems else 0


def main(argv=None, out=sys.stdout, err=sys.stderr):
    if _missing is not None:
        print(f"nym-measure: {_missing}; it needs the measure extra:"
              " pip install 'nymtx[measure]'", file=err)
        return 1
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"nym-measure: {e}\n{options}", file=err)
        return 2
    duration = options["minutes"] * 60.0
    try:
        if options["workload"]:
            phases = workload(options["workload"], options["clients"], options["minutes"])
            duration = max(duration, max(p.end for p in phases))
            if sim.has_anonymous(phases) and (options.mode == "simulated"
                                               or options["compare"]):
                raise WorkloadError("the model has no reply blocks, fragments or acks: a"
                                    " workload with anonymous conversations runs on the real"
                                    " network only (not with --simulate or --compare)")
        else:
            phases = sim.default_workload(options["clients"], options["minutes"])
        started = time.monotonic()
        settings, problems, stats = options.settings, [], {}
        if options.mode == "pcap":
            return _main_pcap(options, started, out, err)
        if options.mode == "network":
            trace, settings, scores, result, problems, stats, nodes = measure_network(
                settings, phases, duration, options["seed"], err,
                processes=options["processes"])
            title = (f"{options['clients']} clients, {options['minutes']:g} minutes,"
                     f" the real network{', one process per node' if options['processes'] else ''}"
                     f" ({settings.cover} cover seen)")
        else:
            trace, scores, result = measure(settings, phases, duration, options["seed"])
            title = (f"{options['clients']} clients, {options['minutes']:g} minutes,"
                     f" {options['cover']} cover (model)")
        problems = problems + trace.check_complete()
        meta = {"title": title, "mode": options.mode, "seed": options["seed"],
                **({"processes": "one per node"} if options["processes"] else {}),
                "packets": int(len(trace.packet_sender)),
                "real messages": int(len(trace.message_sender)),
                **stats,
                "seconds to compute": round(time.monotonic() - started, 1)}
        if options.mode == "network":
            meta["problems (packets the truth cannot explain)"] = (
                "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more"
                                            if len(problems) > 20 else "")) or "none"
        summary = report.write(options["out"], trace, settings, scores, result, meta)
        if options.mode == "network":
            with open(os.path.join(options["out"], "nodes.json"), "w") as f:
                json.dump(nodes, f, indent=1)
        if options["save-trace"]:
            _save_trace(options["out"], trace)
        comparison = None
        if options["compare"]:
            from nymtx.measure import compare
            comparison = compare.compare(settings, phases, trace.duration, scores, result,
                                         seeds=options["compare"])
            _add_to_report(options["out"], comparison, compare.markdown(comparison))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"nym-measure: {e}", file=err)
        return 1
    if problems:
        print(f"nym-measure: the truth is incomplete ({len(problems)} problems, listed in"
              f" {summary}): " + "; ".join(problems[:5]), file=err)
    if options["json"]:
        printed = {k: {f: v for f, v in s.items() if f != "entropy_bits"}
                   for k, s in scores.items()}
        if comparison is not None:
            printed["comparison"] = comparison
        if result.get("replies") is not None:
            printed["replies"] = result["replies"]
        print(json.dumps(printed, indent=1), file=out)
    else:
        print(f"report: {summary}", file=out)
        for name in attacks.ATTACKS:
            s = scores[name]
            if s["messages"]:
                print(f"  {name:9s} names the sender of {100 * s['success']:5.1f}% of"
                      f" {s['messages']} messages (chance {100 * s['chance']:.1f}%),"
                      f" entropy {s['mean_entropy_bits']:.2f} of {s['max_entropy_bits']:.2f}"
                      " bits", file=out)
        r = result.get("replies")
        if r is not None:
            a = r["reply or ack"]
            auc = "–" if a["auc"] is None else f"{a['auc']:.3f}"
            print(f"  replies   {r['replies']}; at the builder's gateway, reply or ack by"
                  f" timing: AUC {auc} (base rate of replies"
                  f" {a['base rate'] or 0:.4f}); the rest in the report", file=out)
    return 1 if problems else 0
