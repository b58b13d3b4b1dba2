"""The Sphinx packet format with nym's geometry: pure functions, no I/O."""

from .constants import (
    HEADER_SIZE, MAX_HOPS, MAX_MESSAGE_SIZE, PACKET_SIZE, PAYLOAD_SIZE)
from .errors import SphinxError
from .packet import (
    FinalHop, ForwardHop, Hop, build_packet, process_packet, sample_delays)
from .replay import ReplayCache

__all__ = [
    "HEADER_SIZE", "MAX_HOPS", "MAX_MESSAGE_SIZE", "PACKET_SIZE", "PAYLOAD_SIZE",
    "SphinxError", "FinalHop", "ForwardHop", "Hop", "build_packet",
    "process_packet", "sample_delays", "ReplayCache",
]
