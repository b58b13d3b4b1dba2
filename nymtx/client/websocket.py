"""The websocket API at ``ws://127.0.0.1:PORT/mix`` (autobahn on twisted.web)."""

import ipaddress

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from nymtx.client.api import encode_response, error

PATH = b"mix"
#: Far above any valid request (975 bytes of message, escaped, plus a key).
MAX_FRAME = 64 * 1024


def is_loopback(address):
    """True for a TCP peer on 127.0.0.0/8 or ::1, False for anything else."""
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return False
    try:
        return ipaddress.ip_address(address.host.split("%")[0]).is_loopback
    except ValueError:
        return False


class MixWebSocketProtocol(WebSocketServerProtocol):
    log = Logger()

    def onConnect(self, request):
        # The listener binds 127.0.0.1 already; this also covers a listener
        # someone pointed at another interface.
        peer = self.transport.getPeer()
        if not is_loopback(peer):
            self.log.warn("refused websocket peer {peer}", peer=str(peer))
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "only loopback clients are served")
        return None

    def onMessage(self, payload, isBinary):
        if isBinary:
            response = error("binary messages aren't supported: send JSON as a text frame")
        else:
            response = self.factory.dispatcher.handle_bytes(payload)
        self.sendMessage(encode_response(response), isBinary=False)


class MixWebSocketFactory(WebSocketServerFactory):
    protocol = MixWebSocketProtocol

    def __init__(self, dispatcher, reactor=None):
        super().__init__(reactor=reactor)
        self.dispatcher = dispatcher
        # Over MAX_FRAME autobahn must end the connection (it cannot skip a
        # message it refused to buffer); failByDrop=False makes that a close
        # frame with code 1009 and a reason rather than a silent TCP reset.
        self.setProtocolOptions(maxFramePayloadSize=MAX_FRAME,
                                maxMessagePayloadSize=MAX_FRAME,
                                failByDrop=False)


def websocket_site(dispatcher, reactor=None):
    """A twisted.web Site serving the API at /mix (and nothing else)."""
    factory = MixWebSocketFactory(dispatcher, reactor)
    root = Resource()
    root.putChild(PATH, WebSocketResource(factory))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
