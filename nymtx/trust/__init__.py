"""Signed presences, signed topologies and directory thresholds (issue 15).

Pure values and functions, no I/O beyond key and allow-list files:
docs/trust.md specifies every format byte by byte.
"""
