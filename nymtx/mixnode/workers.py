"""The node's side of its worker processes (``--workers N``, N >= 2).

Measured on 2 cores, two processes run process_packet 1.62x as fast as one
and two threads 0.87x (the GIL): the unwrap moves to child processes
(nymtx.mixnode.worker), and everything with state stays here. Packets are
numbered as they arrive and their results are handed back to the node in
that order, whichever worker finishes first: the replay cache sees packets
in arrival order (a packet and its replay on two connections and two
workers: the first one in wins, as with one process), and packets due at
once leave in the order they came.

Packets seen in one reactor turn go to one worker in one write (a batch),
to the worker with the fewest packets outstanding. A worker that ends is
logged and started again; the packets it held are counted lost, their
places in the order given up so the rest flows on.
"""

import collections
import errno
import fcntl
import os
import sys

from twisted.internet.defer import Deferred, succeed
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

import nymtx
from nymtx.mixnode.worker import MAX_BATCH, MAX_KEYS, ProtocolError, ResultParser, encode_keys
from nymtx.sphinx import PACKET_SIZE

#: A result standing for a packet lost with its worker.
LOST = "lost"
#: Drop reason of packets lost with a worker that ended.
WORKER_LOST = "worker_lost"

#: A worker that ends sooner than this after its start is restarted after a
#: growing wait (one that cannot start must not spin).
_STABLE = 10.0

#: Bytes a worker's pipes hold (Linux's F_SETPIPE_SZ; 1 MiB is the default
#: most an unprivileged process may ask for), and read from its output at a time.
PIPE_SIZE = 1 << 20
READ_SIZE = 1 << 18
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def spawn_worker(reactor, protocol):
    """Starts ``python -m nymtx.mixnode.worker`` with *protocol* on its pipes."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(nymtx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    process = reactor.spawnProcess(protocol, sys.executable,
                                   [sys.executable, "-m", "nymtx.mixnode.worker"], env=env)
    widen_pipes(process)
    return process


def widen_pipes(process):
    """Let *process*'s stdin and stdout pipes hold a batch, and read its output in big pieces.

    A pipe holds 64 KiB, less than one read's batch (~47 packets) or its
    results: the node's write and the worker's answer would each wait on the
    other side in pieces. And Twisted reads a process's output 8 KiB at a
    time (fdesc.readFromFD), about 5 results: each read a reactor turn, a
    flush and a send to every next hop. Measured with --workers 2 in
    benchmarks/mixnode_bench.py, see docs/mixnode.md, "Batches".
    Best effort: on a system without F_SETPIPE_SZ the pipes stay as they are.
    """
    pipes = getattr(process, "pipes", {})
    for fd in (0, 1):
        pipe = pipes.get(fd)
        if pipe is None:
            continue
        try:
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
    reader = pipes.get(1)
    if reader is not None:
        reader.doRead = lambda: _read_into(reader)


def _read_into(reader):
    # fdesc.readFromFD's contract, with a larger read
    try:
        data = os.read(reader.fd, READ_SIZE)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EINTR):
            return None
        return CONNECTION_LOST
    if not data:
        return CONNECTION_DONE
    reader.dataReceived(data)
    return None


class _Batch:
    """Packets sent to a worker in one frame, and their results so far.

    *runs* is ``[(count, token), ...]``: the packets of each submit in order.
    """

    __slots__ = ("count", "runs", "results", "delivered")

    def __init__(self, count, runs):
        self.count = count
        self.runs = runs
        self.results = []
        self.delivered = 0


class _WorkerProtocol(ProcessProtocol):
    """One worker's pipes; the pool owns the logic."""

    def __init__(self, pool, index):
        self.pool = pool
        self.index = index
        self.parser = ResultParser()
        self.outstanding = collections.deque()  # _Batches sent, in order
        self.load = 0  # packets sent and not answered
        self.started_at = pool.reactor.seconds()
        self.ended = False

    def outReceived(self, data):
        try:
            results = self.parser.feed(data)
        except ProtocolError as e:
            self.pool.log.error("mixnode worker {n} wrote a bad frame ({why});"
                                " stopping it", n=self.index, why=str(e))
            self.transport.signalProcess("KILL")
            return
        if len(results) > self.load:
            self.pool.log.error("mixnode worker {n} answered packets it was not sent;"
                                " stopping it", n=self.index)
            self.transport.signalProcess("KILL")
            return
        if results:
            self.pool._results(self, results)

    def errReceived(self, data):
        for line in data.decode("utf-8", "replace").splitlines():
            self.pool.log.warn("mixnode worker {n}: {line}", n=self.index, line=line)

    def processEnded(self, reason):
        self.ended = True
        self.pool._ended(self, reason)


class WorkerPool:
    """*count* worker processes unwrapping with *private_key*.

    ``submit(packets, token)`` queues packets (one, or several laid end to
    end); ``deliver(runs)`` is called with ``[(token, [result, ...]), ...]``
    in submission order, result as :class:`nymtx.mixnode.worker.ResultParser`
    gives it or LOST, token what submit was given with those packets.
    *spawn(reactor, protocol)* starts one worker (tests give a fake one);
    ``backlog`` is how many packets are submitted and not yet delivered.
    """

    log = Logger()

    def __init__(self, reactor, private_key, count, deliver, spawn=spawn_worker,
                 batch_size=MAX_BATCH, maximum_restart_wait=30.0):
        if count < 1:
            raise ValueError(f"a worker pool needs at least 1 worker, not {count}")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}, not {batch_size}")
        self.reactor = reactor
        self.count = count
        self._key = private_key
        self._deliver = deliver
        self._spawn = spawn
        self.batch_size = batch_size
        self.maximum_restart_wait = maximum_restart_wait
        self.workers = [None] * count
        self.restarts = 0
        self.lost = 0
        self._waits = [0.0] * count
        self._restart_calls = {}
        self._pending = collections.deque()  # (packets, count, token) not yet sent
        self._pending_count = 0
        self._flush_call = None
        self._batches = collections.deque()  # sent or given up, not yet delivered
        self._submitted = 0
        self._delivered = 0
        self._stopping = False
        self._stopped = None
        # rotating keys (set_keys): slot -> public key, and the frame that
        # tells a worker the keys (sent to each, and to each one started)
        self._slots = {0: None}
        self._keys_frame = None
        self._next_slot = 1

    def set_keys(self, keys):
        """The workers try *keys*, ``[(public, private), ...]``, in that
        order from now on (a keyring's keys: added, retired, or the one in
        use changed). A key keeps its slot while it is held; a new key
        takes the next free one after the last given, so a slot is reused
        only after the other 15 (results in flight name a slot)."""
        held = {public: slot for slot, public in self._slots.items() if public is not None}
        slots = {}
        for public, _ in keys:
            slot = held.get(public)
            if slot is None:
                free = [n for n in range(MAX_KEYS)
                        if n not in held.values() and n not in slots.values()]
                if not free:
                    raise ValueError(f"workers hold at most {MAX_KEYS} keys")
                slot = min(free, key=lambda n: (n - self._next_slot) % MAX_KEYS)
                self._next_slot = (slot + 1) % MAX_KEYS
            slots[public] = slot
        self._slots = {slot: public for public, slot in slots.items()}
        self._keys_frame = encode_keys([(slots[public], private) for public, private in keys])
        for worker in self.workers:
            if worker is not None and not worker.ended:
                worker.transport.write(self._keys_frame)

    def slot_key(self, slot):
        """The public key a result's slot names (None: the pool's one key)."""
        return self._slots.get(slot)

    @property
    def backlog(self):
        return self._submitted - self._delivered

    def start(self):
        self._stopping = False
        for i in range(self.count):
            if self.workers[i] is None and i not in self._restart_calls:
                self._start(i)

    def _start(self, index):
        self._restart_calls.pop(index, None)
        protocol = _WorkerProtocol(self, index)
        try:
            self._spawn(self.reactor, protocol)
        except Exception as e:  # out of processes or descriptors: try again later
            wait = min(self.maximum_restart_wait, max(0.1, self._waits[index] * 2))
            self._waits[index] = wait
            self.log.error("mixnode worker {n} could not start ({why}); trying again in"
                           " {wait:g} s", n=index, why=str(e), wait=wait)
            self._restart_calls[index] = self.reactor.callLater(wait, self._restart, index)
            return
        self.workers[index] = protocol
        protocol.transport.write(self._key)
        if self._keys_frame is not None:
            protocol.transport.write(self._keys_frame)

    def submit(self, packets, token=None):
        """Queue *packets*: one packet, or whole packets laid end to end."""
        count = len(packets) // PACKET_SIZE
        if count * PACKET_SIZE != len(packets) or not count:
            raise ValueError(f"{len(packets)} bytes are not whole packets")
        self._submitted += count
        self._pending.append((packets, count, token))
        self._pending_count += count
        if self._pending_count >= self.batch_size:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _take(self, limit):
        """Up to *limit* pending packets: (their batch frame, count, runs)."""
        pending = self._pending
        parts, runs, count = [b""], [], 0
        while pending and count < limit:
            packets, n, token = pending[0]
            if count + n > limit:
                # the rest of this submit goes in the next batch
                take = limit - count
                cut = take * PACKET_SIZE
                pending[0] = (packets[cut:], n - take, token)
                packets, n = packets[:cut], take
            else:
                pending.popleft()
            parts.append(packets)
            runs.append((n, token))
            count += n
        self._pending_count -= count
        parts[0] = count.to_bytes(4, "big")  # the frame: docs/mixnode.md
        return b"".join(parts), count, runs

    def _flush(self):
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._pending:
            return
        alive = [w for w in self.workers if w is not None and not w.ended]
        if not alive:
            return  # sent when a worker is back (see _start's callers)
        while self._pending:
            frame, count, runs = self._take(self.batch_size)
            worker = min(alive, key=lambda w: w.load)
            batch = _Batch(count, runs)
            self._batches.append(batch)
            worker.outstanding.append(batch)
            worker.load += count
            worker.transport.write(frame)

    def _results(self, worker, results):
        outstanding = worker.outstanding
        worker.load -= len(results)
        while results:
            batch = outstanding[0]
            wanted = batch.count - len(batch.results)
            if len(results) < wanted:
                batch.results.extend(results)
                break
            batch.results.extend(results[:wanted] if len(results) > wanted else results)
            results = results[wanted:]
            outstanding.popleft()
        self._release()

    def _release(self):
        batches = self._batches
        ready = []
        while batches:
            batch = batches[0]
            results = batch.results
            start = batch.delivered
            if start < len(results):
                _runs_of(batch, start, len(results), ready)
                self._delivered += len(results) - start
                batch.delivered = len(results)
            if batch.delivered < batch.count:
                break
            batches.popleft()
        if ready:
            self._deliver(ready)

    def _give_up(self, batches):
        lost = 0
        for batch in batches:
            missing = batch.count - len(batch.results)
            batch.results.extend([LOST] * missing)
            lost += missing
        return lost

    def _ended(self, worker, reason):
        index = worker.index
        if self.workers[index] is worker:
            self.workers[index] = None
        lost = self._give_up(worker.outstanding)
        worker.outstanding.clear()
        worker.load = 0
        self.lost += lost
        if self._stopping:
            self._release()
            if self._stopped is not None and all(w is None for w in self.workers):
                stopped, self._stopped = self._stopped, None
                stopped.callback(None)
            return
        lived = self.reactor.seconds() - worker.started_at
        wait = 0.0 if lived >= _STABLE else min(
            self.maximum_restart_wait, max(0.1, self._waits[index] * 2))
        self._waits[index] = wait
        self.restarts += 1
        self.log.warn("mixnode worker {n} ended ({why}); {lost} packets it held are lost;"
                      " restarting it in {wait:g} s", n=index, why=reason.getErrorMessage(),
                      lost=lost, wait=wait)
        self._restart_calls[index] = self.reactor.callLater(wait, self._restart, index)
        self._release()

    def _restart(self, index):
        self._start(index)
        self._flush()

    def stop(self):
        """Ends every worker; packets not yet delivered are delivered as LOST.

        The Deferred fires once every worker process has ended.
        """
        self._stopping = True
        for call in self._restart_calls.values():
            if call.active():
                call.cancel()
        self._restart_calls.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self._pending:
            _, count, runs = self._take(self._pending_count)
            batch = _Batch(count, runs)
            self._give_up([batch])
            self._batches.append(batch)
        self._release()
        running = [w for w in self.workers if w is not None]
        if not running:
            return succeed(None)
        stopped = self._stopped = Deferred()
        for worker in running:
            # the worker reads EOF and exits; whatever it still held is lost
            worker.transport.closeStdin()
        return stopped

    def kill(self, index):
        """Kill worker *index* (SIGKILL), as a crash would."""
        self.workers[index].transport.signalProcess("KILL")


def _runs_of(batch, start, end, out):
    """Appends to *out* ``(token, results)`` for the results start:end of *batch*."""
    results = batch.results
    first = 0
    for n, token in batch.runs:
        last = first + n
        if last > start and first < end:
            a, b = max(first, start), min(last, end)
            whole = b - a == batch.count
            out.append((token, results if whole else results[a:b]))
        first = last
        if first >= end:
            break


__all__ = ["LOST", "WORKER_LOST", "WorkerPool", "spawn_worker"]
