"""``twistd nym-directory``: options, and a service assembled from parts."""

from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from nymtx import config as shared
from nymtx.cli import LogLevelOption, Unusable
from nymtx.keys import KeyFormatError

from nymtx.directory.registry import DEFAULT_EXPIRY, Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import MAX_CONNECTIONS, DirectoryService

DEFAULT_ENDPOINT = "tcp:8080:interface=127.0.0.1"
log = Logger()


class Options(LogLevelOption, usage.Options):
    synopsis = ("[--port ENDPOINT] [--expiry SECONDS] "
                "[--identity-dir DIR (--allow-list FILE | --allow-any)]")

    def getSynopsis(self):
        # --help's first line, as the other nym-* commands print it
        return f"Usage: nym-directory {self.synopsis}"
    longdesc = ("The nymtx directory: nodes announce their presence, clients read "
                "the topology, and GET / shows the live network. With --identity-dir "
                "it takes only signed presences and signs its topology (docs/trust.md).")
    optFlags = [
        ["allow-any", None,
         "With --identity-dir: admit any node identity (a local network); a public "
         "directory names its nodes with --allow-list instead."],
    ]

    optParameters = [
        ["port", "p", DEFAULT_ENDPOINT,
         "Endpoint to serve HTTP on (a bare number N means tcp:N:interface=127.0.0.1)."],
        ["expiry", None, str(DEFAULT_EXPIRY),
         "Seconds after which a node that has not announced itself leaves the topology."],
        ["max-connections", None, str(MAX_CONNECTIONS),
         "HTTP connections open at once; more are closed as soon as accepted."],
        ["identity-dir", None, None,
         "Folder of the directory's Ed25519 identity key (created if empty): turns "
         "signatures on. Clients pin its public key."],
        ["allow-list", None, None,
         "With --identity-dir: the file of node identity keys admitted, one a line."],
    ]

    def postOptions(self):
        self["port"] = check_endpoint(self["port"])
        self["expiry"] = check_expiry(self["expiry"])
        self["max-connections"] = check_max_connections(self["max-connections"])
        self["identity"], self["allowed"] = check_trust(
            self["identity-dir"], self["allow-list"], self["allow-any"])


def check_trust(identity_dir, allow_list, allow_any):
    """(IdentityKey or None, AllowList or None) from the trust flags.

    Signing on means an allow list unless --allow-any says otherwise: an
    open signed directory still lets anyone add nodes, so it must be asked
    for by name (docs/directory.md, "Signed presences").
    """
    if identity_dir is None:
        if allow_list is not None or allow_any:
            raise usage.UsageError("--allow-list and --allow-any need --identity-dir "
                                   "(a directory without a key takes unsigned presences)")
        return None, None
    if (allow_list is None) == (not allow_any):
        raise usage.UsageError("--identity-dir needs --allow-list FILE (the nodes admitted)"
                               " or --allow-any (admit any node), not both or neither")
    from nymtx.trust.allowlist import AllowList, AllowListError
    from nymtx.trust.identity import IdentityKey
    try:
        identity = IdentityKey.load_or_generate(identity_dir)
    except (KeyFormatError, OSError) as e:
        raise Unusable(f"--identity-dir {identity_dir}: {e}")
    allowed = None
    if allow_list is not None:
        try:
            allowed = AllowList.load(allow_list)
        except AllowListError as e:
            raise Unusable(f"--allow-list: {e}")
    return identity, allowed


def check_endpoint(description, reactor=None):
    """The endpoint description, checked by parsing it; UsageError says why not."""
    if description.isdigit():
        description = f"tcp:{description}:interface=127.0.0.1"
    try:
        return shared.endpoint(description, "--port", reactor)
    except shared.ConfigError as e:
        raise usage.UsageError(str(e))


def check_expiry(value):
    try:
        return shared.from_text(shared.seconds, value, "--expiry")
    except shared.ConfigError as e:
        raise usage.UsageError(str(e))


def check_max_connections(value):
    try:
        return shared.from_text(shared.count, value, "--max-connections")
    except shared.ConfigError as e:
        raise usage.UsageError(str(e))


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    if options["identity"] is None:
        registry = Registry(clock=reactor, expiry=options["expiry"])
    else:
        from nymtx.directory.signed import SignedRegistry
        registry = SignedRegistry(reactor, options["identity"], options["allowed"],
                                  expiry=options["expiry"])
        allowed = options["allowed"]
        log.info("signing topologies with directory key {key}; admitting {who}",
                 key=options["identity"].public_text,
                 who="any node" if allowed is None else f"the {len(allowed)} nodes allowed")
    endpoint = serverFromString(reactor, options["port"])
    return DirectoryService(endpoint, make_site(registry), options["port"], registry,
                            max_connections=options["max-connections"])
