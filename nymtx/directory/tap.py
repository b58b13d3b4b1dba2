"""``twistd nym-directory``: options, and a service assembled from parts."""

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from nymtx import config as shared
from nymtx.cli import LogLevelOption

from nymtx.directory.registry import DEFAULT_EXPIRY, Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import MAX_CONNECTIONS, DirectoryService

DEFAULT_ENDPOINT = "tcp:8080:interface=127.0.0.1"


class Options(LogLevelOption, usage.Options):
    synopsis = "[--port ENDPOINT] [--expiry SECONDS]"
    longdesc = ("The nymtx directory: nodes announce their presence, clients read "
                "the topology, and GET / shows the live network.")

    optParameters = [
        ["port", "p", DEFAULT_ENDPOINT,
         "Endpoint to serve HTTP on (a bare number N means tcp:N:interface=127.0.0.1)."],
        ["expiry", None, str(DEFAULT_EXPIRY),
         "Seconds after which a node that has not announced itself leaves the topology."],
        ["max-connections", None, str(MAX_CONNECTIONS),
         "HTTP connections open at once; more are closed as soon as accepted."],
    ]

    def postOptions(self):
        self["port"] = check_endpoint(self["port"])
        self["expiry"] = check_expiry(self["expiry"])
        self["max-connections"] = check_max_connections(self["max-connections"])


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
    registry = Registry(clock=reactor, expiry=options["expiry"])
    endpoint = serverFromString(reactor, options["port"])
    return DirectoryService(endpoint, make_site(registry), options["port"], registry,
                            max_connections=options["max-connections"])
