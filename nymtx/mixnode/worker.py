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
from nymtx.sphinx.errors import HeaderMacError

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

#: A key frame (node -> worker): a u32 of 0 where a batch has its count,
#: then n (1 byte, 1..MAX_KEYS) and n times slot (1 byte) and private key
#: (32): the keys to try from now on, in that order (docs/mixnode.md).
KEYS_FRAME = 0
#: Keys a worker holds at once; the slot is the high nibble of a result's
#: kind byte, so that a record names the key it was unwrapped with.
MAX_KEYS = 16

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


def encode_keys(keys):
    """The node's key frame for *keys*, ``[(slot, private key), ...]`` in
    the order the worker tries them."""
    if not 1 <= len(keys) <= MAX_KEYS:
        raise ValueError(f"a key frame holds 1 to {MAX_KEYS} keys, not {len(keys)}")
    out = [_COUNT.pack(KEYS_FRAME), bytes((len(keys),))]
    for slot, key in keys:
        if not 0 <= slot < MAX_KEYS or len(key) != KEY_SIZE:
            raise ValueError("a key is a slot 0..15 and 32 bytes")
        out.append(bytes((slot,)) + bytes(key))
    return b"".join(out)


def decode_keys(n, body):
    """``[(slot, private key), ...]`` from a key frame's *n* and its body;
    ProtocolError if it cannot be one."""
    if not 1 <= n <= MAX_KEYS or len(body) != n * (1 + KEY_SIZE):
        raise ProtocolError(f"a key frame of {n} keys and {len(body)} bytes")
    keys = []
    for i in range(n):
        record = body[i * (1 + KEY_SIZE):(i + 1) * (1 + KEY_SIZE)]
        if record[0] >= MAX_KEYS or record[0] in [s for s, _ in keys]:
            raise ProtocolError(f"key slot {record[0]} is out of range or repeated")
        keys.append((record[0], bytes(record[1:])))
    return keys


def process_batch(private_key, body, count):
    """The result frame for *count* packets laid end to end in *body*.

    *private_key* is one key (slot 0), or ``[(slot, key), ...]`` tried in
    order: a header MAC that fails is "not this key", and the next is
    tried; any other outcome is the packet's, under that key's slot."""
    keys = [(0, private_key)] if isinstance(private_key, (bytes, bytearray)) else private_key
    out = [_COUNT.pack(count)]
    append = out.append
    recorder = _TagRecorder()
    view = memoryview(body)
    for i in range(count):
        packet = view[i * PACKET_SIZE:(i + 1) * PACKET_SIZE]
        for slot, key in keys:
            recorder.tag = None
            try:
                hop = process_packet(key, packet, recorder)
            except HeaderMacError as e:
                error = e
                continue
            except SphinxError as e:
                error = e
                break
            error = None
            break
        high = slot << 4
        if error is not None:
            code = _CODES.get(type(error).__name__, 0)
            if recorder.tag is None:
                append(bytes((DROP, code)))
            else:
                append(bytes((DROP_TAGGED | high,)) + recorder.tag + bytes((code,)))
            continue
        if type(hop) is not ForwardHop:
            append(bytes((DROP_TAGGED | high,)) + recorder.tag
                   + bytes((_CODES[FINAL_HOP],)))
            continue
        append(bytes((FORWARD | high,)) + recorder.tag + hop.next_address
               + _DELAY.pack(hop.delay_ns) + hop.packet)
    return b"".join(out)


class ResultParser:
    """Cuts the worker's output into results, however the pipe splits it.

    ``feed(data)`` returns the results now whole, each a tuple
    ``(FORWARD, tag, next_address, delay_ns, packet, slot)`` or
    ``(DROP_TAGGED, tag, reason, slot)`` or ``(DROP, None, reason, 0)``,
    reason a name from REASONS, slot the key's (the kind byte's high
    nibble). ProtocolError for bytes a worker cannot have written.
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
            kind = buf[pos] & 0x0F
            slot = buf[pos] >> 4
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
                                _DELAY.unpack_from(buf, a)[0], bytes(buf[a + 8:pos]), slot))
            else:
                code = buf[pos - 1]
                if code >= len(REASONS):
                    raise ProtocolError(f"unknown drop reason {code}")
                if kind == DROP and slot:
                    raise ProtocolError("an untagged drop names a key slot")
                tag = bytes(buf[start:start + TAG_SIZE]) if kind == DROP_TAGGED else None
                results.append((kind, tag, REASONS[code], slot))
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
    keys = key
    while True:
        head = _read_exact(stdin, 4)
        if head is None:
            return 0
        (count,) = _COUNT.unpack(head)
        if count == KEYS_FRAME:
            n = _read_exact(stdin, 1)
            if n is None:
                return 0
            if not 1 <= n[0] <= MAX_KEYS:
                sys.stderr.write(f"mixnode worker: a key frame of {n[0]} keys; stopping\n")
                return 2
            body = _read_exact(stdin, n[0] * (1 + KEY_SIZE))
            if body is None:
                return 0
            try:
                keys = decode_keys(n[0], body)
            except ProtocolError as e:
                sys.stderr.write(f"mixnode worker: {e}; stopping\n")
                return 2
            continue
        if not 1 <= count <= MAX_BATCH:
            sys.stderr.write(f"mixnode worker: a batch of {count} packets; stopping\n")
            return 2
        body = _read_exact(stdin, count * PACKET_SIZE)
        if body is None:
            return 0
        stdout.write(process_batch(keys, body, count))
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
