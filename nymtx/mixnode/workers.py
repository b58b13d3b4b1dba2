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
import os
import sys

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

import nymtx
from nymtx.mixnode.worker import MAX_BATCH, ProtocolError, ResultParser, encode_batch

#: A result standing for a packet lost with its worker.
LOST = "lost"
#: Drop reason of packets lost with a worker that ended.
WORKER_LOST = "worker_lost"

#: A worker that ends sooner than this after its start is restarted after a
#: growing wait (one that cannot start must not spin).
_STABLE = 10.0


def spawn_worker(reactor, protocol):
    """Starts ``python -m nymtx.mixnode.worker`` with *protocol* on its pipes."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(nymtx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return reactor.spawnProcess(protocol, sys.executable,
                                [sys.executable, "-m", "nymtx.mixnode.worker"], env=env)


class _WorkerProtocol(ProcessProtocol):
    """One worker's pipes; the pool owns the logic."""

    def __init__(self, pool, index):
        self.pool = pool
        self.index = index
        self.parser = ResultParser()
        self.outstanding = collections.deque()  # seqs, in the order sent
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
        if len(results) > len(self.outstanding):
            self.pool.log.error("mixnode worker {n} answered packets it was not sent;"
                                " stopping it", n=self.index)
            self.transport.signalProcess("KILL")
            return
        self.pool._results(self, results)

    def errReceived(self, data):
        for line in data.decode("utf-8", "replace").splitlines():
            self.pool.log.warn("mixnode worker {n}: {line}", n=self.index, line=line)

    def processEnded(self, reason):
        self.ended = True
        self.pool._ended(self, reason)


class WorkerPool:
    """*count* worker processes unwrapping with *private_key*.

    ``submit(packet)`` queues a packet; ``deliver(items)`` is called with
    ``[(token, result), ...]`` in submission order, result as
    :class:`nymtx.mixnode.worker.ResultParser` gives it or LOST, token what
    submit was given. *spawn(reactor, protocol)* starts one worker (tests
    give a fake one); ``backlog`` is how many packets are submitted and not
    yet delivered.
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
        self._pending = []        # (seq, packet) not yet sent to a worker
        self._flush_call = None
        self._next_seq = 0        # the next packet's number
        self._next_out = 0        # the next number to deliver
        self._done = {}           # seq -> result, waiting for earlier ones
        self._tokens = {}         # seq -> token
        self._stopping = False
        self._stopped = None

    @property
    def backlog(self):
        return self._next_seq - self._next_out

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

    def submit(self, packet, token=None):
        seq = self._next_seq
        self._next_seq = seq + 1
        self._tokens[seq] = token
        pending = self._pending
        pending.append((seq, packet))
        if len(pending) >= self.batch_size:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

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
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start:start + self.batch_size]
            worker = min(alive, key=lambda w: len(w.outstanding))
            worker.outstanding.extend(seq for seq, _ in batch)
            worker.transport.write(encode_batch([p for _, p in batch]))

    def _results(self, worker, results):
        done = self._done
        outstanding = worker.outstanding
        for result in results:
            done[outstanding.popleft()] = result
        self._release()

    def _release(self):
        done = self._done
        tokens = self._tokens
        seq = self._next_out
        ready = []
        while seq in done:
            ready.append((tokens.pop(seq), done.pop(seq)))
            seq += 1
        self._next_out = seq
        if ready:
            self._deliver(ready)

    def _ended(self, worker, reason):
        index = worker.index
        if self.workers[index] is worker:
            self.workers[index] = None
        lost = len(worker.outstanding)
        for seq in worker.outstanding:
            self._done[seq] = LOST
        worker.outstanding.clear()
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
        pending, self._pending = self._pending, []
        for seq, _ in pending:
            self._done[seq] = LOST
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


__all__ = ["LOST", "WORKER_LOST", "WorkerPool", "spawn_worker"]
