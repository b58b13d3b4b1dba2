"""``twistd nym-directory``: options, and a service assembled from parts."""

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from nymtx.directory.registry import DEFAULT_EXPIRY, Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import MAX_CONNECTIONS, DirectoryService

DEFAULT_ENDPOINT = "tcp:8080:interface=127.0.0.1"


class Options(usage.Options):
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
    if reactor is None:
        from twisted.internet import reactor
    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise usage.UsageError(
            f"--port: {description!r} is not a server endpoint "
            f"(like {DEFAULT_ENDPOINT}): {e}")
    return description


def check_expiry(value):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--expiry: {value!r} is not a number of seconds")
    if not 0 < seconds < float("inf"):
        raise usage.UsageError(f"--expiry: {value!r} must be a positive number of seconds")
    return seconds


def check_max_connections(value):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--max-connections: {value!r} is not a whole number")
    if n < 1:
        raise usage.UsageError(f"--max-connections: {value!r} must be at least 1")
    return n


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    registry = Registry(clock=reactor, expiry=options["expiry"])
    endpoint = serverFromString(reactor, options["port"])
    return DirectoryService(endpoint, make_site(registry), options["port"], registry,
                            max_connections=options["max-connections"])
