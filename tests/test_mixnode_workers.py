"""A mixnode's worker processes: the pipe frames, the pool on a Clock, and real workers."""

import fcntl
import io
import os
import random
import signal

from hypothesis import given, strategies as st
from twisted.internet import defer, reactor as global_reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.mixnode import tap, worker
from nymtx.mixnode.config import ConfigError, config_path, init_mixnode, load_config, parse_config
from nymtx.mixnode.node import Mixnode, MixnodeFactory
from nymtx.mixnode.service import MixnodeService
from nymtx.mixnode.workers import PIPE_SIZE, WorkerPool
from nymtx.sphinx import PACKET_SIZE, Hop, ReplayCache, build_packet, process_packet
from nymtx.sphinx.crypto import replay_tag, x25519
from nymtx.testing import FakeLinks
from tests.test_mixnode import ADDRS, KEYS, make_packet


class FakeWorkerProcess:
    """A worker's process transport: what the pool writes is run through
    ``worker.main`` when the test says so (``pump``), in this process."""

    def __init__(self, protocol, pid):
        self.protocol = protocol
        self.pid = pid
        self.written = bytearray()
        self.key = None
        self.stdin_closed = False
        self.signals = []

    def write(self, data):
        self.written += data
        if self.key is None and len(self.written) >= worker.KEY_SIZE:
            self.key = bytes(self.written[:worker.KEY_SIZE])
            del self.written[:worker.KEY_SIZE]

    def pump(self):
        data, self.written = bytes(self.written), bytearray()
        out = io.BytesIO()
        status = worker.main(io.BytesIO(self.key + data), out)
        assert status == 0, status
        self.protocol.childDataReceived(1, out.getvalue())

    def closeStdin(self):
        self.stdin_closed = True
        self.end(0)

    def signalProcess(self, name):
        self.signals.append(name)
        self.end(None, name)

    def end(self, code, signal_name=None):
        self.protocol.processEnded(Failure(ProcessTerminated(code, signal_name)))


class FakeSpawner:
    def __init__(self):
        self.processes = []

    def __call__(self, reactor, protocol):
        process = FakeWorkerProcess(protocol, 1000 + len(self.processes))
        self.processes.append(process)
        protocol.makeConnection(process)
        return process

    def live(self):
        return [p for p in self.processes if not p.protocol.ended]


#: How long the fake workers take to answer (a power of two: exact times).
LAG = 2 ** -10


class FrameTests(SynchronousTestCase):
    def test_forward_result_carries_what_process_packet_gives(self):
        packet = make_packet(delays=[123_456_789, 0, 0, 0])
        frame = worker.process_batch(KEYS[0].private_key, packet, 1)
        hop = process_packet(KEYS[0].private_key, packet)
        tag = replay_tag(x25519(KEYS[0].private_key, packet[:32]))
        # byte by byte as docs/mixnode.md gives it
        self.assertEqual(frame, b"\x00\x00\x00\x01" + b"\x00" + tag + hop.next_address
                         + (123_456_789).to_bytes(8, "big") + hop.packet)
        self.assertEqual(worker.ResultParser().feed(frame),
                         [(worker.FORWARD, tag, hop.next_address, 123_456_789, hop.packet, 0)])

    def test_drops_with_and_without_a_tag(self):
        bad_mac = bytearray(make_packet())
        bad_mac[40] ^= 1
        final = make_packet(hops=[Hop(ADDRS[0].to_bytes(), KEYS[0].public_key)])
        bad_point = bytes(32) + make_packet()[32:]
        frame = worker.process_batch(KEYS[0].private_key,
                                     bytes(bad_mac) + final + bad_point, 3)
        tag = replay_tag(x25519(KEYS[0].private_key, final[:32]))
        self.assertEqual(frame[:4], b"\x00\x00\x00\x03")
        self.assertEqual(frame[4:], bytes((worker.DROP, worker.REASONS.index("HeaderMacError")))
                         + bytes((worker.DROP_TAGGED,)) + tag
                         + bytes((worker.REASONS.index(worker.FINAL_HOP),))
                         + bytes((worker.DROP,
                                  worker.REASONS.index("InvalidGroupElementError"))))
        self.assertEqual(worker.ResultParser().feed(frame), [
            (worker.DROP, None, "HeaderMacError", 0),
            (worker.DROP_TAGGED, tag, worker.FINAL_HOP, 0),
            (worker.DROP, None, "InvalidGroupElementError", 0)])

    def test_batch_frame(self):
        self.assertEqual(worker.encode_batch([b"a" * PACKET_SIZE, b"b" * PACKET_SIZE]),
                         b"\x00\x00\x00\x02" + b"a" * PACKET_SIZE + b"b" * PACKET_SIZE)

    @given(st.lists(st.integers(1, 3000), max_size=20))
    def test_parser_takes_the_frame_in_any_pieces(self, cuts):
        packets = [make_packet(seed=i) for i in range(3)] + [bytes(PACKET_SIZE)]
        frame = worker.process_batch(KEYS[0].private_key, b"".join(packets), 4) * 2
        whole = worker.ResultParser().feed(frame)
        parser, got, pos = worker.ResultParser(), [], 0
        for cut in sorted(cuts):
            got += parser.feed(frame[pos:cut])
            pos = max(pos, min(cut, len(frame)))
        got += parser.feed(frame[pos:])
        self.assertEqual(got, whole)
        self.assertEqual(len(got), 8)

    @given(st.binary(max_size=4000))
    def test_parser_of_any_bytes_raises_only_protocol_error(self, data):
        try:
            worker.ResultParser().feed(data)
        except worker.ProtocolError:
            pass

    def test_worker_stops_on_a_bad_batch_count(self):
        out = io.BytesIO()
        self.assertEqual(worker.main(io.BytesIO(bytes(32) + (1025).to_bytes(4, "big")), out),
                         2)
        self.assertEqual(out.getvalue(), b"")

    def test_key_frame_byte_by_byte(self):
        """The vector in docs/mixnode.md, "Worker processes"."""
        frame = worker.encode_keys([(1, bytes([0xAA]) * 32), (0, bytes([0xBB]) * 32)])
        self.assertEqual(frame.hex(), "00000000" "02" "01" + "aa" * 32 + "00" + "bb" * 32)
        self.assertEqual(worker.decode_keys(2, frame[5:]),
                         [(1, bytes([0xAA]) * 32), (0, bytes([0xBB]) * 32)])
        for keys in ([], [(16, bytes(32))], [(0, bytes(31))]):
            self.assertRaises(ValueError, worker.encode_keys, keys)

    def test_a_worker_tries_each_key_and_names_it(self):
        packet = make_packet()  # for KEYS[0]
        other = KeyPair.generate()
        keys = [(3, other.private_key), (5, KEYS[0].private_key)]
        frame = worker.process_batch(keys, packet, 1)
        hop = process_packet(KEYS[0].private_key, packet)
        tag = replay_tag(x25519(KEYS[0].private_key, packet[:32]))
        self.assertEqual(frame[4], worker.FORWARD | 5 << 4)
        self.assertEqual(worker.ResultParser().feed(frame),
                         [(worker.FORWARD, tag, hop.next_address, 0, hop.packet, 5)])
        # through main: the key frame replaces the start key
        out = io.BytesIO()
        stdin = other.private_key + worker.encode_keys(keys) + worker.encode_batch([packet])
        self.assertEqual(worker.main(io.BytesIO(stdin), out), 0)
        self.assertEqual(out.getvalue(), frame)
        # none of the keys: an untagged HeaderMacError, slot 0
        frame = worker.process_batch([(3, other.private_key)], packet, 1)
        self.assertEqual(worker.ResultParser().feed(frame),
                         [(worker.DROP, None, "HeaderMacError", 0)])

    @given(st.binary(max_size=600))
    def test_a_bad_key_frame_stops_the_worker(self, body):
        out = io.BytesIO()
        stdin = bytes(32) + bytes(4) + body
        status = worker.main(io.BytesIO(stdin), out)
        self.assertIn(status, (0, 2))  # EOF, or a frame it refused, never a crash
        if body and (body[0] == 0 or body[0] > worker.MAX_KEYS):
            self.assertEqual(status, 2)


class PoolTests(SynchronousTestCase):
    """The node with two fake workers: the real pool and worker code, on a Clock."""

    def setUp(self):
        self.clock = Clock()
        self.links = FakeLinks()
        self.spawner = FakeSpawner()
        self.node = Mixnode(self.clock, KEYS[0].private_key, self.links, ReplayCache(1000),
                            max_delay=10.0, workers=2, spawn=self.spawner)
        self.node.start()
        self.messages = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.messages.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.messages.append)

    def send_turn(self, packets):
        for p in packets:
            self.node.handle_packet(p)
        self.clock.advance(0)  # the end of the reactor turn sends the batch

    def test_key_goes_first_to_each_worker(self):
        self.assertEqual([p.key for p in self.spawner.processes],
                         [KEYS[0].private_key] * 2)

    def test_replay_landing_on_another_worker_is_caught(self):
        packet = make_packet()
        self.send_turn([packet])
        self.send_turn([packet])
        first, second = self.spawner.processes
        self.assertTrue(first.written and second.written)  # one each
        second.pump()  # the replay's worker answers first
        self.assertEqual(self.links.packets, [])  # waits for the earlier packet
        first.pump()
        self.assertEqual(len(self.links.packets), 1)
        self.assertEqual(self.node.dropped, {"ReplayError": 1})

    def test_replay_on_another_connection_is_caught(self):
        factory = MixnodeFactory(self.node)
        a, b = factory.buildProtocol(None), factory.buildProtocol(None)
        packet = make_packet()
        a.dataReceived(packet)
        self.clock.advance(0)
        b.dataReceived(packet)
        self.clock.advance(0)
        for p in reversed(self.spawner.processes):
            p.pump()
        self.assertEqual(len(self.links.packets), 1)
        self.assertEqual(self.node.dropped, {"ReplayError": 1})

    def test_order_and_delays_as_with_one_process(self):
        # (a packet leaves no sooner than its result, LAG here: what is due
        # sooner than that leaves with it)
        delays = [0, 300_000_000, 0, 100_000_000, 0, 100_000_000, 0, 2_000_000_000,
                  70_000_000, 0]
        packets = [make_packet(b"m%d" % i, delays=[d, 0, 0, 0], seed=i)
                   for i, d in enumerate(delays)]

        def run(node, clock, links, answer):
            sent = []
            links.send = lambda address, packet: sent.append((clock.seconds(), packet))
            turns = [packets[i:i + 3] for i in range(0, len(packets), 3)]
            for _ in range(40):  # a turn every 125 ms, packets three at a time
                for p in (turns.pop(0) if turns else []):
                    node.handle_packet(p)
                clock.advance(0)
                clock.advance(LAG)
                answer()
                clock.advance(0.125 - LAG)
            return sent

        single_clock = Clock()
        single = Mixnode(single_clock, KEYS[0].private_key, FakeLinks(), ReplayCache(1000))
        expected = run(single, single_clock, single.links, lambda: None)

        def answer():
            # the workers answer a millisecond later, the later batch first
            for p in reversed(self.spawner.processes):
                if p.written:
                    p.pump()
        got = run(self.node, self.clock, self.links, answer)
        self.assertEqual(len(got), len(packets))
        self.assertEqual([p for _, p in got], [p for _, p in expected])
        # each packet left its own delay after its arrival, as with one process,
        # except those with no delay, which leave with their result
        delay_of = {process_packet(KEYS[0].private_key, p).packet: d
                    for p, d in zip(packets, delays)}
        want = [t if delay_of[p] else t + LAG for t, p in expected]
        self.assertEqual([round(t, 9) for t, _ in got], [round(t, 9) for t in want])

    def test_killed_worker_restarted_and_its_packets_counted_lost(self):
        self.send_turn([make_packet(seed=1), make_packet(seed=2)])
        self.send_turn([make_packet(seed=3)])
        first, second = self.spawner.processes
        second.pump()
        self.assertEqual(self.links.packets, [])  # behind the first batch
        self.node.pool.kill(0)
        self.assertEqual(first.signals, ["KILL"])
        # the two it held are lost, and the packet after them flows on
        self.assertEqual(self.node.dropped, {"worker_lost": 2})
        self.assertEqual(len(self.links.packets), 1)
        self.assertEqual(self.node.pool.restarts, 1)
        self.assertTrue(any("mixnode worker {n} ended" in (m.get("log_format") or "")
                            and m.get("n") == 0 and m.get("lost") == 2
                            for m in self.messages))
        # it died young: the restart waits a little
        self.assertEqual(len(self.spawner.processes), 2)
        self.clock.advance(0.1)
        third = self.spawner.processes[2]
        self.assertEqual(third.key, KEYS[0].private_key)
        self.send_turn([make_packet(seed=4)])
        self.send_turn([make_packet(seed=5)])
        for p in self.spawner.live():
            p.pump()
        self.assertEqual(len(third.protocol.outstanding), 0)
        self.assertEqual(len(self.links.packets), 3)

    def test_worker_that_keeps_dying_restarts_ever_later(self):
        waits = []
        for _ in range(4):
            before = len(self.spawner.processes)
            self.node.pool.kill(0)
            [call] = self.clock.getDelayedCalls()
            waits.append(round(call.getTime() - self.clock.seconds(), 3))
            self.clock.advance(waits[-1])
            self.assertEqual(len(self.spawner.processes), before + 1)
        self.assertEqual(waits, [0.1, 0.2, 0.4, 0.8])
        # one that lived long enough is restarted at once
        self.clock.advance(10)
        self.node.pool.kill(0)
        self.assertEqual(len(self.spawner.processes), 6)

    def test_no_worker_alive_keeps_packets_until_one_is_back(self):
        self.node.pool.kill(0)
        self.node.pool.kill(1)
        self.send_turn([make_packet()])
        self.clock.advance(0.1)
        for p in self.spawner.live():
            p.pump()
        self.assertEqual(len(self.links.packets), 1)

    def test_a_worker_writing_garbage_is_killed(self):
        self.send_turn([make_packet()])
        first = self.spawner.processes[0]
        first.protocol.childDataReceived(1, b"\x00\x00\x00\x01\x09")
        self.assertEqual(first.signals, ["KILL"])
        self.assertEqual(self.node.dropped, {"worker_lost": 1})

    def test_a_worker_answering_more_than_it_was_sent_is_killed(self):
        frame = worker.process_batch(KEYS[0].private_key, make_packet(), 1)
        first = self.spawner.processes[0]
        first.protocol.childDataReceived(1, frame)
        self.assertEqual(first.signals, ["KILL"])
        self.assertEqual(self.links.packets, [])

    def test_reading_pauses_while_the_workers_are_behind(self):
        self.node.pause_backlog = 8
        protocol = MixnodeFactory(self.node).buildProtocol(None)
        transport = PausableTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"".join(make_packet(seed=i) for i in range(8)))
        self.assertTrue(transport.paused)
        self.clock.advance(0)
        for p in self.spawner.processes:
            if p.written:
                p.pump()
        self.assertFalse(transport.paused)
        self.assertEqual(len(self.links.packets), 8)

    def test_a_read_goes_to_a_worker_in_one_piece(self):
        protocol = MixnodeFactory(self.node).buildProtocol(None)
        protocol.makeConnection(PausableTransport())
        packets = [make_packet(seed=i) for i in range(3)]
        data = b"".join(packets)
        protocol.dataReceived(data + b"\x00" * 100)
        self.clock.advance(0)
        written = [bytes(p.written) for p in self.spawner.processes if p.written]
        self.assertEqual(written, [b"\x00\x00\x00\x03" + data])
        self.assertEqual(self.node.received, 3)
        for p in self.spawner.processes:
            if p.written:
                p.pump()
        self.assertEqual(len(self.links.packets), 3)

    def test_stop_delivers_what_was_never_sent_as_lost(self):
        self.node.handle_packets(make_packet(seed=1) + make_packet(seed=2))
        self.node.pool.stop()
        self.assertEqual(self.node.pool.backlog, 0)
        self.assertEqual(self.node.dropped, {"worker_lost": 2})

    def test_stop_ends_the_workers(self):
        self.send_turn([make_packet()])
        d = self.node.stop_workers()
        self.assertEqual([p.stdin_closed for p in self.spawner.processes], [True, True])
        self.successResultOf(d)
        self.assertEqual(len(self.spawner.processes), 2)  # none restarted
        self.assertEqual(self.links.packets, [])


class BatchTests(SynchronousTestCase):
    """The pool alone: batches, their order and the tokens of their packets."""

    def setUp(self):
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.delivered = []
        self.pool = WorkerPool(self.clock, KEYS[0].private_key, 2, self.delivered.extend,
                               spawn=self.spawner, batch_size=2)
        self.pool.start()

    def test_a_piece_larger_than_a_batch_is_cut_and_answered_in_order(self):
        packets = [make_packet(seed=i) for i in range(5)]
        self.pool.submit(b"".join(packets[:3]), "a")
        self.pool.submit(packets[3], "b")
        self.pool.submit(packets[4], "c")
        self.clock.advance(0)
        first, second = self.spawner.processes
        # batches of two at most (the first piece goes at once), each to the
        # worker with the fewest packets: a0 a1 | a2, then b c
        size = 4 + 2 * PACKET_SIZE
        self.assertEqual((first.written[:4], len(first.written)), (b"\x00\x00\x00\x02", size))
        self.assertEqual((second.written[:4], second.written[4 + PACKET_SIZE:][:4]),
                         (b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"))
        self.assertEqual(self.pool.backlog, 5)
        second.pump()  # packets 2 and 3 wait for 0 and 1
        self.assertEqual(self.delivered, [])
        first.pump()  # packets 0, 1 and then 4 (its third batch)
        self.assertEqual([(token, len(results)) for token, results in self.delivered],
                         [("a", 2), ("a", 1), ("b", 1), ("c", 1)])
        want = [process_packet(KEYS[0].private_key, p).packet for p in packets]
        self.assertEqual([r[4] for _, results in self.delivered for r in results], want)
        self.assertEqual(self.pool.backlog, 0)

    def test_results_are_delivered_as_they_come_in_order(self):
        packets = [make_packet(seed=i) for i in range(2)]
        self.pool.submit(b"".join(packets), "a")
        self.clock.advance(0)
        [busy] = [p for p in self.spawner.processes if p.written]
        frame = worker.process_batch(KEYS[0].private_key, b"".join(packets), 2)
        cut = 4 + 1 + worker.RECORD_SIZES[worker.FORWARD]
        busy.protocol.childDataReceived(1, frame[:cut])
        self.assertEqual([(t, len(r)) for t, r in self.delivered], [("a", 1)])
        busy.protocol.childDataReceived(1, frame[cut:])
        self.assertEqual([(t, len(r)) for t, r in self.delivered], [("a", 1), ("a", 1)])

    def test_a_submit_of_no_whole_packets_is_refused(self):
        for bad in (b"", b"x" * (PACKET_SIZE + 1)):
            with self.assertRaises(ValueError):
                self.pool.submit(bad)


class PausableTransport:
    disconnecting = False

    def __init__(self):
        self.paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False


class Sink(Protocol):
    def __init__(self, received):
        self.received = received
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while len(self.buffer) >= PACKET_SIZE:
            self.received.append(self.buffer[:PACKET_SIZE])
            self.buffer = self.buffer[PACKET_SIZE:]


class RealWorkersTests(TestCase):
    """A mixnode with two real worker processes on 127.0.0.1."""

    timeout = 60

    @defer.inlineCallbacks
    def test_replays_caught_and_a_killed_worker_restarted(self):
        received = []
        factory = Factory.forProtocol(lambda: Sink(received))
        sink = yield serverFromString(global_reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(sink.stopListening)
        sink_address = NodeAddress.parse(f"127.0.0.1:{sink.getHost().port}")
        service = MixnodeService(global_reactor, KEYS[0], 1, "tcp:0:interface=127.0.0.1",
                                 "127.0.0.1", workers=2)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.whenListening()
        pool = service.node.pool
        pids = [w.transport.pid for w in pool.workers]
        # the pipes hold a batch (where the system allows it: Linux does)
        for w in pool.workers:
            for fd in (0, 1):
                self.assertEqual(fcntl.fcntl(w.transport.pipes[fd].fileno(), 1032),
                                 PIPE_SIZE)
        self.assertEqual(len(set(pids)), 2)

        def packets(n, first):
            hops = [Hop(ADDRS[0].to_bytes(), KEYS[0].public_key),
                    Hop(sink_address.to_bytes(), KEYS[1].public_key)]
            return [build_packet(hops, bytes(32), bytes(16), b"%d" % i, [0, 0],
                                 randbytes=random.Random(i).randbytes)
                    for i in range(first, first + n)]

        def connect():
            endpoint = TCP4ClientEndpoint(global_reactor, "127.0.0.1", port.getHost().port)
            return connectProtocol(endpoint, Protocol())

        batch = packets(40, 0)
        a = yield connect()
        b = yield connect()
        a.transport.write(b"".join(batch))
        yield self.wait(lambda: len(received) >= 40)
        # every one of them again on another connection, and a few on the first
        b.transport.write(b"".join(batch))
        a.transport.write(b"".join(batch[:5]))
        yield deferLater(global_reactor, 0.5, lambda: None)
        self.assertEqual(len(received), 40)
        self.assertEqual(service.node.dropped.get("ReplayError"), 45)
        # both workers did some of it
        expected = {process_packet(KEYS[0].private_key, p).packet for p in batch}
        self.assertEqual(set(received), expected)

        os.kill(pids[0], signal.SIGKILL)
        yield self.wait(lambda: pool.restarts == 1 and pool.workers[0] is not None
                        and pool.workers[0].transport.pid not in pids)
        more = packets(20, 100)
        b.transport.write(b"".join(more))
        yield self.wait(lambda: len(received) >= 60)
        self.assertEqual(len(received), 60)
        a.transport.loseConnection()
        b.transport.loseConnection()

    @defer.inlineCallbacks
    def test_two_workers_across_a_key_switch(self):
        """Rotation with real workers: the parent tells them each key added
        and retired (its own Clock here, so the switch comes on demand),
        and every key's replay cache, in the parent, catches replays
        whichever worker unwrapped them."""
        from nymtx.trust.keyring import enable_rotation
        hour = 3600 * 10 ** 9
        received = []
        factory = Factory.forProtocol(lambda: Sink(received))
        sink = yield serverFromString(global_reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(sink.stopListening)
        sink_address = NodeAddress.parse(f"127.0.0.1:{sink.getHost().port}")
        first = KeyPair.generate()
        service = MixnodeService(global_reactor, first, 1, "tcp:0:interface=127.0.0.1",
                                 "127.0.0.1", workers=2)
        clock = Clock()
        clock.advance(1_700_000_000)
        home = self.mktemp()
        keyring = enable_rotation(service, home, clock, 24 * hour)
        self.addCleanup(keyring.close)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.whenListening()
        second, start = keyring.announced(int(clock.seconds() * 10 ** 9))

        def packets(key, n, first_seed):
            hops = [Hop(ADDRS[0].to_bytes(), key),
                    Hop(sink_address.to_bytes(), KEYS[1].public_key)]
            return [build_packet(hops, bytes(32), bytes(16), b"%d" % i, [0, 0],
                                 randbytes=random.Random(i).randbytes)
                    for i in range(first_seed, first_seed + n)]

        endpoint = TCP4ClientEndpoint(global_reactor, "127.0.0.1", port.getHost().port)
        a = yield connectProtocol(endpoint, Protocol())
        b = yield connectProtocol(endpoint, Protocol())
        self.addCleanup(a.transport.loseConnection)
        self.addCleanup(b.transport.loseConnection)
        old, new = packets(first.public_key, 20, 0), packets(second, 20, 100)
        a.transport.write(b"".join(old + new))
        yield self.wait(lambda: len(received) >= 40)
        b.transport.write(b"".join(old[:5] + new[:5]))
        yield self.wait(lambda: service.node.dropped.get("ReplayError") == 10)
        self.assertEqual(len(keyring.replay_cache(first.public_key)), 20)
        self.assertEqual(len(keyring.replay_cache(second)), 20)
        # the switch, then the overlap: the workers drop the first key
        clock.advance(start / 10 ** 9 - clock.seconds() + 1)
        self.assertEqual(keyring.in_use(int(clock.seconds() * 10 ** 9)), second)
        clock.advance(3600)
        keyring.announced(int(clock.seconds() * 10 ** 9))
        self.assertNotIn(first.public_key, keyring.accepted())
        third, _ = keyring.announced(int(clock.seconds() * 10 ** 9))
        later = packets(first.public_key, 5, 200) + packets(third, 5, 300)
        a.transport.write(b"".join(later + new[5:10]))
        yield self.wait(lambda: len(received) >= 45 and service.node.dropped.get(
            "HeaderMacError", 0) + service.node.dropped.get("ReplayError", 0) >= 20)
        self.assertEqual(len(received), 45)
        self.assertEqual(service.node.dropped.get("HeaderMacError"), 5)
        self.assertEqual(service.node.dropped.get("ReplayError"), 15)
        self.assertEqual(len(keyring.replay_cache(third)), 5)

    @defer.inlineCallbacks
    def wait(self, condition, seconds=20):
        for _ in range(int(seconds / 0.02)):
            if condition():
                return
            yield deferLater(global_reactor, 0.02, lambda: None)
        self.fail("timed out waiting")


class ConfigTests(SynchronousTestCase):
    def setUp(self):
        self.home = self.mktemp()
        init_mixnode("m1", 1, port=34001, directory="", root=self.home)

    def test_workers_key_and_flag(self):
        config = load_config("m1", self.home)
        self.assertEqual(config.debug["workers"], 1)
        options = tap.Options()
        options.parseOptions(["--id", "m1", "--home", self.home, "--workers", "3"])
        self.assertEqual(options.config.debug["workers"], 3)
        service = tap.makeService(options, MemoryReactorClock())
        self.assertEqual(service.node.workers, 3)

    def test_bad_workers_flag_is_a_usage_error(self):
        for bad in ("0", "x", "257"):
            options = tap.Options()
            with self.assertRaises(usage.UsageError) as e:
                options.parseOptions(["--id", "m1", "--home", self.home, "--workers", bad])
            self.assertIn("--workers", str(e.exception))

    def test_bad_workers_key_is_a_config_error(self):
        path = config_path("m1", self.home)
        text = path.read_text().replace("workers = 1", "workers = 0")
        self.assertIn("workers = 0", text)
        with self.assertRaises(ConfigError) as e:
            parse_config(text)
        self.assertIn("workers", str(e.exception))


class SpawnFailureTests(SynchronousTestCase):
    def test_a_worker_that_cannot_start_is_tried_again(self):
        clock = Clock()
        spawner = FakeSpawner()
        failing = [OSError("too many open files")] * 2

        def spawn(reactor, protocol):
            if failing:
                raise failing.pop()
            return spawner(reactor, protocol)
        node = Mixnode(clock, KEYS[0].private_key, FakeLinks(), ReplayCache(1000),
                       workers=2, spawn=spawn)
        node.start()
        self.assertEqual(node.pool.workers.count(None), 2)
        node.handle_packet(make_packet())
        clock.advance(0)
        clock.advance(0.1)
        self.assertEqual(len(spawner.processes), 2)
        for p in spawner.processes:
            if p.written:
                p.pump()
        self.assertEqual(len(node.links.packets), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
