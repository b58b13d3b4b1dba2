"""The fault runs of reliable delivery (issue 12), shared by tests/test_faults.py
(which checks the counts) and benchmarks/fault_bench.py (which prints the
times to recover).

One OS process per node (ProcessNetwork, two mixnodes per layer, one
gateway), Alice a process of her own (``python -m nymtx.client.cli run``
with the TCP API; the caller is her application, with outcomes opted in),
Bob embedded in the caller. Alice sends COUNT numbered messages to Bob;
once Bob has ~20 of them, the fault:

- ``mixnode``: a layer-2 mixnode is killed with SIGKILL (and stays dead);
- ``gateway``: the gateway (Bob's and Alice's) is killed with SIGKILL and
  started again on the same home;
- ``client``: Alice's process is killed with SIGKILL, with messages queued,
  and started again (her application connects again and subscribes).

The run ends when Bob holds every message and Alice's application has
heard an outcome for every one, or after a generous bound.
"""

import collections
import json
import os
import sys

import attrs
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver

from nymtx.client.connect import connect
from nymtx.client.embed import init_client
from nymtx.directory.client import DirectoryClient
from nymtx.localnet.model import poll_topology
from nymtx.localnet.processes import ProcessNetwork
from nymtx.localnet.tap import Options
from tests.ports import free_ports

FAULTS = ("mixnode", "gateway", "client")
#: the floor: the same run with no fault (its "fault" is only the moment)
NO_FAULT = "none"
COUNT = 200
#: Bob holds this many messages when the fault comes
FAULT_AFTER = 20

#: fast enough that a run takes seconds, slow enough for two cores
FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=200)
RELIABLE = dict(average_ack_delay=5, ack_wait_addition=500)


def sleep(reactor, seconds):
    return deferLater(reactor, seconds, lambda: None)


class _Alice(protocol.ProcessProtocol):
    """Alice's client process: its output kept (shown if the run fails)."""

    def __init__(self, output):
        self.output = output
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode
                            if reason.value.exitCode is not None
                            else f"signal {reason.value.signal}")


class _Application(LineReceiver):
    """Alice's application on her TCP API: JSON lines in, events counted."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 22

    def __init__(self, run):
        self.run = run
        self.answers = []

    def lineReceived(self, line):
        event = json.loads(line)
        kind = event.get("type")
        if kind in ("delivered", "failed"):
            self.run.outcome(event["id"], kind)
        elif kind == "send":
            self.run.answered += 1
        elif kind == "error":
            self.run.errors.append(event.get("message"))

    def request(self, obj):
        self.sendLine(json.dumps(obj).encode())


@attrs.define(eq=False)
class FaultRun:
    """What one run saw; times are the reactor's seconds."""

    fault: str
    count: int = COUNT
    received: collections.Counter = attrs.field(factory=collections.Counter)
    outcomes: dict = attrs.field(factory=dict)  # id -> [outcome, ...]
    answered: int = 0
    errors: list = attrs.field(factory=list)
    fault_at: float = None
    received_at_fault: int = None
    delivered_at_fault: int = None  # delivered events heard before the fault
    first_after: float = None  # Bob's first message after the fault
    last_outcome_at: float = None
    started_at: float = None
    ended_at: float = None
    alice_output: list = attrs.field(factory=list)
    clock: object = None

    def outcome(self, message_id, kind):
        self.outcomes.setdefault(message_id, []).append(kind)
        self.last_outcome_at = self.clock.seconds()

    def got(self, texts):
        now = self.clock.seconds()
        for text in texts:
            self.received[text] += 1
            if self.fault_at is not None and self.first_after is None:
                self.first_after = now

    @property
    def delivered(self):
        return sum(1 for kinds in self.outcomes.values() if "delivered" in kinds)

    @property
    def complete(self):
        return len(self.received) >= self.count and len(self.outcomes) >= self.count

    def figures(self):
        return {"fault": self.fault,
                "received": len(self.received),
                "duplicates": sum(n - 1 for n in self.received.values()),
                "delivered_events": self.delivered,
                "failed_events": sum(1 for k in self.outcomes.values() if "failed" in k),
                "to_first_after_fault": _span(self.fault_at, self.first_after),
                "to_last_delivered": _span(self.fault_at, self.last_outcome_at),
                "run": _span(self.started_at, self.ended_at)}


def _span(start, end):
    return None if start is None or end is None else round(end - start, 2)


def text(i):
    return f"message {i:03d}"


async def _answers(reactor, port):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2)
    try:
        connected = await connectProtocol(endpoint, protocol.Protocol())
    except ConnectError:
        return False
    connected.transport.loseConnection()
    return True


async def run_fault(reactor, home, fault, count=COUNT, bound=120.0, cleanups=None):
    """Run one fault scenario under *home*; returns its FaultRun.

    *cleanups* (a list) gets the callables that tear everything down, in
    the order to call them (a test adds them with addCleanup); without it,
    they are called here before returning.
    """
    if fault not in FAULTS + (NO_FAULT,):
        raise ValueError(f"fault is one of {FAULTS + (NO_FAULT,)}, not {fault!r}")
    own = cleanups is None
    cleanups = [] if own else cleanups
    run = FaultRun(fault, count, clock=reactor)
    try:
        await _scenario(reactor, home, run, bound, cleanups)
    finally:
        if own:
            for cleanup in reversed(cleanups):
                try:
                    await defer.maybeDeferred(cleanup)
                except Exception:
                    pass
    return run


async def _scenario(reactor, home, run, bound, cleanups):
    os.makedirs(home, exist_ok=True)
    options = Options()
    # 1 + 3*2 node ports and the gateway's two; Alice's TCP API after them
    base = free_ports(3 * 2 + 5)
    options.parseOptions(["--processes", "--home", os.path.join(home, "net"),
                          "--base-port", str(base), "--mixnodes-per-layer", "2"])
    network = ProcessNetwork(reactor, options)
    cleanups.append(network.stopService)
    await network.start()

    root = os.path.join(home, "clients")
    api_port = base + 3 * 2 + 4
    await init_client(reactor, root, "Alice", network.directory_url, socket_type="tcp",
                      port=api_port, **FAST, **RELIABLE)
    bob = await connect(reactor, root, "Bob", network.directory_url, **FAST)
    cleanups.append(bob.stop)
    # the gateway announces its clients with its presence: until the
    # directory lists Bob, Alice would refuse to send to him
    directory = DirectoryClient(network.directory_url, reactor=reactor)
    try:
        await poll_topology(reactor, directory,
                            lambda t: None if bob.core.keys.public_key in set(t.clients())
                            else "Bob is not in the topology yet", 30.0)
    finally:
        await directory.close()

    alice = {}

    async def start_alice():
        process = _Alice(run.alice_output)
        argv = [sys.executable, "-m", "nymtx.client.cli", "run", "--id", "Alice",
                "--home", root]
        alice["transport"] = reactor.spawnProcess(process, argv[0], argv, env=os.environ)
        alice["process"] = process
        for _ in range(300):
            if await _answers(reactor, api_port):
                break
            if process.ended.called:
                raise RuntimeError("Alice's client ended before its API listened:\n"
                                   + b"".join(run.alice_output).decode(errors="replace"))
            await sleep(reactor, 0.1)
        app = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", api_port),
                                    _Application(run))
        alice["app"] = app
        app.request({"type": "subscribe", "outcomes": True})
        # her first topology came before the directory listed Bob, maybe:
        # wait for a refresh (topology_refresh_rate) that holds him
        await sleep(reactor, 3 * FAST["topology_refresh_rate"] / 1000)
        return app

    def stop_alice():
        transport = alice.get("transport")
        process = alice.get("process")
        if process is None or process.ended.called:
            return None
        transport.signalProcess("TERM")
        return process.ended
    cleanups.append(stop_alice)

    app = await start_alice()
    run.started_at = reactor.seconds()
    for i in range(run.count):
        app.request({"type": "send", "recipient_address": bob.address,
                     "message": text(i), "id": f"m{i}"})

    deadline = reactor.seconds() + bound
    fault_done = False
    while not run.complete and reactor.seconds() < deadline:
        run.got(m.decode() for m in bob.fetch())
        if not fault_done and len(run.received) >= FAULT_AFTER:
            fault_done = True
            # what Bob's client pulled before the fault is not "after" it
            run.got(m.decode() for m in bob.fetch())
            await _fault(reactor, network, run, alice, start_alice)
        await sleep(reactor, 0.05)
    # a duplicate would come late (a retry of a fragment whose ack was
    # lost): give Bob a few more pulls before counting
    for _ in range(20):
        run.got(m.decode() for m in bob.fetch())
        await sleep(reactor, 0.05)
    run.ended_at = reactor.seconds()


async def _fault(reactor, network, run, alice, start_alice):
    run.received_at_fault = len(run.received)
    run.delivered_at_fault = run.delivered
    if run.fault == NO_FAULT:
        run.fault_at = reactor.seconds()
    elif run.fault == "mixnode":
        run.fault_at = reactor.seconds()
        await network.kill("mix-2-1")
    elif run.fault == "gateway":
        run.fault_at = reactor.seconds()
        await network.kill("gateway-1")
        network.restart("gateway-1")
    else:
        # every message was answered {"type":"send"}: queued, many not yet sent
        for _ in range(100):
            if run.answered >= run.count:
                break
            await sleep(reactor, 0.05)
        run.fault_at = reactor.seconds()
        # the application's connection dies with the process (closing it
        # first would lose the events of acks handled in between)
        alice["transport"].signalProcess("KILL")
        await alice["process"].ended
        await start_alice()
