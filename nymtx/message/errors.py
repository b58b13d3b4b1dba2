"""Every error the message layer raises; each message says what was wrong."""


class MessageLayerError(Exception):
    """Base of every message-layer error: nothing else leaves its parsers."""


class EnvelopeError(MessageLayerError):
    """A payload that is not a well-formed envelope (size, version)."""


class NotForMe(EnvelopeError):
    """The AEAD tag does not verify: the payload is for another key, or was altered."""


class RecipientKeyError(MessageLayerError):
    """A recipient public key that cannot be encrypted to (size, small order)."""


class PlaintextError(MessageLayerError):
    """A decrypted plaintext whose type byte or fragment header makes no sense."""


class MessageTooLarge(MessageLayerError, ValueError):
    """A message over the configured maximum size."""


class QueueFull(MessageLayerError):
    """The send queue holds as many messages or bytes as it may."""
