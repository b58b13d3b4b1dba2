"""A replay cache that survives a restart (issue 15, item 6).

A gateway and a mixnode keep their Sphinx key across restarts (a client's
registration names its gateway by that key), so a packet captured before a
restart would be processed again after it (5 of 5 were delivered again)
if the replay cache were only in memory. ``PersistentReplayCache`` is the
in-memory ``nymtx.sphinx.ReplayCache`` (the same two generations, the same
bound) whose every new tag is also appended to a file, read back at start.

File (docs/trust.md, "Replay log"): the 16 ASCII bytes
``nymtx/replays/1\\n``, then the 16-byte tags back to back, oldest first.
Each tag is written with one ``write(2)`` as its packet is processed, so
a process that dies loses none (a machine that loses power may lose the
last ones the kernel had not written: no fsync per packet). A torn last
tag (a length not header + 16k) is dropped with a warning; a file that
does not start with the header is refused with ReplayLogError, and left
as it is. When the file holds twice the capacity, it is rewritten
(atomically) with the tags the cache still holds.
"""

import os

from twisted.logger import Logger

from nymtx.sphinx import ReplayCache

MAGIC = b"nymtx/replays/1\n"
TAG_SIZE = 16
REPLAY_LOG_NAME = "replay_tags.bin"


def _write_atomically(path, data):
    """*data* to *path* through a file beside it, then rename (as
    nymtx.paths.write_atomically does for text)."""
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ReplayLogError(Exception):
    """The replay log cannot be used; the message names the file."""


class PersistentReplayCache:
    """``insert(tag)`` / ``in`` / ``len`` as ReplayCache, kept in *path*."""

    log = Logger()

    def __init__(self, path, capacity=1 << 20):
        self.path = str(path)
        self._cache = ReplayCache(capacity)
        self.capacity = capacity
        self._written = 0
        self._fd = None
        self._load()

    def _load(self):
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(MAGIC))
                if head != MAGIC:
                    raise ReplayLogError(
                        f"replay log {self.path} does not start with {MAGIC!r}: not a"
                        " replay log (move it away to start afresh)")
                size = os.fstat(f.fileno()).st_size - len(MAGIC)
                whole = size - size % TAG_SIZE
                # only the newest tags fit in the cache anyway
                keep = min(whole, self.capacity * TAG_SIZE)
                f.seek(len(MAGIC) + whole - keep)
                data = f.read(keep)
        except FileNotFoundError:
            self._rewrite([])
            return
        except OSError as e:
            raise ReplayLogError(f"cannot read the replay log {self.path}: {e.strerror}")
        if size % TAG_SIZE:
            self.log.warn("replay log {path}: dropped a torn last tag ({n} bytes)",
                          path=self.path, n=size % TAG_SIZE)
        tags = [data[i:i + TAG_SIZE] for i in range(0, len(data), TAG_SIZE)]
        for tag in tags:
            self._cache.insert(tag)
        if size % TAG_SIZE or whole > keep:
            self._rewrite(self._held())
        else:
            self._open()
            self._written = len(tags)
        self.log.info("replay log {path}: {n} tags of earlier runs refused", path=self.path,
                      n=len(self._cache))

    def _held(self):
        return list(self._cache._previous) + list(self._cache._current)

    def _open(self):
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            raise ReplayLogError(f"cannot open the replay log {self.path}: {e.strerror}")

    def _rewrite(self, tags):
        self.close()
        try:
            _write_atomically(self.path, MAGIC + b"".join(tags))
        except OSError as e:
            raise ReplayLogError(f"cannot write the replay log {self.path}: {e.strerror}")
        self._written = len(tags)
        self._open()

    def insert(self, tag):
        if not self._cache.insert(tag):
            return False
        if self._fd is not None:
            try:
                os.write(self._fd, tag)
                self._written += 1
                if self._written >= 2 * self.capacity:
                    self._rewrite(self._held())
            except (OSError, ReplayLogError) as e:
                # a full disk must not stop the node: replays are then
                # refused only until the next restart, and it says so
                self.log.error("replay log {path}: cannot write ({why}); tags are kept in"
                               " memory only until it can", path=self.path, why=str(e))
                self.close()
        return True

    def __contains__(self, tag):
        return tag in self._cache

    def __len__(self):
        return len(self._cache)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
