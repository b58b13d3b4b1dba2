"""The directory's HTTP face: a twisted.web resource over a Registry.

Routes are matched on the path below wherever the resource is mounted, so
the same resource serves a whole Site or sits under a prefix of another.
Every answer but the HTML page is JSON; every error is ``{"error": "..."}``
with the status that says what kind of error it is.
"""

import json

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from nymtx.directory import page
from nymtx.directory.presence import (
    MAX_BODY_SIZE, BodyError, parse_gateway, parse_metrics, parse_mixnode)
from nymtx.directory.registry import DirectoryFull

# Error texts quote untrusted input; keep answers and logs bounded.
MAX_ERROR_LENGTH = 300


class LimitedRequest(Request):
    """A request that keeps at most one byte more of its body than the limit.

    The resource sees that extra byte and answers 413; the rest of an
    oversized body is read off the socket and dropped, never buffered.
    """

    _body_seen = 0

    def handleContentChunk(self, data):
        room = MAX_BODY_SIZE + 1 - self._body_seen
        self._body_seen += len(data)
        if room > 0:
            super().handleContentChunk(data[:room])


class DirectorySite(Site):
    """A Site whose access log is at debug level.

    Every node announces itself every 1.5 s: a line per request at info
    level would bury everything else.
    """

    _log = Logger()

    def log(self, request):
        self._log.debug("{method} {uri} {code}",
                        method=request.method.decode("ascii", "replace"),
                        uri=request.uri.decode("ascii", "replace"), code=request.code)


def make_site(registry):
    """A Site serving the directory of *registry* at its root."""
    site = DirectorySite(DirectoryResource(registry), requestFactory=LimitedRequest)
    site.displayTracebacks = False
    return site


class DirectoryResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, registry):
        super().__init__()
        self.registry = registry
        # a registry may parse its own bodies (nymtx.directory.signed takes
        # signed presences); the plain Registry takes the seed's
        parsers = getattr(registry, "presence_parsers", None) or {
            "mixnode": parse_mixnode, "gateway": parse_gateway, "metrics": parse_metrics}
        announce = {"mixnode": (parsers["mixnode"], registry.add_mixnode),
                    "gateway": (parsers["gateway"], registry.add_gateway),
                    "metrics": (parsers["metrics"], registry.add_metrics)}
        self._routes = {
            "/": {"GET": self._page},
            "/api/healthcheck": {"GET": self._healthcheck},
            "/api/presence/topology": {"GET": self._topology},
            "/api/presence/gateway": {"GET": self._gateway},
            "/api/presence/mixnodes": {"POST": self._poster(*announce["mixnode"])},
            "/api/presence/mixproviders": {"POST": self._poster(*announce["gateway"])},
            # nym v0.7 renamed mixproviders to gateways.
            "/api/presence/gateways": {"POST": self._poster(*announce["gateway"])},
            "/api/metrics/mixes": {"GET": self._metrics,
                                   "POST": self._poster(*announce["metrics"])},
        }

    def render(self, request):
        path = _route_path(request.postpath)
        methods = self._routes.get(path)
        if methods is None:
            return _json(request, 404, {"error": _bounded(f"no such endpoint: {path}")})
        method = request.method.decode("ascii", "replace")
        # twisted.web drops the body of a HEAD answer itself.
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            request.setHeader(b"Allow", allowed.encode("ascii"))
            return _json(request, 405, {"error": _bounded(
                f"method {method} is not allowed on {path}; use {allowed}")})
        return handler(request)

    def _healthcheck(self, request):
        return _json(request, 200, {"ok": True})

    def _topology(self, request):
        # ?clients=none: the signed topology without the gateways' client
        # lists (docs/trust.md); a registry that has no such form, like a
        # seed directory, ignores the query
        compact = getattr(self.registry, "compact_topology", None)
        if compact is not None and request.args.get(b"clients") == [b"none"]:
            return _json(request, 200, compact())
        return _json(request, 200, self.registry.topology())

    def _gateway(self, request):
        # ?identity=<base58>: one gateway's signed presence with its client
        # list, so that a client of the compact topology fetches only the
        # lists it lacks (docs/directory.md, "One gateway's clients")
        find = getattr(self.registry, "gateway_presence", None)
        if find is None:
            return _json(request, 404, {"error": "this directory has no signed presences:"
                                        " the lists are in /api/presence/topology"})
        values = request.args.get(b"identity")
        if not values or len(values) != 1:
            return _json(request, 400, {"error": "give ?identity=<the gateway's identity key,"
                                        " base58>"})
        try:
            found = find(values[0].decode("ascii"))
        except (UnicodeDecodeError, ValueError) as e:
            return _json(request, 400, {"error": _bounded(f"identity: {e}")})
        if found is None:
            return _json(request, 404, {"error": "no such gateway here"})
        return _json(request, 200, found)

    def _metrics(self, request):
        return _json(request, 200, self.registry.metrics())

    def _page(self, request):
        body = page.render(self.registry.topology(), self.registry.rates(),
                           self.registry.now_ns())
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        # The page has no script: node-supplied text could never run even
        # if escaping failed.
        request.setHeader(b"Content-Security-Policy",
                          b"default-src 'none'; style-src 'unsafe-inline'")
        return body

    def _poster(self, parse, add):
        def post(request):
            body = request.content.read(MAX_BODY_SIZE + 1)
            if len(body) > MAX_BODY_SIZE:
                return _json(request, 413, {
                    "error": f"the body exceeds the limit of {MAX_BODY_SIZE} bytes"})
            try:
                add(parse(body))
            except BodyError as e:
                why = _bounded(str(e))
                self.log.debug("refused {path} from {peer}: {why}",
                               path=_route_path(request.postpath),
                               peer=_peer(request), why=why)
                return _json(request, 400, {"error": why})
            except DirectoryFull as e:
                return _json(request, 503, {"error": str(e)})
            return _json(request, 201, {"ok": True})
        return post


def _route_path(postpath):
    segments = [s.decode("utf-8", "replace") for s in postpath]
    while segments and segments[-1] == "":
        segments.pop()
    return "/" + "/".join(segments)


def _bounded(text):
    if len(text) > MAX_ERROR_LENGTH:
        return text[:MAX_ERROR_LENGTH] + "…"
    return text


def _peer(request):
    peer = request.getClientAddress()
    return getattr(peer, "host", str(peer))


def _json(request, code, value):
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return json.dumps(value).encode("utf-8")
