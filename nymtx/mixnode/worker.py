"""The child side of a mixnode's worker processes: unwrap batches of packets.

``python -m nymtx.mixnode.worker`` reads its node's private key and then
batches of packets on stdin, and writes one batch of results per batch on
stdout, in the same order (frames in docs/mixnode.md, "Worker processes").
It imports no Twisted and keeps no state between packets: the replay cache
stays in the node's process, which is the only place that sees every packet
of every connection. A worker therefore returns each packet's replay tag
(it derives from the shared secret, which only the worker computes) and the
node checks it, in arrival order.

This module is also where both sides' frame codec lives, so that the node
and its workers cannot disagree on it.
"""

import struct
import sys

from nymtx.sphinx import PACKET_SIZE, ForwardHop, SphinxError, process_packet

#: Drop reason of a packet whose routing says it ends at this mixnode.
FINAL_HOP = "final_hop_at_mixnode"

KEY_SIZE = 32
TAG_SIZE = 16
ADDRESS_SIZE = 32
#: The most packets in one batch (a batch is at most ~1.4 MB on the pipe).
MAX_BATCH = 1024

FORWARD = 0       # tag, next address, delay (ns), the next packet
DROP_TAGGED = 1   # tag, reason: dropped after the MAC (the tag still counts)
DROP = 2          # reason: dropped before a tag existed

#: Reason codes on the pipe, in this order. Index 0 is the catch-all.
REASONS = ("SphinxError", "PacketSizeError", "InvalidGroupElementError", "HeaderMacError",
           "RoutingError", "PayloadError", FINAL_HOP)
_CODES = {name: code for code, name in enumerate(REASONS)}

#: Bytes of a result record after its kind byte, by kind.
RECORD_SIZES = {FORWARD: TAG_SIZE + ADDRESS_SIZE + 8 + PACKET_SIZE,
                DROP_TAGGED: TAG_SIZE + 1, DROP: 1}

_COUNT = struct.Struct(">I")
_DELAY = struct.Struct(">Q")


class ProtocolError(Exception):
    """A frame on the pipe that the other side could not have written."""


class _TagRecorder:
    """Stands in for the replay cache: keeps the tag, never refuses."""

    __slots__ = ("tag",)

    def __init__(self):
        self.tag = None

    def insert(self, tag):
        self.tag = tag
        return True


def encode_batch(packets):
    """The node's frame for *packets*: count (u32 BE), then the packets."""
    return _COUNT.pack(len(packets)) + b"".join(packets)


def process_batch(private_key, body, count):
    """The result frame for *count* packets laid end to end in *body*."""
    out = [_COUNT.pack(count)]
    append = out.append
    recorder = _TagRecorder()
    view = memoryview(body)
    for i in range(count):
        recorder.tag = None
        try:
            hop = process_packet(private_key, view[i * PACKET_SIZE:(i + 1) * PACKET_SIZE],
                                 recorder)
        except SphinxError as e:
            code = _CODES.get(type(e).__name__, 0)
            if recorder.tag is None:
                append(bytes((DROP, code)))
            else:
                append(bytes((DROP_TAGGED,)) + recorder.tag + bytes((code,)))
            continue
        if type(hop) is not ForwardHop:
            append(bytes((DROP_TAGGED,)) + recorder.tag + bytes((_CODES[FINAL_HOP],)))
            continue
        append(bytes((FORWARD,)) + recorder.tag + hop.next_address
               + _DELAY.pack(hop.delay_ns) + hop.packet)
    return b"".join(out)


class ResultParser:
    """Cuts the worker's output into results, however the pipe splits it.

    ``feed(data)`` returns the results now whole, each a tuple
    ``(FORWARD, tag, next_address, delay_ns, packet)`` or
    ``(DROP_TAGGED, tag, reason)`` or ``(DROP, None, reason)``, reason a
    name from REASONS. ProtocolError for bytes a worker cannot have written.
    """

    def __init__(self):
        self._buffer = bytearray()
        self._remaining = 0  # results still to come in the current frame

    def feed(self, data):
        buf = self._buffer
        buf += data
        results = []
        pos = 0
        size = len(buf)
        while True:
            if self._remaining == 0:
                if size - pos < 4:
                    break
                (count,) = _COUNT.unpack_from(buf, pos)
                if not 1 <= count <= MAX_BATCH:
                    raise ProtocolError(f"a result frame of {count} results")
                pos += 4
                self._remaining = count
            if pos >= size:
                break
            kind = buf[pos]
            length = RECORD_SIZES.get(kind)
            if length is None:
                raise ProtocolError(f"unknown result kind {kind}")
            if size - pos - 1 < length:
                break
            start = pos + 1
            pos = start + length
            if kind == FORWARD:
                t = start + TAG_SIZE
                a = t + ADDRESS_SIZE
                results.append((FORWARD, bytes(buf[start:t]), bytes(buf[t:a]),
                                _DELAY.unpack_from(buf, a)[0], bytes(buf[a + 8:pos])))
            else:
                code = buf[pos - 1]
                if code >= len(REASONS):
                    raise ProtocolError(f"unknown drop reason {code}")
                tag = bytes(buf[start:start + TAG_SIZE]) if kind == DROP_TAGGED else None
                results.append((kind, tag, REASONS[code]))
            self._remaining -= 1
        del buf[:pos]
        return results


def _read_exact(stream, n):
    data = stream.read(n)
    if len(data) < n:
        return None
    return data


def main(stdin=None, stdout=None):
    """Serve one node until its end of the pipe closes; 0, or 2 on a bad frame."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    key = _read_exact(stdin, KEY_SIZE)
    if key is None:
        return 0
    while True:
        head = _read_exact(stdin, 4)
        if head is None:
            return 0
        (count,) = _COUNT.unpack(head)
        if not 1 <= count <= MAX_BATCH:
            sys.stderr.write(f"mixnode worker: a batch of {count} packets; stopping\n")
            return 2
        body = _read_exact(stdin, count * PACKET_SIZE)
        if body is None:
            return 0
        stdout.write(process_batch(key, body, count))
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
