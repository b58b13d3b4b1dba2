"""What the gateway's client link shares between its two sides: sizes,
error codes, the error type, and the ledger's token hash.

The link itself is the private one: :mod:`nymtx.gateway.channel` (Noise IK)
carrying the fixed-size frames of :mod:`nymtx.gateway.padded`
(``docs/gateway-protocol.md``). The plaintext frames of the release before
it are gone from the gateway; ``benchmarks/legacy_plaintext.py`` keeps them
as the benchmark's baseline.
"""

import hashlib

KEY_SIZE = 32
TOKEN_SIZE = 32
#: The largest pull the old link allowed; kept for the gateway's
#: ``message_retrieval_limit`` setting, which the private link ignores.
MAX_PULL = 200
#: The largest message a gateway stores (a Sphinx payload is smaller).
MAX_MESSAGE = 4096
MAX_ERROR_TEXT = 1024

# error codes
E_MALFORMED = 1
E_UNKNOWN_TYPE = 2
E_TOO_LARGE = 3
E_BAD_PROOF = 4
E_UNKNOWN_CLIENT = 5
E_BAD_TOKEN = 6
E_NOT_AUTHENTICATED = 7
E_ALREADY = 8
E_INTERNAL = 9
E_FULL = 10
E_RATE_LIMITED = 11

ERROR_NAMES = {
    E_MALFORMED: "malformed", E_UNKNOWN_TYPE: "unknown-type",
    E_TOO_LARGE: "too-large", E_BAD_PROOF: "bad-proof",
    E_UNKNOWN_CLIENT: "unknown-client", E_BAD_TOKEN: "bad-token",
    E_NOT_AUTHENTICATED: "not-authenticated", E_ALREADY: "already",
    E_INTERNAL: "internal", E_FULL: "full",
    E_RATE_LIMITED: "rate-limited",
}


class FrameError(ValueError):
    """A frame that cannot be accepted; ``code`` is sent back in the error frame."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def token_hash(token):
    return hashlib.sha256(token).digest()
