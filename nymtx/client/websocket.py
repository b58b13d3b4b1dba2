"""The websocket API at ``ws://127.0.0.1:PORT/mix`` (autobahn on twisted.web)."""

import hmac
import ipaddress
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.exception import Disconnected
from autobahn.websocket.types import ConnectionDeny
import txaio
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.resource import Resource
from twisted.web.server import Site

from nymtx.client.api import MAX_ANSWER, Push, buffered

PATH = b"mix"
#: The frame limit for the default maximum message size: one largest
#: message fits, escaped (nymtx.client.api.frame_limit); a client with another
#: ``maximum_message_size`` gets its dispatcher's ``max_frame``.
MAX_FRAME = MAX_ANSWER


#: Pages on this machine may use the API without being listed.
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def origin_allowed(origin, allowed=()):
    """Whether a websocket handshake with this ``Origin`` header may proceed.

    Listening on loopback does not stop a web page in the user's browser
    from connecting: the browser does it for the page, and says so in the
    Origin header. So a handshake without Origin (a program, not a browser
    page) is served; a page is served only if it comes from this machine:
    http(s)://localhost, 127.0.0.1 or [::1], a ``file://`` page (Electron
    apps send ``Origin: file://``) or the opaque origin ``null`` (what
    Chromium and Firefox send for a page opened from a file), or if its
    origin is in ``[socket] allowed_origins``, where ``"*"`` is any origin.
    """
    if not origin:  # autobahn gives "" when the header is absent
        return True
    origin = origin.strip().lower().rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    if origin in ("null", "file:", "file://localhost"):
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in _LOCAL_HOSTS


def key_matches(shown, api_key):
    """Whether *shown* (text or None) is *api_key*, in constant time."""
    if shown is None:
        return False
    return hmac.compare_digest(shown.encode("utf-8", "replace"), api_key.encode("utf-8"))


def shown_key(request):
    """The API key a websocket handshake shows: ``Authorization: Bearer KEY``
    (programs) or the ``api_key`` query parameter (browser pages, which
    cannot set headers on a websocket)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = request.params.get("api_key") or []
    return values[0] if values else None


def is_loopback(address):
    """True for a TCP peer on 127.0.0.0/8 or ::1, False for anything else."""
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return False
    try:
        return ipaddress.ip_address(address.host.split("%")[0]).is_loopback
    except ValueError:
        return False


class MixWebSocketProtocol(WebSocketServerProtocol):
    # autobahn logs through self.log at debug (its options, the raw headers,
    # a ConnectionDone traceback on every close): a txaio logger drops those
    # unless txaio's level is debug, a twisted Logger would publish them all
    log = txaio.make_logger()

    def onConnect(self, request):
        # The listener binds 127.0.0.1 already; this also covers a listener
        # someone pointed at another interface.
        peer = self.transport.getPeer()
        if not is_loopback(peer):
            self.log.warn("refused websocket peer {peer}", peer=str(peer))
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "only loopback clients are served")
        if request is not None and not origin_allowed(request.origin,
                                                      self.factory.allowed_origins):
            self.log.warn("refused a websocket from the web page at {origin}: add it to"
                          " [socket] allowed_origins to let it use this client",
                          origin=request.origin)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN,
                                 f"origin {request.origin} is not allowed")
        if request is not None and self.factory.api_key and not key_matches(
                shown_key(request), self.factory.api_key):
            self.log.warn("refused a websocket without the API key ([socket] api_key)")
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN,
                                 "this client's API needs its key: an 'Authorization: Bearer"
                                 " KEY' header or ?api_key=KEY in the URL")
        return None

    _push = None

    def onOpen(self):
        # pushed events (after a subscribe): binary messages as binary frames
        self._push = Push(self.factory.dispatcher.core, self._write, binary_frames=True,
                          backlog=lambda: buffered(self.transport),
                          clock=self.factory.reactor)

    def onClose(self, wasClean, code, reason):
        if self._push is not None:
            self._push.close()

    def _write(self, data, is_binary):
        # autobahn raises Disconnected unless the connection is open
        try:
            self.sendMessage(data, isBinary=is_binary)
        except Disconnected:
            return False
        return True

    def onMessage(self, payload, isBinary):
        dispatcher = self.factory.dispatcher
        if isBinary:
            answer = dispatcher.answer_binary(payload, self._push)
        else:
            # at most the frame limit: autobahn refuses to send a longer message
            answer = dispatcher.answer_bytes(payload, self.factory.max_frame, self._push)
        if not self._write(answer.data, False):
            return  # closing: not sent, so a fetch's messages stay in the inbox
        answer.sent()


class MixWebSocketFactory(WebSocketServerFactory):
    protocol = MixWebSocketProtocol

    def __init__(self, dispatcher, reactor=None, allowed_origins=(), api_key=""):
        super().__init__(reactor=reactor)
        self.dispatcher = dispatcher
        self.allowed_origins = tuple(allowed_origins)
        self.api_key = api_key
        self.max_frame = getattr(dispatcher, "max_frame", MAX_FRAME)
        # Over the limit autobahn must end the connection (it cannot skip a
        # message it refused to buffer); failByDrop=False makes that a close
        # frame with code 1009 and a reason rather than a silent TCP reset.
        # allowNullOrigin: autobahn would refuse "Origin: null" and
        # "Origin: file://" (it maps both to null) before onConnect, where
        # origin_allowed decides; setProtocolOptions turns it off whenever
        # it is not passed.
        self.setProtocolOptions(maxFramePayloadSize=self.max_frame,
                                maxMessagePayloadSize=self.max_frame,
                                failByDrop=False,
                                allowNullOrigin=True)


def websocket_site(dispatcher, reactor=None, allowed_origins=(), api_key=""):
    """A twisted.web Site serving the API at /mix (and nothing else)."""
    factory = MixWebSocketFactory(dispatcher, reactor, allowed_origins, api_key)
    root = Resource()
    root.putChild(PATH, WebSocketResource(factory))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
