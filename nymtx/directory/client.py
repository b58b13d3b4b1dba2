"""The directory's HTTP client, used by every node and client.

treq is passed in, so that tests drive the real server resource through
``treq.testing.StubTreq``. Every request has a timeout: a directory that
hangs must never wedge a node. Every failure, an error status or a
directory that cannot be reached, becomes a :class:`DirectoryError`.
"""

import json

import attrs
import treq as _treq
import treq.client  # noqa: F401  (treq.client.HTTPClient for the own pool)
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.interfaces import IDirectoryClient

__all__ = ["DirectoryClient", "DirectoryError"]

DEFAULT_TIMEOUT = 5.0
#: A larger answer is refused; a topology of thousands of nodes fits easily.
MAX_RESPONSE_SIZE = 16 * 1024 * 1024


class DirectoryError(Exception):
    """The directory answered with an error status or could not be reached."""


class _TooLarge(Exception):
    pass


def _check_url(instance, attribute, value):
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError(
            f"directory URL {value!r} must start with http:// or https://")


def quiet_pool(reactor):
    """A persistent HTTPConnectionPool whose connections are not logged.

    Twisted logs "Starting factory"/"Stopping factory" at info level for
    every new connection: two lines per retry while the directory is down,
    which the Heartbeat otherwise keeps quiet.
    """
    from twisted.web.client import HTTPConnectionPool
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = type("_QuietHTTP11ClientFactory", (pool._factory,), {"noisy": False})
    return pool


@implementer(IDirectoryClient)
@attrs.define
class DirectoryClient:
    """Talks to the directory at *base_url* (``http://host:port``).

    *reactor* is only used to time out requests; None means the global one.
    """

    base_url: str = attrs.field(validator=_check_url,
                                converter=lambda u: u.rstrip("/") if isinstance(u, str) else u)
    treq: object = _treq
    timeout: float = DEFAULT_TIMEOUT
    reactor: object = None
    max_response_size: int = MAX_RESPONSE_SIZE

    _pool: object = attrs.field(default=None, init=False, repr=False)

    log = Logger()

    def close(self):
        """Close the persistent connections this client opened itself.

        Only when it was made with the default ``treq``: then it keeps its
        own connection pool, so that a node that stops leaves no socket
        behind. A treq passed in is its owner's to close.
        """
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    def _http(self):
        if self.treq is not _treq:
            return self.treq
        if self._pool is None:
            from twisted.web.client import Agent
            reactor = self.reactor
            if reactor is None:
                from twisted.internet import reactor
            self._pool = quiet_pool(reactor)
            self.treq = _treq.client.HTTPClient(Agent(reactor, pool=self._pool))
        return self.treq

    def get_topology(self):
        """Deferred[Topology] of the nodes the directory knows now."""
        async def fetch():
            from nymtx.topology import Topology
            data = await self._request("GET", "/api/presence/topology")
            if not isinstance(data, dict):
                raise DirectoryError(
                    f"directory at {self.base_url} sent a topology that is not a JSON object")
            try:
                return Topology.from_json(data)
            except ValueError as e:
                raise DirectoryError(
                    f"directory at {self.base_url} sent a topology that cannot be read: {e}")
        return Deferred.fromCoroutine(fetch())

    def get_topology_json(self, compact=False):
        """Deferred[dict]: the topology JSON object as the directory sent it,
        for a caller that checks its signatures itself (nymtx.trust.client).
        With *compact*, the form without the gateways' client lists
        (``?clients=none``; a seed directory sends the full one)."""
        path = "/api/presence/topology" + ("?clients=none" if compact else "")

        async def fetch():
            data = await self._request("GET", path)
            if not isinstance(data, dict):
                raise DirectoryError(
                    f"directory at {self.base_url} sent a topology that is not a JSON object")
            return data
        return Deferred.fromCoroutine(fetch())

    def get_gateway_presence(self, identity_text):
        """Deferred[dict]: one gateway's signed presence with its client list
        (``GET /api/presence/gateway?identity=...``), unchecked."""
        from urllib.parse import quote

        async def fetch():
            data = await self._request(
                "GET", "/api/presence/gateway?identity=" + quote(identity_text, safe=""))
            if not isinstance(data, dict):
                raise DirectoryError(f"directory at {self.base_url} sent a gateway presence"
                                     " that is not a JSON object")
            return data
        return Deferred.fromCoroutine(fetch())

    def announce_mixnode(self, presence):
        """POST a mixnode's presence (host, pubKey, layer, version)."""
        return Deferred.fromCoroutine(
            self._request("POST", "/api/presence/mixnodes", presence))

    def announce_gateway(self, presence):
        """POST a gateway's presence (host, clientListener, pubKey, registeredClients, version)."""
        return Deferred.fromCoroutine(
            self._request("POST", "/api/presence/mixproviders", presence))

    def report_metrics(self, metrics):
        """POST a mixnode's counters since its previous report."""
        return Deferred.fromCoroutine(
            self._request("POST", "/api/metrics/mixes", metrics))

    def get_metrics(self):
        """Deferred[list] of the latest metric of each mixnode."""
        async def fetch():
            data = await self._request("GET", "/api/metrics/mixes")
            if not isinstance(data, list):
                raise DirectoryError(
                    f"directory at {self.base_url} sent metrics that are not a JSON array")
            return data
        return Deferred.fromCoroutine(fetch())

    async def _request(self, method, path, body=None):
        url = self.base_url + path
        kwargs = {"timeout": self.timeout}
        if self.reactor is not None:
            kwargs["reactor"] = self.reactor
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            kwargs["headers"] = {b"Content-Type": [b"application/json"]}
        try:
            response = await self._http().request(method, url, **kwargs)
            content = await _read(response, self.max_response_size)
        except _TooLarge:
            raise DirectoryError(
                f"{method} {url}: the answer exceeds {self.max_response_size} bytes")
        except Exception as e:
            raise DirectoryError(
                f"directory at {self.base_url} is unreachable ({method} {path}): "
                f"{_describe(e)}") from e
        if not 200 <= response.code < 300:
            raise DirectoryError(
                f"{method} {url} failed with {response.code}: {_error_text(content)}")
        try:
            return json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise DirectoryError(
                f"{method} {url} answered {response.code} with a body that is not JSON")


async def _read(response, limit):
    chunks = []
    size = [0]

    def collect(data):
        size[0] += len(data)
        if size[0] > limit:
            raise _TooLarge()
        chunks.append(data)
    try:
        await response.collect(collect)
    except _TooLarge:
        raise
    except Exception as e:
        # collect reports the collector's exception wrapped by twisted.web
        if any(isinstance(r, _TooLarge) for r in _reasons(e)):
            raise _TooLarge()
        raise
    return b"".join(chunks)


def _reasons(error):
    from twisted.python.failure import Failure
    out = [error]
    for reason in getattr(error, "reasons", None) or []:
        out.append(reason.value if isinstance(reason, Failure) else reason)
    return out


def _describe(error):
    from twisted.internet.defer import CancelledError
    reasons = getattr(error, "reasons", None)
    if reasons:
        inner = reasons[0]
        error = getattr(inner, "value", inner)
    if isinstance(error, CancelledError):
        # treq cancels a request when its timeout expires
        return "no answer in time"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _error_text(content):
    # The directory says what was wrong as {"error": "..."}; anything else
    # is quoted as it came, shortened.
    try:
        data = json.loads(content.decode("utf-8"))
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return data["error"][:500]
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    text = content[:200].decode("utf-8", "replace")
    return repr(text) if text else "(empty body)"
