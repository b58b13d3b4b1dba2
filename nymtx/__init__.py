"""nymtx: a Nym-style mixnet on Twisted."""

__version__ = "0.5.0"
