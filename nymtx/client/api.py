"""The JSON requests of the websocket and TCP APIs, on plain objects.

The shapes are nym v0.5's (send / fetch / getClients / ownDetails / error).
Every bad request gets an ``error`` response saying what is wrong; nothing
a peer sends can raise out of ``handle_text``.
"""

import json

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.client.core import SendError
from nymtx.interfaces import IApiDispatcher

REQUEST_TYPES = ("send", "fetch", "getClients", "ownDetails")


def error(message):
    return {"type": "error", "message": message}


def _json_type(value):
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            int: "number", float: "number", type(None): "null"}.get(type(value), "value")


class _BadRequest(Exception):
    pass


@implementer(IApiDispatcher)
@attrs.define(eq=False)
class ApiDispatcher:
    """Turns one request into one response, against a ClientCore-like object.

    ``core`` needs ``address``, ``send(recipient, message)`` (raising
    SendError), ``fetch() -> list[bytes]`` and ``clients() -> list[str]``.
    """

    log = Logger()

    core: object

    def handle_text(self, text):
        """Response (a dict) to one JSON text request."""
        try:
            request = json.loads(text)
        except RecursionError:
            return error("received invalid request. err: JSON nested too deeply")
        except ValueError as e:
            return error(f"received invalid request. err: not valid JSON: {e}")
        return self.handle(request)

    def handle_bytes(self, data):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            return error(f"received invalid request. err: not UTF-8 text: {e}")
        return self.handle_text(text)

    def handle(self, request):
        try:
            if not isinstance(request, dict):
                raise _BadRequest(f"a request is a JSON object, not {_json_type(request)}")
            kind = self._field(request, "type")
            handler = {"send": self._send, "fetch": self._fetch,
                       "getClients": self._get_clients,
                       "ownDetails": self._own_details}.get(kind)
            if handler is None:
                raise _BadRequest(f"unknown request type {kind[:60]!r};"
                                  f" allowed: {', '.join(REQUEST_TYPES)}")
            return handler(request)
        except _BadRequest as e:
            return error(f"received invalid request. err: {e}")
        except SendError as e:
            return error(str(e))
        except Exception as e:  # the API must answer, never take the process down
            self.log.failure("request failed")
            return error(f"internal error: {type(e).__name__}")

    @staticmethod
    def _field(request, name):
        if name not in request:
            raise _BadRequest(f"missing field {name!r}")
        value = request[name]
        if not isinstance(value, str):
            raise _BadRequest(f"field {name!r} must be a string, not {_json_type(value)}")
        return value

    def _send(self, request):
        message = self._field(request, "message")
        recipient = self._field(request, "recipient_address")
        try:
            encoded = message.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can carry lone surrogates, which no UTF-8 message can hold.
            raise _BadRequest("field 'message' holds text that is not valid Unicode")
        d = self.core.send(recipient, encoded)
        # A reply goes out once queued, as nym did; a message that never leaves
        # (the client stopped) is logged, not left as an unhandled error.
        d.addErrback(lambda f: self.log.warn("message not sent: {why}",
                                             why=f.getErrorMessage()))
        return {"type": "send"}

    def _fetch(self, request):
        messages = [body.decode("utf-8", errors="replace") for body in self.core.fetch()]
        return {"type": "fetch", "messages": messages}

    def _get_clients(self, request):
        return {"type": "getClients", "clients": list(self.core.clients())}

    def _own_details(self, request):
        return {"type": "ownDetails", "address": self.core.address}


def encode_response(response):
    return json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
