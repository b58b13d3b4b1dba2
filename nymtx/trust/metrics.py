"""Signed metrics: a mixnode's counts, reported by the mixnode itself.

The seed's directory took metrics for any key from anyone. A signed report
binds the node's identity key, its Sphinx key, a timestamp and the counts;
the directory takes it only from the identity that holds that Sphinx key in
its signed presence (nymtx.directory.signed). docs/trust.md, "Metrics".
"""

import struct

import attrs

from nymtx.directory.presence import BodyError, load_object, metrics_fields
from nymtx.keys import decode_key, encode_key
from nymtx.trust.identity import SIGNATURE_SIZE, encode_b58, verify_signature
from nymtx.trust.presence import (
    PresenceError, _b58_field, _identity, _u64_field)

METRICS_CONTEXT = b"nymtx/metrics/1"


@attrs.frozen
class Metrics:
    identity_key: bytes
    sphinx_key: bytes
    timestamp: int
    received: int
    sent: int
    dropped: tuple = attrs.field(converter=lambda d: tuple(sorted(
        dict(d).items(), key=lambda kv: kv[0].encode("utf-8"))))

    def signed_bytes(self):
        """The exact bytes the identity key signs (docs/trust.md, "Metrics")."""
        parts = [METRICS_CONTEXT, self.identity_key, self.sphinx_key,
                 struct.pack(">QQQI", self.timestamp, self.received, self.sent,
                             len(self.dropped))]
        for reason, count in self.dropped:
            raw = reason.encode("utf-8")
            parts += [struct.pack(">H", len(raw)), raw, struct.pack(">Q", count)]
        return b"".join(parts)

    def entry(self):
        """The registry's metrics entry (what presence.parse_metrics returns)."""
        return {"pubKey": encode_key(self.sphinx_key), "received": self.received,
                "sent": self.sent, "dropped": dict(self.dropped)}


@attrs.frozen
class SignedMetrics:
    metrics: Metrics
    signature: bytes

    @property
    def identity_key(self):
        return self.metrics.identity_key

    def verify(self):
        return verify_signature(self.metrics.identity_key, self.metrics.signed_bytes(),
                                self.signature)

    def to_json(self):
        m = self.metrics
        return {"pubKey": encode_key(m.sphinx_key), "received": m.received, "sent": m.sent,
                "dropped": dict(m.dropped), "identityKey": encode_b58(m.identity_key),
                "timestamp": m.timestamp, "signature": encode_b58(self.signature)}


def sign_metrics(identity, sphinx_key, counts, now):
    """A node's report of *counts* (``received``, ``sent``, ``dropped``, what
    MixNode.take_metrics gives) signed by *identity* at *now* (Unix ns)."""
    metrics = Metrics(identity.public_key, sphinx_key, now, counts["received"],
                      counts["sent"], counts.get("dropped") or {})
    return SignedMetrics(metrics, identity.sign(metrics.signed_bytes()))


def parse_signed_metrics(body):
    """A SignedMetrics from a POST body; PresenceError names the field."""
    try:
        data = load_object(body) if isinstance(body, (bytes, bytearray)) else body
        if not isinstance(data, dict):
            raise BodyError(None, "a metrics report must be a JSON object")
        if data.get("signature") is None:
            raise BodyError("signature", "missing: the report is not signed")
        if isinstance(data.get("sent"), dict):
            raise BodyError("sent", "a signed report gives the total, not counts per hop")
        entry = metrics_fields(data)
    except PresenceError:
        raise
    except BodyError as e:
        raise PresenceError(e.field, e.why)
    metrics = Metrics(_identity(data), decode_key(entry["pubKey"]),
                      _u64_field(data, "timestamp"), entry["received"], entry["sent"],
                      entry["dropped"])
    signed = SignedMetrics(metrics, _b58_field(data, "signature", SIGNATURE_SIZE))
    if not signed.verify():
        raise PresenceError("signature", "does not verify: it is not the identity key's "
                            "signature over these counts")
    return signed
