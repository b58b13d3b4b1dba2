"""Times to recover from the three fault runs of issue 12.

    python benchmarks/fault_bench.py [--runs 3] [--faults mixnode,gateway,client] [--json]

Each run is tests/faultnet.py's scenario (the one tests/test_faults.py
checks): one OS process per node, two mixnodes per layer, one gateway,
Alice a client process with the TCP API, Bob embedded here; Alice sends
200 numbered messages to Bob and, once Bob holds 20, the fault: a layer-2
mixnode SIGKILLed (``mixnode``), the gateway SIGKILLed and started again
(``gateway``), Alice's client SIGKILLed with messages queued and started
again (``client``); and ``none``, the same run with no fault, timed from the
moment Bob holds 20: the floor the others are read against. The fast timings of tests/faultnet.py (5 ms per hop,
10 ms sending gap, 50 ms pulls, 200 ms topology refresh).

Per run: what arrived (and duplicates), the delivered events, and two
times from the fault (the kill): to the first message Bob received after
it, and to the last delivered event Alice's application heard. The runs
interleave the faults (none mixnode gateway client none ...), and each
figure is given as the median and the range over ``--runs``.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import defer, task  # noqa: E402

from tests.faultnet import FAULTS, NO_FAULT, run_fault  # noqa: E402


def summarise(runs):
    def stat(key):
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            return None
        return {"median": round(statistics.median(values), 2),
                "min": min(values), "max": max(values)}
    return {"runs": len(runs),
            "all_once": sum(1 for r in runs if r["received"] == 200 and not r["duplicates"]),
            "delivered_min": min(r["delivered_events"] for r in runs),
            "to_first_after_fault": stat("to_first_after_fault"),
            "to_last_delivered": stat("to_last_delivered")}


def span(stat):
    if stat is None:
        return "-"
    return f"{stat['median']:.2f} ({stat['min']:.2f}-{stat['max']:.2f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--faults", default=",".join((NO_FAULT,) + FAULTS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    for fault in faults:
        if fault not in (NO_FAULT,) + FAULTS:
            parser.error(f"--faults: {fault!r} is not one of {NO_FAULT}, {', '.join(FAULTS)}")
    results = {fault: [] for fault in faults}

    async def all_runs(reactor):
        for _ in range(args.runs):
            for fault in faults:
                home = tempfile.mkdtemp(prefix=f"fault-{fault}-")
                try:
                    run = await run_fault(reactor, home, fault)
                finally:
                    shutil.rmtree(home, ignore_errors=True)
                figures = run.figures()
                results[fault].append(figures)
                if not args.json:
                    print(json.dumps(figures), flush=True)
        summary = {fault: summarise(runs) for fault, runs in results.items()}
        if args.json:
            print(json.dumps({"summary": summary, "runs": results}))
            return
        print(f"{'fault':8} {'runs':>4} {'all 200 once':>12} {'delivered':>9}"
              f"  {'to first after (s)':>22}  {'to last delivered (s)':>22}")
        for fault, s in summary.items():
            print(f"{fault:8} {s['runs']:>4} {s['all_once']:>12} {s['delivered_min']:>9}"
                  f"  {span(s['to_first_after_fault']):>22}  {span(s['to_last_delivered']):>22}")

    task.react(lambda reactor: defer.Deferred.fromCoroutine(all_runs(reactor)))


if __name__ == "__main__":
    main()
