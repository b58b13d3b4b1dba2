"""The serial of the last topology a client accepted from each directory,
kept across restarts, so that a replayed older topology is refused after
a restart too (without it, any unexpired document is accepted again after
one: a replay window of a document's lifetime, 120 s by default).

File (docs/trust.md, "Pinned directories and the threshold"): the 16
ASCII bytes ``nymtx/serials/1\\n``, then per directory its 32-byte key and
the serial (u64, big-endian), in ascending order of the keys. It is
rewritten whole (atomically) each time a newer document is held. A file
that cannot be read is logged and ignored: the client then works as it
did before this file existed, and rewrites it at its next document.
"""

import struct

from twisted.logger import Logger

from nymtx.trust.replaylog import _write_atomically

MAGIC = b"nymtx/serials/1\n"
RECORD = struct.Struct(">32sQ")
#: more directories than wiring.MAX_DIRECTORIES are refused in config anyway
MAX_RECORDS = 1024
SERIALS_NAME = "directory_serials.bin"


class SerialsError(ValueError):
    """The bytes are not a serials file; the message says why."""


def encode(serials):
    """The file's bytes for *serials*, {directory key: serial}."""
    items = sorted(serials.items())
    if len(items) > MAX_RECORDS:
        raise SerialsError(f"at most {MAX_RECORDS} directories, not {len(items)}")
    return MAGIC + b"".join(RECORD.pack(bytes(k), s) for k, s in items)


def decode(data):
    """{directory key: serial} from the file's bytes; SerialsError if they
    cannot be a serials file."""
    if not data.startswith(MAGIC):
        raise SerialsError(f"does not start with {MAGIC!r}")
    body = data[len(MAGIC):]
    if len(body) % RECORD.size:
        raise SerialsError(f"{len(body)} bytes after the header are not whole"
                           f" {RECORD.size}-byte records")
    if len(body) // RECORD.size > MAX_RECORDS:
        raise SerialsError(f"more than {MAX_RECORDS} records")
    out = {}
    for offset in range(0, len(body), RECORD.size):
        key, serial = RECORD.unpack_from(body, offset)
        if key in out:
            raise SerialsError("a directory key is listed twice")
        out[key] = serial
    return out


class SerialFile:
    """``load()`` the serials kept in *path*; ``save(serials)`` them."""

    log = Logger()

    def __init__(self, path):
        self.path = str(path)
        self._saved = None
        self._failed = False

    def load(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read(len(MAGIC) + RECORD.size * MAX_RECORDS + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            self.log.warn("cannot read {path} ({why}): older topologies are refused only"
                          " from the next one on", path=self.path, why=e.strerror)
            return {}
        try:
            serials = decode(data)
        except SerialsError as e:
            self.log.warn("{path} is not a serials file ({why}); ignoring it (it is"
                          " rewritten with the next topology)", path=self.path, why=str(e))
            return {}
        self._saved = serials
        return dict(serials)

    def save(self, serials):
        if serials == self._saved:
            return
        try:
            _write_atomically(self.path, encode(serials))
        except OSError as e:
            if not self._failed:
                self.log.error("cannot write {path} ({why}): a restart would accept an"
                               " older topology again", path=self.path, why=e.strerror)
            self._failed = True
            return
        self._failed = False
        self._saved = dict(serials)
