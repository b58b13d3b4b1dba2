"""The TCP API: the websocket API's JSON objects, one per line."""

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from nymtx.client.api import encode_response, error
from nymtx.client.websocket import MAX_FRAME, is_loopback


class JsonLinesProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_FRAME

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._skipping = False
        self._pending = None

    def dataReceived(self, data):
        super().dataReceived(data)
        # LineReceiver stops at an over-long line; carry on with what followed.
        while self._pending is not None and not self.transport.disconnecting:
            rest, self._pending = self._pending, None
            super().dataReceived(rest)

    def lineReceived(self, line):
        if self._skipping:
            # The tail of an over-long line already answered with an error.
            self._skipping = False
            return
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        answer = self.dispatcher.answer_bytes(line, MAX_FRAME)
        if self.transport.disconnecting or not self.connected:
            return  # cannot be sent: a fetch's messages stay in the inbox
        self.sendLine(answer.data)
        answer.sent()

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
    log = Logger()

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def buildProtocol(self, addr):
        if not is_loopback(addr):
            self.log.warn("refused TCP API peer {peer}", peer=str(addr))
            return None
        proto = JsonLinesProtocol(self.dispatcher)
        proto.factory = self
        return proto
