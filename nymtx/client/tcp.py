"""The TCP API: the websocket API's JSON objects, one per line.

Each connection is a streaming producer of its transport, as the gateway's
client side is: when the peer does not read its answers and the transport's
buffer fills, the protocol stops handling requests and stops reading, so
the requests the peer keeps sending wait in its socket, not in the client's
memory. A peer that half-closes after its requests still gets every answer
(the last request may lack its newline), then the connection is closed.
"""

import json

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from nymtx.client.api import Push, buffered, encode_response, error
from nymtx.listening import handshake_done
from nymtx.client.websocket import MAX_FRAME, is_loopback, key_matches


@implementer(IHalfCloseableProtocol)
class JsonLinesProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_FRAME

    def __init__(self, dispatcher, api_key=""):
        self.dispatcher = dispatcher
        # with an API key, the first request must be {"type": "auth", "api_key": KEY}
        self.api_key = api_key
        self._authenticated = not api_key
        # one line holds one largest message, escaped
        self.MAX_LENGTH = getattr(dispatcher, "max_frame", MAX_FRAME)
        self._skipping = False
        self._pending = None
        self._read_closed = False
        self._push = None

    def connectionMade(self):
        # pauseProducing/resumeProducing come from LineReceiver: paused, it
        # handles no line and pauses the transport's reading
        self.transport.registerProducer(self, True)
        # pushed events (after a subscribe): binary messages as base64 JSON
        self._push = Push(self.dispatcher.core, self._write,
                          backlog=lambda: buffered(self.transport),
                          clock=getattr(getattr(self, "factory", None), "reactor", None))

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self._push is not None:
            self._push.close()

    def _write(self, data, is_binary):
        if self.transport.disconnecting or not self.connected:
            return False
        self.sendLine(data)
        return True

    def dataReceived(self, data):
        super().dataReceived(data)
        # LineReceiver stops at an over-long line; carry on with what followed.
        while self._pending is not None:
            rest, self._pending = self._pending, None
            if self.paused or self.transport.disconnecting:
                # resumeProducing hands it back to dataReceived
                self._buffer = rest + self._buffer
                return
            super().dataReceived(rest)
        if self._read_closed:
            self._finish()

    def resumeProducing(self):
        super().resumeProducing()
        if self._read_closed:
            self._finish()

    # IHalfCloseableProtocol

    def readConnectionLost(self):
        self._read_closed = True
        self._finish()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    def _finish(self):
        """After the peer's end of stream: answer what is left, then close."""
        if self.paused or self.transport.disconnecting or self._pending is not None:
            return
        if self._buffer:
            last, self._buffer = self._buffer, b""
            if len(last) > self.MAX_LENGTH:
                self.lineLengthExceeded(last)
            else:
                self.lineReceived(last)
            if self.paused:
                return
        self.transport.loseConnection()

    def lineReceived(self, line):
        if self._skipping:
            # The tail of an over-long line already answered with an error.
            self._skipping = False
            return
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        if not self._authenticated:
            self._authenticate(line)
            return
        answer = self.dispatcher.answer_bytes(line, self.MAX_LENGTH, self._push)
        if self.transport.disconnecting or not self.connected:
            return  # cannot be sent: a fetch's messages stay in the inbox
        self.sendLine(answer.data)
        answer.sent()

    def _authenticate(self, line):
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if (isinstance(request, dict) and request.get("type") == "auth"
                and isinstance(request.get("api_key"), str)
                and key_matches(request["api_key"], self.api_key)):
            self._authenticated = True
            handshake_done(self.transport)   # the listener's deadline was for this
            self._reply({"type": "auth"})
            return
        self.factory.log.warn("refused a TCP API connection without the API key")
        self._reply(error('this client\'s API needs its key: send {"type": "auth",'
                          ' "api_key": KEY} first'))
        self.transport.loseConnection()

    def _reply(self, response):
        self.sendLine(encode_response(response))

    def lineLengthExceeded(self, line):
        head, sep, rest = line.partition(self.delimiter)
        if not self._skipping:
            self._reply(error(
                f"request line too long: the maximum is {self.MAX_LENGTH} bytes"))
        if sep:
            # LineReceiver handed over the line and everything after it.
            self._skipping = False
            self._pending = rest
        else:
            # No newline yet: drop the rest of this line when it comes.
            self._skipping = True


class JsonLinesFactory(Factory):
    """Builds a protocol per loopback peer; others are refused (None)."""

    log = Logger()
    noisy = False

    def __init__(self, dispatcher, api_key="", reactor=None):
        self.dispatcher = dispatcher
        self.api_key = api_key
        if reactor is None:
            from twisted.internet import reactor
        # times a subscriber's push that waits for it to read
        self.reactor = reactor

    def buildProtocol(self, addr):
        if not is_loopback(addr):
            self.log.warn("refused TCP API peer {peer}", peer=str(addr))
            return None
        proto = JsonLinesProtocol(self.dispatcher, self.api_key)
        proto.factory = self
        return proto
