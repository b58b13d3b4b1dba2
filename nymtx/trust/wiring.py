"""How nodes and clients are given their identity and their directories.

The taps of the mixnode, the gateway and the client build their directory
client here, so that each of them changes by a few lines:

- ``node_identity(data_dir)``: the node's Ed25519 identity key, beside its
  Sphinx key; a node initialised before identity keys existed gets one on
  its first start, and says so in its log.
- ``node_directory(reactor, urls, identity)``: what a node announces
  through: every presence and metrics report signed by its identity and
  sent to each of *urls*. A seed directory ignores the added fields, so a
  node always signs.
- ``client_directory(reactor, urls, keys, threshold)``: what a client reads
  its topology through: plain for one unpinned directory (the seed's way),
  else a TrustedDirectoryClient needing *threshold* of the pinned *keys*.
- ``directory_list`` / ``directory_keys``: config.toml checks for lists of
  URLs and of pinned keys.
"""

from twisted.application.service import Service
from twisted.logger import Logger

from nymtx import config as shared
from nymtx.config import ConfigError
from nymtx.keys import KeyFormatError
from nymtx.trust.identity import PRIVATE_IDENTITY_FILE, IdentityKey, decode_identity_key

log = Logger()

#: more directories than this is a typo, not a deployment (Katzenpost runs 3-9)
MAX_DIRECTORIES = 32


def directory_list(value, name):
    """A tuple of directory URLs from a TOML list (each checked, no repeats)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of directory URLs, such as "
                          f"[\"http://127.0.0.1:8080\"], not {value!r:.80}")
    if len(value) > MAX_DIRECTORIES:
        raise ConfigError(f"{name} lists {len(value)} directories; at most {MAX_DIRECTORIES}")
    urls = []
    for index, item in enumerate(value):
        url = shared.url(item, f"{name}[{index}]")
        if url in urls:
            raise ConfigError(f"{name}[{index}]: {url} is listed twice")
        urls.append(url)
    return tuple(urls)


def directory_keys(value, name):
    """A tuple of pinned directory keys (base58 text, each checked)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of directory keys (base58), "
                          f"not {value!r:.80}")
    if len(value) > MAX_DIRECTORIES:
        raise ConfigError(f"{name} lists {len(value)} keys; at most {MAX_DIRECTORIES}")
    keys = []
    for index, text in enumerate(value):
        try:
            raw = decode_identity_key(text, f"{name}[{index}]")
        except KeyFormatError as e:
            raise ConfigError(str(e))
        if raw in [decode_identity_key(k) for k in keys]:
            raise ConfigError(f"{name}[{index}]: {text} is listed twice")
        keys.append(text)
    return tuple(keys)


def comma_separated(check, text, name):
    """*check* (directory_keys, directory_list) on a flag's text, its items
    separated by commas (``--directory-keys K1,K2``, ``--directories U2,U3``)."""
    if not isinstance(text, str):
        raise ConfigError(f"{name} must be comma-separated text, not {text!r:.80}")
    return check([item.strip() for item in text.split(",") if item.strip()], name)


def pinned_keys(text, name):
    """Directory keys from a flag's text, comma-separated (``--directory-keys``)."""
    return comma_separated(directory_keys, text, name)


def directory_threshold(value, name):
    """0 (a majority of the pinned keys) or how many must agree."""
    return shared.whole_number(value, name, low=0, high=MAX_DIRECTORIES)


def all_directories(primary, more=()):
    """*primary* (may be "": none) and *more*, without repeats, in order."""
    urls = [primary] if primary else []
    urls += [u for u in more if u not in urls]
    return urls


def check_pins(urls, keys, threshold, where="directory_keys"):
    """ConfigError unless *threshold* of the pinned *keys* can be met by *urls*."""
    if not keys:
        return
    needed = threshold or len(keys) // 2 + 1
    if needed > len(keys):
        raise ConfigError(f"{where}: a threshold of {needed} is more than the {len(keys)}"
                          " keys pinned")
    if needed > len(urls):
        raise ConfigError(f"{where}: {needed} directories must agree, but {len(urls)}"
                          " are given")


def node_identity(data_dir):
    """The identity key in *data_dir*, created (and logged) if there is none."""
    import os
    fresh = not os.path.exists(os.path.join(str(data_dir), PRIVATE_IDENTITY_FILE))
    identity = IdentityKey.load_or_generate(str(data_dir))
    if fresh:
        log.info("created identity key {key} in {folder}: this node signs its presences "
                 "with it (a directory's allow list names it)",
                 key=identity.public_text, folder=str(data_dir))
    return identity


class OnStop(Service):
    """A child service that calls *close* when its parent stops."""

    def __init__(self, close):
        self.close = close

    def stopService(self):
        super().stopService()
        return self.close()


def replay_log(data_dir, capacity=1 << 20):
    """The node's PersistentReplayCache in *data_dir*; ConfigError if unusable."""
    import os
    from nymtx.trust.replaylog import REPLAY_LOG_NAME, PersistentReplayCache, ReplayLogError
    try:
        return PersistentReplayCache(os.path.join(str(data_dir), REPLAY_LOG_NAME), capacity)
    except ReplayLogError as e:
        raise ConfigError(str(e))


class DirectoryCloser(Service):
    """A child service that closes a directory client its parent did not
    create (and so does not close) when the parent stops."""

    def __init__(self, directory):
        self.directory = directory

    def stopService(self):
        super().stopService()
        return self.directory.close()


def node_directory(reactor, urls, identity, keys=(), threshold=0):
    """A SigningDirectoryClient announcing to every one of *urls*, or None
    for none. With pinned *keys*, its ``get_topology()`` is the threshold
    topology; without, a node that reads the topology reads the first
    directory's, unchecked (as the seed's node did)."""
    from nymtx.trust.client import SigningDirectoryClient
    if not urls:
        return None
    if len(urls) == 1 and not keys:
        inner = _plain(urls[0], reactor)
    else:
        inner = _trusted(reactor, urls, keys, threshold)
    return SigningDirectoryClient(inner, identity, reactor)


def client_directory(reactor, urls, keys=(), threshold=0, treq=None, serials=None):
    """The client's IDirectoryClient: a DirectoryClient for one unpinned
    directory, else a TrustedDirectoryClient over all of *urls*; with
    *serials* (a file path) the serials of the documents it held survive
    a restart (nymtx.trust.serials)."""
    if not keys:
        if len(urls) != 1:
            raise ConfigError("several directories need their keys pinned (directory_keys):"
                              " a client cannot tell which of them to believe otherwise")
        return _plain(urls[0], reactor, treq)
    return _trusted(reactor, urls, keys, threshold, treq, serials)


class _FirstAnswers:
    """TrustedDirectories' stand-in for a node with no pins: no topology."""

    def offer(self, data, now):
        pass

    def topology(self, now):
        from nymtx.trust.agreement import NoAgreement
        raise NoAgreement("no directory keys are pinned: this node reads no topology")


def _plain(url, reactor, treq=None):
    from nymtx.directory.client import DirectoryClient
    # without a treq, each keeps (and closes) its own quiet pool
    extra = {} if treq is None else {"treq": treq}
    return DirectoryClient(url, reactor=reactor, **extra)


def _trusted(reactor, urls, keys, threshold, treq=None, serials=None):
    from nymtx.trust.agreement import TrustedDirectories
    from nymtx.trust.client import TrustedDirectoryClient
    if keys:
        try:
            trust = TrustedDirectories.from_config(list(keys), threshold or None)
        except ValueError as e:
            raise ConfigError(str(e))
        if serials is not None:
            from nymtx.trust.serials import SerialFile
            trust = TrustedDirectories(trust.pinned, trust.threshold,
                                       store=SerialFile(serials))
        if trust.threshold > len(urls):
            raise ConfigError(f"directory_threshold {trust.threshold} needs at least as many"
                              f" directories; {len(urls)} given")
    else:
        trust = _FirstAnswers()
    clients = [_plain(url, reactor, treq) for url in urls]
    return TrustedDirectoryClient(clients, trust, reactor)


def hand_over(service, directory):
    """Make a MixnodeService or Gateway given *directory* close it when it
    stops (as it does the one it builds from a URL)."""
    if directory is None:
        return
    if hasattr(service, "_owns_directory"):
        # a mixnode's children are its heartbeats only
        service._owns_directory = True
    else:
        DirectoryCloser(directory).setServiceParent(service)
