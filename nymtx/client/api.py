"""The JSON requests of the websocket and TCP APIs, on plain objects.

The shapes are nym v0.5's (send / fetch / getClients / ownDetails / error).
Every bad request gets an ``error`` response saying what is wrong; nothing
a peer sends can raise out of ``handle_text``.

A transport asks for an :class:`Answer` (``answer_bytes``): its encoding
fits the transport's limit, and a fetch takes messages out of the inbox
only when the transport calls ``Answer.sent()`` after handing it over. A
fetch holds as many of the oldest messages as fit; the rest wait for the
next fetch. (Before, a websocket fetch over 64 KiB took every message out,
failed to send, dropped the connection, and the messages were gone.)
"""

import json

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.client.core import SendError
from nymtx.interfaces import IApiDispatcher

REQUEST_TYPES = ("send", "fetch", "getClients", "ownDetails")

#: The largest answer the transports send (a websocket message, a TCP line).
MAX_ANSWER = 64 * 1024
#: A gateway message is at most nymtx.gateway.frames.MAX_MESSAGE (4096)
#: bytes, and JSON text takes at most 6 bytes for one (\u00XX): one message
#: always fits an answer alone, so none can block the ones after it.
_EMPTY_FETCH = len(b'{"type":"fetch","messages":[]}')


@attrs.frozen
class Answer:
    """An encoded response, and what to commit once it has been handed over."""

    response: dict
    data: bytes
    _on_sent: object = None

    def sent(self):
        """The transport took the answer: commit (a fetch deletes its messages)."""
        if self._on_sent is not None:
            self._on_sent()


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
    SendError), ``peek(max_bytes) -> list[(id, bytes)]``, ``delete(ids)``
    and ``clients() -> list[str]``.
    """

    log = Logger()

    core: object

    def answer_bytes(self, data, max_size=MAX_ANSWER):
        """The :class:`Answer` to one request, its encoding at most *max_size* bytes.

        Call ``sent()`` on it once the transport has taken ``data``; until
        then a fetch has removed nothing from the inbox.
        """
        response, on_sent = self._respond_bytes(data, max_size)
        return Answer(response, encode_response(response), on_sent)

    def handle_text(self, text):
        """Response (a dict) to one JSON text request, committed at once."""
        return self._commit(self._respond_text(text, None))

    def handle_bytes(self, data):
        return self._commit(self._respond_bytes(data, None))

    def handle(self, request):
        return self._commit(self._respond(request, None))

    @staticmethod
    def _commit(pair):
        response, on_sent = pair
        if on_sent is not None:
            on_sent()
        return response

    def _respond_bytes(self, data, max_size):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            return error(f"received invalid request. err: not UTF-8 text: {e}"), None
        return self._respond_text(text, max_size)

    def _respond_text(self, text, max_size):
        try:
            request = json.loads(text)
        except RecursionError:
            return error("received invalid request. err: JSON nested too deeply"), None
        except ValueError as e:
            return error(f"received invalid request. err: not valid JSON: {e}"), None
        return self._respond(request, max_size)

    def _respond(self, request, max_size):
        """(response, on_sent or None) for one decoded request."""
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
            if kind == "fetch":
                return self._fetch(request, max_size)
            return handler(request), None
        except _BadRequest as e:
            return error(f"received invalid request. err: {e}"), None
        except SendError as e:
            return error(str(e)), None
        except Exception as e:  # the API must answer, never take the process down
            self.log.failure("request failed")
            return error(f"internal error: {type(e).__name__}"), None

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

    def _fetch(self, request, max_size):
        # Each message's JSON takes at least its own bytes, so a peek of that
        # many raw bytes holds every message that can fit; the exact sizes
        # are counted as they are encoded.
        budget = None if max_size is None else max_size - _EMPTY_FETCH
        messages, ids, used = [], [], 0
        for row_id, body in self.core.peek(budget):
            text = body.decode("utf-8", errors="replace")
            size = len(json.dumps(text, ensure_ascii=False).encode("utf-8")) + bool(messages)
            if budget is not None and used + size > budget:
                break
            used += size
            messages.append(text)
            ids.append(row_id)
        return {"type": "fetch", "messages": messages}, lambda: self.core.delete(ids)

    def _get_clients(self, request):
        return {"type": "getClients", "clients": list(self.core.clients())}

    def _own_details(self, request):
        return {"type": "ownDetails", "address": self.core.address}


def encode_response(response):
    return json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
