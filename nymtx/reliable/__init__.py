"""Reliable delivery and anonymous replies (issue 12): pure parts, no I/O.

- :mod:`nymtx.reliable.ack`: the SURB-ACK each payload starts with, what
  the recipient's gateway does with it, and how the sender reads an ack.
- :mod:`nymtx.reliable.retransmit`: timeouts, retry cap and outcomes on an
  injected clock.
- :mod:`nymtx.reliable.replies`: reply blocks, sender tags and the reply
  layer's control messages.
- :mod:`nymtx.reliable.inbound`: the gateway's and the client's one call
  per arriving packet or fetched record.

Durable state lives in :mod:`nymtx.client.outbox` and
:mod:`nymtx.client.replystore`. Layouts: docs/surb.md.
"""
