"""Every error the Sphinx code raises; each message says what was wrong."""


class SphinxError(Exception):
    """Base of every Sphinx error: nothing else escapes build or process."""


class PacketSizeError(SphinxError):
    """A packet that is not exactly PACKET_SIZE bytes."""


class RouteError(SphinxError):
    """An empty or too long route, or a malformed hop."""


class MessageTooLongError(SphinxError):
    """A message over MAX_MESSAGE_SIZE bytes."""


class InvalidGroupElementError(SphinxError):
    """The header's group element is not a usable X25519 point."""


class HeaderMacError(SphinxError):
    """The header MAC does not match: the header was tampered with or is for another key."""


class ReplayError(SphinxError):
    """A packet whose shared secret was seen before."""


class RoutingError(SphinxError):
    """Decrypted routing information that makes no sense (bad flag or version)."""


class PayloadError(SphinxError):
    """The payload failed its integrity check at the final hop."""
