"""One call for each end of a packet's arrival, so that wiring stays small.

- The gateway: :func:`gateway_record` turns what ``process_gateway_packet``
  returned into the record to store and the SURB-ACK to send after the
  commit.
- The client: :func:`classify_record` sorts a record fetched from its
  gateway into an ack, a reply, or an envelope for the message layer.

Both take bytes that came from outside (a sender, a gateway) and never
raise for them: fuzzed in tests/test_reliable.py.
"""

import attrs

from nymtx.sphinx.constants import MAX_MESSAGE_SIZE
from nymtx.sphinx.surb import (
    DELIVERY_SIZE, SurbDelivery, SurbError, open_surb_delivery, parse_delivery)

from .ack import STORED_SIZE, SURB_ACK_SIZE, open_ack, split_payload

#: the first byte of a SURB-ACK: its first hop's address family
_FAMILIES = (4, 6)


@attrs.frozen
class GatewayRecord:
    """What the gateway does with a final-hop packet after its delay: store
    *record* for *destination*, then, once committed, send *surb_ack* (if
    not None) with :func:`nymtx.reliable.ack.ack_packet`."""

    destination: bytes
    record: bytes
    surb_ack: object


def gateway_record(hop):
    """The :class:`GatewayRecord` for a ``FinalHop`` or ``SurbDelivery``.

    A 975-byte message that starts with an address family (4 or 6) is a
    SURB-ACK and the stored part; a SURB delivery is stored whole
    (identifier || block) and acked by nobody; anything else (the seed's
    messages, the message layer's version-1 envelopes, which start with
    0x01) is stored as it is."""
    if isinstance(hop, SurbDelivery):
        return GatewayRecord(hop.destination, hop.stored(), None)
    if len(hop.message) == MAX_MESSAGE_SIZE and hop.message[0] in _FAMILIES:
        surb_ack, stored = split_payload(hop.message)
        return GatewayRecord(hop.destination, stored, surb_ack)
    return GatewayRecord(hop.destination, hop.message, None)


@attrs.frozen
class Ack:
    ref: object  # AckRef


@attrs.frozen
class Reply:
    """A reply through one of our blocks: its sender tag and the opened
    1007 bytes (the replier's SURB-ACK and the body: replies.split_reply)."""

    tag: bytes
    message: bytes


@attrs.frozen
class Envelope:
    """An end-to-end envelope for the message layer: STORED_SIZE bytes
    (version 2), or a version-1 envelope of MAX_MESSAGE_SIZE bytes."""

    payload: bytes


@attrs.frozen
class Unreadable:
    """Nothing for us: a SURB delivery no key opens (a cover ack, a stale or
    forged identifier, an altered reply), or a record of no known size."""

    reason: str


def classify_record(record, ack_key, claim):
    """Sort a record fetched from the gateway. *claim(identifier)* returns
    (tag, SurbKeys) for a reply block we gave out, once, else None
    (``ReplyStore.claim``). Returns Ack, Reply, Envelope or Unreadable."""
    if not isinstance(record, (bytes, bytearray, memoryview)):
        return Unreadable(f"a record is bytes, not {type(record).__name__}")
    record = bytes(record)
    if len(record) == STORED_SIZE:
        return Envelope(record)
    if len(record) == MAX_MESSAGE_SIZE:
        # A gateway from before issue 12 stores the whole Sphinx message: a
        # SURB-ACK (its first byte an address family) before the stored
        # part, which is ours to cut off (that gateway sends no ack). Else a
        # version-1 envelope, which starts with 0x01.
        if record[0] in _FAMILIES:
            return Envelope(record[SURB_ACK_SIZE:])
        return Envelope(record)
    if len(record) != DELIVERY_SIZE:
        return Unreadable(f"a record of {len(record)} bytes")
    identifier, block = parse_delivery(record)
    claimed = claim(identifier)
    if claimed is not None:
        tag, keys = claimed
        try:
            return Reply(tag, open_surb_delivery(keys, block))
        except SurbError as e:
            return Unreadable(f"a reply that does not open: {e}")
    ref = open_ack(ack_key, identifier)
    if ref is None:
        return Unreadable("a SURB delivery for no fragment of ours (cover, or not ours)")
    return Ack(ref)
