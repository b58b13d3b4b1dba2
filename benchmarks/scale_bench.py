"""How many clients one machine holds at nym's default rates.

    python benchmarks/scale_bench.py [--clients 10,50,100,200,400,800]
        [--duration 60] [--senders 20] [--interval 5] [--client-processes 1]
        [--quick] [--json]

A local network with one OS process per node (``nym-localnet --processes``:
a directory, one mixnode per layer, one gateway, its registration limits
lifted: see scale_site/sitecustomize.py) and N clients embedded in
``--client-processes`` processes (the clients are split evenly among them),
every client with the client's default settings, so each sends its loop
cover and fetches as a real one does. A sample of ``--senders`` clients
message each other, each at Poisson gaps of mean ``--interval`` seconds,
for ``--duration`` seconds; each message carries its send time (wall
clock: sender and recipient may be in two processes) and is timed from
``send`` to the recipient's ``on_message``.

For each N, in increasing order and on the same network (the clients of
one N are kept for the next): delivered/sent (duplicates counted apart),
median and p95 latency against the model's median (an Exp(sending delay)
wait + four Exp(hop delay) delays + an Exp(fetch delay) wait for the next
pull, the client pulling on a Poisson clock,
by Monte Carlo, from the client's default settings), the CPU share (CPU
seconds per second of the window) and RSS of every process, and packets/s
received by each mixnode (the directory's metrics). An N passes with 0
lost and a median within 10% of the model. The scan stops after an N
whose median is over twice the model or that lost more than 1%.

It reports the largest N that passed, and the busiest process there (the
bottleneck). ``--json`` prints ``max_clients``, ``bottleneck``,
``cpu_us_per_client_s`` (``{"clients": ..., "network": ...}``: CPU
microseconds per client per second, on each side) and ``runs``.
``--quick`` is a run that proves it works: 5 clients, 5 seconds.
"""

import argparse
import json
import math
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the model ---------------------------------------------------------------

def client_defaults():
    """The client's default delays in seconds: sending, per hop, fetch."""
    from nymtx.client.config import DEBUG_DEFAULTS
    return (DEBUG_DEFAULTS["message_sending_average_delay"] / 1000,
            DEBUG_DEFAULTS["average_packet_delay"] / 1000,
            DEBUG_DEFAULTS["fetch_message_delay"] / 1000)


def model_median(sending, hop, fetch, samples=200_000, seed=1):
    rng = random.Random(seed)

    def exp(mean):
        return rng.expovariate(1 / mean) if mean > 0 else 0.0
    # the client pulls on a Poisson clock (mean: the fetch delay), so the
    # wait for the next pull is Exp(fetch) too, as in e2e_bench's model
    values = [exp(sending) + sum(exp(hop) for _ in range(4)) + exp(fetch)
              for _ in range(samples)]
    return statistics.median(values)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- /proc -------------------------------------------------------------------

def proc_cpu(pid):
    """CPU seconds (user + system) of *pid*, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid):
    """Resident bytes of *pid* (0 if gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def self_rss():
    return proc_rss(os.getpid())


def node_processes(parent):
    """{node name: pid} of the ``--processes`` children of *parent*."""
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return {}
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"--node" in args:
            out[args[args.index(b"--node") + 1].decode()] = pid
    return out


# -- the network -------------------------------------------------------------

def free_base_port(first=34100, span=40):
    """A base port with the next *span* ports free (the network's plan)."""
    for base in range(first, 60000, span):
        try:
            socks = []
            for port in range(base, base + 8):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    sys.exit("no free ports for the network")


def start_network(home, base_port):
    network = subprocess.Popen(
        [sys.executable, "-m", "nymtx.localnet", "--processes", "--home", home,
         "--base-port", str(base_port), "--log-level", "warn"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT,
        env=dict(os.environ, NYMTX_BENCH_OPEN_REGISTRATION="1", PYTHONPATH=os.pathsep.join(
            [os.path.join(ROOT, "benchmarks", "scale_site"), ROOT])))
    deadline = time.monotonic() + 120
    for line in network.stdout:
        if line.startswith("{"):
            url = json.loads(line)["directory"]
            break
        if time.monotonic() > deadline:
            break
    else:
        network.wait()
        sys.exit(f"the network did not start (exit status {network.returncode})")
    # keep reading its output so that it never blocks on a full pipe
    import threading
    threading.Thread(target=lambda: [None for _ in network.stdout], daemon=True).start()
    return network, url


def mixnode_rates(url):
    """Packets/s received by each mixnode over the directory's last metrics window."""
    try:
        with urllib.request.urlopen(url + "/api/metrics/mixes", timeout=5) as r:
            entries = json.load(r)
    except OSError:
        return {}
    return {e["pubKey"][:8]: round(e["received"] / e["windowSeconds"], 1) for e in entries}


# -- a client process --------------------------------------------------------

def run_clients(args):
    """The ``--role clients`` child: run clients first..last; see the protocol in main()."""
    from twisted.internet import defer, task
    from twisted.internet.task import deferLater

    from nymtx.client import connect

    ids = [f"c{i}" for i in range(args.first, args.last)]
    work = args.work

    async def body(reactor):
        def sleep(s):
            return deferLater(reactor, max(0.0, s), lambda: None)

        clients = {}
        received = []  # (sender, seq, latency)

        def receiver(message):
            try:
                m = json.loads(message)
            except ValueError:
                return
            if isinstance(m, dict) and "s" in m:
                received.append((m["s"], m["n"], time.time() - m["t"]))

        sem = defer.DeferredSemaphore(8)

        options = json.loads(args.options or "{}")

        async def start(cid):
            for attempt in range(3):
                try:
                    client = await connect(reactor, args.root, cid, args.directory, **options)
                    break
                except Exception as e:  # a directory slow to answer at start-up
                    if attempt == 2:
                        raise
                    print(f"{cid}: {e}; trying again", file=sys.stderr)
                    await sleep(1)
            client.on_message(receiver)
            clients[cid] = client

        await defer.gatherResults([
            sem.run(lambda cid=cid: defer.Deferred.fromCoroutine(start(cid)))
            for cid in ids], consumeErrors=True)
        with open(os.path.join(work, f"addresses-{args.first}.json.tmp"), "w") as f:
            json.dump({cid: clients[cid].full_address for cid in ids}, f)
        os.replace(os.path.join(work, f"addresses-{args.first}.json.tmp"),
                   os.path.join(work, f"addresses-{args.first}.json"))
        go_path = os.path.join(work, "go.json")
        while not os.path.exists(go_path):
            await sleep(0.2)
        with open(go_path) as f:
            go = json.load(f)
        await sleep(go["start"] - time.time())
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        sent = []
        rng = random.Random(args.first)
        recipients = go["recipients"]

        async def sender(cid):
            me = clients[cid].full_address
            others = [a for a in recipients if a != me] or [me]
            seq = 0
            at = go["start"] + rng.expovariate(1 / go["interval"])
            while at < go["end"]:
                await sleep(at - time.time())
                message = json.dumps({"s": cid, "n": seq, "t": time.time()})
                try:
                    await clients[cid].send(rng.choice(others), message.encode())
                except Exception as e:  # a failed send is a lost message, not a crash
                    print(f"send failed: {e}", file=sys.stderr)
                sent.append((cid, seq))
                seq += 1
                at += rng.expovariate(1 / go["interval"])

        senders = [cid for cid in ids if cid in go["senders"]]
        sending = [defer.Deferred.fromCoroutine(sender(cid)) for cid in senders]
        await sleep(go["end"] - time.time())
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        await defer.gatherResults(sending, consumeErrors=True)
        await sleep(go["drain_until"] - time.time())
        result = {"first": args.first, "clients": len(ids), "sent": sent,
                  "received": received, "rss": self_rss(),
                  "cpu": (usage1.ru_utime + usage1.ru_stime
                          - usage0.ru_utime - usage0.ru_stime),
                  "seconds": go["end"] - go["start"]}
        path = os.path.join(work, f"result-{args.first}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(path + ".tmp", path)
        # the figures are written: stop the clients together, and not for ever
        stops = defer.gatherResults([defer.maybeDeferred(c.stop) for c in clients.values()],
                                    consumeErrors=True)
        stops.addTimeout(30, reactor)
        try:
            await stops
        except Exception:
            pass

    task.react(lambda reactor: defer.Deferred.fromCoroutine(body(reactor)))


# -- one N -------------------------------------------------------------------

def run_n(n, args, network, url, home, model):
    work = tempfile.mkdtemp(dir=home)
    k = max(1, min(args.client_processes, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    children = []
    for i in range(k):
        children.append(subprocess.Popen(
            [sys.executable, __file__, "--role", "clients", "--root", home + "/clients",
             "--directory", url, "--first", str(bounds[i]), "--last", str(bounds[i + 1]),
             "--work", work, "--options", json.dumps(args.client_option)],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT)))
    try:
        addresses = {}
        deadline = time.monotonic() + args.start_timeout
        for i in range(k):
            path = os.path.join(work, f"addresses-{bounds[i]}.json")
            while not os.path.exists(path):
                if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                    sys.exit(f"N={n}: the clients did not start")
                time.sleep(0.2)
            with open(path) as f:
                addresses.update(json.load(f))
        senders = [f"c{i}" for i in range(min(args.senders, n))]
        # the gateway lists new clients at its next presence; senders use
        # CLIENT@GATEWAY, so only the links need a moment
        start = time.time() + 3
        end = start + args.duration
        drain = end + args.drain
        go = {"start": start, "end": end, "drain_until": drain, "interval": args.interval,
              "senders": senders, "recipients": [addresses[s] for s in senders]}
        with open(os.path.join(work, "go.json.tmp"), "w") as f:
            json.dump(go, f)
        os.replace(os.path.join(work, "go.json.tmp"), os.path.join(work, "go.json"))
        nodes = node_processes(network.pid)
        time.sleep(max(0, start - time.time()))
        cpu0 = {name: proc_cpu(pid) for name, pid in nodes.items()}
        time.sleep(max(0, end - time.time()))
        cpu1 = {name: proc_cpu(pid) for name, pid in nodes.items()}
        rss = {name: proc_rss(pid) for name, pid in nodes.items()}
        rates = mixnode_rates(url)
        # a child's figures are in once its result file is; its exit may take
        # a while longer (its clients stopping), which is not worth waiting for
        deadline = time.monotonic() + args.drain + 120
        for i, c in enumerate(children):
            path = os.path.join(work, f"result-{bounds[i]}.json")
            while not os.path.exists(path) and c.poll() is None:
                if time.monotonic() > deadline:
                    sys.exit(f"N={n}: a client process wrote no figures")
                time.sleep(0.2)
        for c in children:
            try:
                c.wait(timeout=40)
            except subprocess.TimeoutExpired:
                c.kill()
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    results = []
    for i in range(k):
        with open(os.path.join(work, f"result-{bounds[i]}.json")) as f:
            results.append(json.load(f))
    sent = {tuple(s) for r in results for s in r["sent"]}
    got = {}
    duplicates = 0
    for r in results:
        for s, seq, latency in r["received"]:
            if (s, seq) in got:
                duplicates += 1
            else:
                got[(s, seq)] = latency
    latencies = [got[m] for m in sent if m in got]
    seconds = args.duration
    processes = {f"clients-{i + 1}": {"cpu_share": round(r["cpu"] / seconds, 3),
                                      "rss_mb": round(r["rss"] / 2**20, 1)}
                 for i, r in enumerate(results)}
    for name in nodes:
        if cpu0.get(name) is not None and cpu1.get(name) is not None:
            processes[name] = {"cpu_share": round((cpu1[name] - cpu0[name]) / seconds, 3),
                               "rss_mb": round(rss[name] / 2**20, 1)}
    client_cpu = sum(r["cpu"] for r in results)
    network_cpu = sum((cpu1[m] - cpu0[m]) for m in nodes
                      if cpu0.get(m) is not None and cpu1.get(m) is not None)
    median = statistics.median(latencies) if latencies else float("nan")
    run = {
        "clients": n, "client_processes": k, "sent": len(sent),
        "delivered": len(latencies), "lost": len(sent) - len(latencies),
        "duplicates": duplicates,
        "median_s": round(median, 3),
        "p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "model_median_s": round(model, 3),
        "ratio": round(median / model, 3) if latencies else None,
        "processes": processes,
        "mixnode_packets_per_s": rates,
        "cpu_us_per_client_s": {
            "clients": round(client_cpu / (n * seconds) * 1e6, 1),
            "network": round(network_cpu / (n * seconds) * 1e6, 1)},
    }
    run["passed"] = (run["lost"] == 0 and duplicates == 0 and len(sent) > 0
                     and median <= 1.1 * model)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,50,100,200,400,800",
                        help="the values of N, comma-separated, increasing")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of messaging per N")
    parser.add_argument("--drain", type=float, default=15.0,
                        help="seconds after the last send for messages still on their way")
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="mean seconds between one sender's messages")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--home", help="where the network's and the clients' files go"
                        " (default: a new temporary directory); their sqlite files"
                        " commit with fsync, so the disk under it counts")
    parser.add_argument("--client-option", action="append", default=[], metavar="KEY=MS",
                        help="a client [debug] setting in ms, for a diagnosis (the figures"
                             " then are not at the default rates); may be repeated")
    parser.add_argument("--quick", action="store_true",
                        help="5 clients for 5 seconds: proves it runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--last", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "clients":
        return run_clients(args)
    try:
        args.client_option = {k: int(v) for k, v in
                              (o.split("=", 1) for o in args.client_option)}
    except ValueError:
        parser.error("--client-option takes KEY=MS, MS a whole number")
    if args.quick:
        args.clients, args.duration, args.drain = "5", 5.0, 8.0
        args.senders, args.interval = 5, 1.0
    try:
        ns = [int(x) for x in args.clients.split(",")]
    except ValueError:
        parser.error("--clients takes whole numbers separated by commas")
    if not ns or any(n < 2 for n in ns) or ns != sorted(ns):
        parser.error("--clients: increasing numbers of at least 2")
    if args.client_processes < 1 or args.senders < 2 or not args.duration > 0:
        parser.error("--client-processes >= 1, --senders >= 2, --duration > 0")

    model = model_median(*client_defaults())
    if args.home:
        os.makedirs(args.home, exist_ok=True)
    home = tempfile.mkdtemp(prefix="scale-bench-", dir=args.home)
    network, url = start_network(home + "/net", free_base_port())
    runs = []
    try:
        for n in ns:
            run = run_n(n, args, network, url, home, model)
            runs.append(run)
            if not args.json:
                report(run)
            if (run["lost"] > 0.01 * max(1, run["sent"])
                    or (run["ratio"] or math.inf) > 2):
                break
    finally:
        network.terminate()
        network.wait(timeout=60)
    passed = [r for r in runs if r["passed"]]
    best = passed[-1] if passed else None
    summary = {
        "max_clients": best["clients"] if best else 0,
        "bottleneck": (max(best["processes"].items(), key=lambda kv: kv[1]["cpu_share"])[0]
                       if best else None),
        "cpu_us_per_client_s": best["cpu_us_per_client_s"] if best else None,
        "model_median_s": round(model, 3),
        "runs": runs,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"largest N with 0 lost and a median within 10% of the model:"
              f" {summary['max_clients']} (bottleneck there: {summary['bottleneck']})")


def report(run):
    print(f"N={run['clients']:4d}: delivered {run['delivered']}/{run['sent']}"
          f" (dup {run['duplicates']}), median {run['median_s']} s, p95 {run['p95_s']} s,"
          f" model {run['model_median_s']} s (ratio {run['ratio']})"
          f" {'PASS' if run['passed'] else 'fail'}")
    for name, p in sorted(run["processes"].items()):
        print(f"    {name:12s} cpu {p['cpu_share']:.3f}  rss {p['rss_mb']} MB")
    print(f"    mixnodes received packets/s: {run['mixnode_packets_per_s']}")
    print(f"    cpu µs per client-second: {run['cpu_us_per_client_s']}", flush=True)


if __name__ == "__main__":
    main()
