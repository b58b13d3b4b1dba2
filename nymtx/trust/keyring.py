"""A node's rotating Sphinx keys: the RotationSchedule wired to the keys
it decrypts with, one persisted replay cache per key (a mixnode's, and a
gateway's final-hop keys: ``keep_first`` keeps a gateway's original key,
its name, accepted for good).

``SphinxKeyring(clock, folder, first, first_replays, interval, lead)``:

- the node's original key (``private_sphinx.key``, *first*, with its
  replay log *first_replays*) is the first period, from the start of time;
- every later key is a file pair in *folder*, named by the Unix ns from
  which senders use it (``<start>.private`` / ``<start>.public``, the
  format of nymtx.keys), with its replay log ``<start>.replays``
  (nymtx.trust.replaylog's format): a packet captured before a restart is
  refused after it, whichever key it was for;
- ``in_use(now)`` / ``announced(now)`` are what SigningDirectoryClient
  announces (``pubKey``, ``nextPubKey``, ``nextPubKeyFrom``); each call
  first makes sure one key is scheduled after the one in use (*interval*
  after its start, and at least *lead* from now), and retires keys whose
  overlap has passed (their files go: nothing can decrypt for them any
  more);
- ``process(packet, unwrap)`` tries each accepted key, the one in use
  first: a header MAC that fails is "not this key", anything else is the
  packet's fault. Each key has its own replay cache, so the same packet
  under two keys is two different shared secrets anyway;
- ``on_change(held())`` is called when a key is added or retired or the
  key in use changes: a mixnode's worker processes are told their keys.

docs/trust.md, "Key rotation", specifies the files and the timing.
"""

import os
import re

from twisted.logger import Logger

from nymtx.keys import KeyFormatError, KeyPair, encode_key
from nymtx.sphinx import process_packet
from nymtx.sphinx.errors import HeaderMacError
from nymtx.trust.rotation import DEFAULT_OVERLAP, KeyPeriod, RotationSchedule

NS = 1_000_000_000
#: a key's file names: its start in Unix ns, 19 or 20 digits
_NAME = re.compile(r"^([0-9]{1,20})\.private$")
#: how long a key is used by default, and how far ahead its successor is announced
DEFAULT_INTERVAL = 24 * 3600 * NS
DEFAULT_LEAD = 3600 * NS


class KeyringError(Exception):
    """The key folder cannot be used; the message names the file and why."""


def parse_key_name(name):
    """The start (Unix ns) a key file name stands for, or None if it is not one."""
    match = _NAME.match(name)
    if match is None:
        return None
    start = int(match.group(1))
    return start if 0 < start < 2 ** 64 else None


class SphinxKeyring:
    log = Logger()

    def __init__(self, clock, folder, first, first_replays, interval=DEFAULT_INTERVAL,
                 lead=DEFAULT_LEAD, overlap=DEFAULT_OVERLAP, capacity=1 << 20,
                 generate=KeyPair.generate, keep_first=False):
        if not 0 < lead < interval:
            raise ValueError("the lead must be positive and shorter than the interval")
        if overlap >= interval:
            raise ValueError("the overlap must be shorter than the interval")
        self.clock = clock
        self.folder = str(folder)
        self.interval, self.lead, self.overlap = interval, lead, overlap
        self.capacity = capacity
        self._generate = generate
        self._keys = {first.public_key: first}          # public -> KeyPair
        self._replays = {first.public_key: first_replays}
        self._starts = {first.public_key: 0}
        self._first = first.public_key
        #: a gateway's original key is its name, and the only key a seed
        #: reader of the topology knows (pubKey): it is never retired
        self.keep_first = keep_first
        #: called with held() whenever a key is added or retired or the key
        #: in use changes: a mixnode's worker processes follow its keys
        self.on_change = None
        self._told = None
        periods = [KeyPeriod(first.public_key, 0)]
        self._load(periods)
        self.schedule = RotationSchedule(periods, overlap)
        self._tend(self._now())

    def _now(self):
        return int(self.clock.seconds() * NS)

    def _load(self, periods):
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return
        except OSError as e:
            raise KeyringError(f"cannot read the key folder {self.folder}: {e.strerror}")
        found = sorted((parse_key_name(n), n) for n in names if parse_key_name(n) is not None)
        for start, name in found:
            stem = name[:-len(".private")]
            try:
                keys = KeyPair.load(self.folder, stem + ".private", stem + ".public")
            except KeyFormatError as e:
                raise KeyringError(f"rotated Sphinx key {name}: {e}")
            if keys.public_key in self._keys:
                raise KeyringError(f"rotated Sphinx key {name} is a key used before")
            self._add(keys, start, stem)
            periods.append(KeyPeriod(keys.public_key, start))

    def _add(self, keys, start, stem):
        from nymtx.trust.replaylog import PersistentReplayCache, ReplayLogError
        try:
            replays = PersistentReplayCache(os.path.join(self.folder, stem + ".replays"),
                                            self.capacity)
        except ReplayLogError as e:
            raise KeyringError(str(e))
        self._keys[keys.public_key] = keys
        self._replays[keys.public_key] = replays
        self._starts[keys.public_key] = start

    # -- the schedule, tended on every read -------------------------------

    def _tend(self, now):
        schedule = self.schedule
        nxt, _ = schedule.announced(now)
        if nxt is None:
            # one key is always scheduled ahead, at least *lead* ahead: the
            # presence announces it from now on (and the node accepts it)
            last = schedule.periods[-1]
            base = last.start if last.start else now  # the first key: from now
            self._make(max(base + self.interval, now + self.lead))
        for retired in self.schedule.retired(now):
            if retired == self._first and self.keep_first:
                continue
            self._retire(retired)
        in_use = self.schedule.in_use(now)
        if self.on_change is not None:
            state = (in_use, frozenset(self._keys))
            if state != self._told:
                self._told = state
                self.on_change(self.held(now))
        return in_use

    def _make(self, start):
        keys = self._generate()
        stem = f"{start:020d}"
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        keys.save(self.folder, stem + ".private", stem + ".public")
        self._add(keys, start, stem)
        self.schedule = self.schedule.rotate(keys.public_key, start)
        self.log.info("next Sphinx key {key}, used from {start} ns (announced ahead)",
                      key=keys.public_text, start=start)

    def _retire(self, public_key):
        if public_key not in self._keys:
            return
        start = self._starts.pop(public_key)
        self._keys.pop(public_key)
        replays = self._replays.pop(public_key)
        if public_key == self._first:
            # the original key's files are the node's own (its config names
            # them): it is no longer accepted, they stay
            self.log.info("Sphinx key {key} retired", key=encode_key(public_key))
            return
        replays.close()
        stem = f"{start:020d}"
        for suffix in (".private", ".public", ".replays"):
            try:
                os.remove(os.path.join(self.folder, stem + suffix))
            except FileNotFoundError:
                pass
        self.log.info("Sphinx key {key} retired: its private key and replay log are"
                      " removed", key=encode_key(public_key))

    def in_use(self, now):
        return self._tend(now)

    def announced(self, now):
        self._tend(now)
        return self.schedule.announced(now)

    def accepted(self, now=None):
        now = self._now() if now is None else now
        keys = [k for k in self.schedule.accepted(now) if k in self._keys]
        if self.keep_first and self._first not in keys:
            keys.append(self._first)  # last: only seed readers still use it
        return keys

    def held(self, now=None):
        """``[(public, private), ...]`` of every key held, the accepted ones
        first in the order they are tried (what worker processes are told)."""
        order = self.accepted(now)
        order += [k for k in self._keys if k not in order]
        return [(k, self._keys[k].private_key) for k in order]

    def replay_cache(self, public_key):
        """The replay cache of *public_key*, or None once it is retired."""
        return self._replays.get(public_key)

    # -- packets ----------------------------------------------------------

    def process(self, packet, unwrap=process_packet):
        """*unwrap* (process_packet, or the gateway's process_gateway_packet)
        with each accepted key; the last HeaderMacError if none fits."""
        error = None
        for public in self.accepted():
            try:
                return unwrap(self._keys[public].private_key, packet, self._replays[public])
            except HeaderMacError as e:
                error = e
        raise error if error is not None else HeaderMacError("no Sphinx key is accepted")

    def close(self):
        for public, replays in self._replays.items():
            close = getattr(replays, "close", None)
            if close is not None:
                close()


#: the folder of rotated keys, in the node's data folder
KEYRING_FOLDER = "sphinx_keys"


def rotation_timing(interval):
    """(lead, overlap) for keys used *interval* ns each: an hour's notice
    and 30 min of overlap, less for intervals too short to hold them."""
    return min(DEFAULT_LEAD, interval // 4), min(DEFAULT_OVERLAP, interval // 2)


def enable_rotation(service, data_dir, clock, interval, lead=None):
    """Rotate *service*'s (a MixnodeService's or a Gateway's) Sphinx key
    every *interval* ns: its node (or final-hop handler) decrypts with the
    keyring, and its SigningDirectoryClient announces the keyring's keys.
    A gateway's original key stays accepted (it is its name, and seed
    readers' only key). Returns the keyring; KeyringError if the folder is
    unusable."""
    default_lead, overlap = rotation_timing(interval)
    if lead is None:
        lead = default_lead
    gateway = getattr(service, "handler", None)
    target = gateway if gateway is not None else service.node
    keyring = SphinxKeyring(clock, os.path.join(str(data_dir), KEYRING_FOLDER),
                            service.keys, target.replay_cache, interval=interval,
                            lead=lead, overlap=overlap, keep_first=gateway is not None)
    target.keyring = keyring
    directory = service.directory
    if directory is not None and hasattr(directory, "schedule"):
        directory.schedule = keyring
    return keyring
