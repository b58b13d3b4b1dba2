"""The JSON requests of the websocket and TCP APIs, on plain objects.

The shapes are nym v0.5's (send / fetch / getClients / ownDetails / error),
answered exactly as the seed did, except that a message may be as long as
``[message] maximum_message_size``. Added (docs/client.md): binary messages
(``"data"``: base64 in JSON; binary websocket frames, ``parse_binary_request``),
and ``subscribe``: pushed ``received`` events (``Push``) for an application
that asks for them. Every bad request gets an ``error`` response saying what
is wrong; nothing a peer sends can raise out of ``handle_text``.

A transport asks for an :class:`Answer` (``answer_bytes``): its encoding
fits the transport's limit, and a fetch takes messages out of the inbox
only when the transport calls ``Answer.sent()`` after handing it over. A
fetch holds as many of the oldest messages as fit; the rest wait for the
next fetch. (Before, a websocket fetch over 64 KiB took every message out,
failed to send, dropped the connection, and the messages were gone.)
"""

import base64
import binascii
import json

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.addressing import encode_client_address
from nymtx.client.core import SendError
from nymtx.interfaces import IApiDispatcher
from nymtx.keys import encode_key
from nymtx.message import DEFAULT_MAX_MESSAGE_SIZE, KIND_TEXT, Message

REQUEST_TYPES = ("send", "fetch", "getClients", "ownDetails", "subscribe", "unsubscribe",
                 "sendAnonymous", "reply")


def frame_limit(max_message_size):
    """The largest request or answer (a websocket message, a TCP line) for
    messages of up to *max_message_size* bytes.

    JSON takes at most 6 bytes for one byte of text (``\\u00XX``) and base64
    4 for 3, so one largest message, with its recipient and the JSON around
    it, always fits: a fetch of it can never be too big to send, and nothing
    blocks the messages after it.
    """
    return 6 * max_message_size + 64 * 1024


#: The answer limit for the default maximum message size (1 MiB).
MAX_ANSWER = frame_limit(DEFAULT_MAX_MESSAGE_SIZE)
_EMPTY_FETCH = len(b'{"type":"fetch","messages":[]}')

#: Binary websocket frames (docs/client.md, "Binary frames"): first byte.
BINARY_SEND = 0x00          # 0x00 || recipient key (32) || data
BINARY_SEND_VIA = 0x01      # 0x01 || recipient key (32) || gateway key (32) || data
#: the same with a message id, whose outcome the connection then hears:
BINARY_SEND_ID = 0x02       # 0x02 || id length (u8) || id (UTF-8) || recipient key || data
BINARY_SEND_VIA_ID = 0x03   # 0x03 || id length (u8) || id || recipient key || gateway key || data
#: anonymous replies (docs/surb.md §5)
BINARY_REPLY = 0x04         # 0x04 || sender tag (16) || data
BINARY_SEND_ANONYMOUS = 0x05  # 0x05 || reply blocks (u16) || recipient key (32) || data
#: to the application: a binary message that came with a sender tag
BINARY_RECEIVED_TAGGED = 0x02  # 0x02 || sender tag (16) || data
TAG_SIZE = 16
#: the longest message id (UTF-8 bytes in a binary frame, characters in JSON)
MAX_ID = 200
BINARY_RECEIVED = 0x01      # to the application: 0x01 || data
KEY_SIZE = 32


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


def parse_binary_request(frame):
    """(recipient text, data) of a binary send frame, or ValueError saying why."""
    recipient, data, _ = parse_binary_send(frame)
    return recipient, data


def parse_binary_send(frame):
    """(recipient text, data, id or None) of a binary send frame, or
    ValueError saying why."""
    frame = bytes(frame)
    if not frame:
        raise ValueError("an empty binary frame: its first byte is the request type")
    kind = frame[0]
    message_id = None
    if kind in (BINARY_SEND_ID, BINARY_SEND_VIA_ID):
        if len(frame) < 2:
            raise ValueError(f"a binary send frame 0x{kind:02x} has an id length after its"
                             " type byte")
        size = frame[1]
        if not 1 <= size <= MAX_ID:
            raise ValueError(f"a message id is 1 to {MAX_ID} bytes, not {size}")
        if len(frame) < 2 + size:
            raise ValueError(f"the frame ends inside its {size}-byte message id")
        try:
            message_id = frame[2:2 + size].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the message id is not UTF-8") from None
        # the rest is laid out as frame 0x00 or 0x01
        frame = bytes((kind - 2,)) + frame[2 + size:]
        kind = frame[0]
    if kind == BINARY_SEND:
        if len(frame) < 1 + KEY_SIZE:
            raise ValueError(f"a binary send frame is 0x00, the {KEY_SIZE}-byte recipient key,"
                             f" then the data: {len(frame)} bytes is too short")
        recipient = encode_client_address(frame[1:1 + KEY_SIZE])
        return recipient, frame[1 + KEY_SIZE:], message_id
    if kind == BINARY_SEND_VIA:
        if len(frame) < 1 + 2 * KEY_SIZE:
            raise ValueError(f"a binary send-via frame is 0x01, the {KEY_SIZE}-byte recipient"
                             f" key, its gateway's {KEY_SIZE}-byte key, then the data:"
                             f" {len(frame)} bytes is too short")
        recipient = (encode_client_address(frame[1:1 + KEY_SIZE]) + "@"
                     + encode_key(frame[1 + KEY_SIZE:1 + 2 * KEY_SIZE]))
        return recipient, frame[1 + 2 * KEY_SIZE:], message_id
    raise ValueError(f"unknown binary request type 0x{kind:02x}; allowed: 0x00 (send),"
                     " 0x01 (send via a gateway), 0x02 and 0x03 (the same with an id)")


def outcome_event(message_id, outcome):
    """What a connection that asked hears of a message's outcome (JSON)."""
    return encode_response({"type": outcome, "id": message_id})


def parse_binary_anonymous(frame):
    """(kind, fields) of a binary reply (0x04) or send-anonymous (0x05)
    frame: ("reply", (tag, data)) or ("sendAnonymous", (recipient, surbs,
    data)); None for another type; ValueError saying why it is malformed."""
    frame = bytes(frame)
    if not frame or frame[0] not in (BINARY_REPLY, BINARY_SEND_ANONYMOUS):
        return None
    if frame[0] == BINARY_REPLY:
        if len(frame) < 1 + TAG_SIZE:
            raise ValueError(f"a binary reply frame is 0x04, the {TAG_SIZE}-byte sender tag,"
                             f" then the data: {len(frame)} bytes is too short")
        return "reply", (frame[1:1 + TAG_SIZE], frame[1 + TAG_SIZE:])
    if len(frame) < 3 + KEY_SIZE:
        raise ValueError(f"a binary send-anonymous frame is 0x05, the number of reply blocks"
                         f" (u16), the {KEY_SIZE}-byte recipient key, then the data:"
                         f" {len(frame)} bytes is too short")
    surbs = int.from_bytes(frame[1:3], "big")
    return "sendAnonymous", (encode_client_address(frame[3:3 + KEY_SIZE]), surbs,
                             frame[3 + KEY_SIZE:])


def _tag_text(tag):
    from nymtx.client.core import encode_sender_tag
    return encode_sender_tag(tag)


def received_event(message, binary_frames):
    """What a subscribed connection gets for *message*: (data, is_binary).
    A message with a sender tag (reply blocks came with it, or it is a
    reply) says so in ``senderTag``; one without is the seed's event."""
    tag = getattr(message, "sender_tag", None)
    extra = {} if tag is None else {"senderTag": _tag_text(tag)}
    if message.kind == KIND_TEXT:
        text = message.data.decode("utf-8", errors="replace")
        return encode_response({"type": "received", "message": text, **extra}), False
    if binary_frames:
        if tag is not None:
            return bytes((BINARY_RECEIVED_TAGGED,)) + bytes(tag) + message.data, True
        return bytes((BINARY_RECEIVED,)) + message.data, True
    return encode_response({"type": "received",
                            "data": base64.b64encode(message.data).decode("ascii"),
                            **extra}), False


def buffered(transport):
    """Bytes *transport* holds that the peer has not read yet (a Twisted TCP
    transport's write buffer; 0 for a transport that does not say)."""
    try:
        return (len(transport.dataBuffer) - transport.offset) + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0


#: a subscriber's unread events past which no more are pushed until it reads
PUSH_HIGH_WATER = 4 << 20
#: seconds between looks at a subscriber that has not read its events
PUSH_RETRY = 0.1


@attrs.define(eq=False)
class Push:
    """Pushes the inbox's messages to one connection that asked (``subscribe``).

    *write(data, is_binary)* hands one event to the transport and returns
    False when it cannot (the connection is closing). A message leaves the
    inbox only once its event was handed over, so a connection that drops
    loses nothing: the message waits for the next fetch or subscriber.
    *binary_frames*: binary messages as binary websocket frames; else as
    ``{"type":"received","data":"<base64>"}``.

    *backlog()* (optional) is how many bytes the connection holds unread:
    past ``high_water`` nothing more is pushed (the messages wait in the
    inbox, whose bound then pauses the pulls from the gateway) and the push
    looks again every PUSH_RETRY seconds on *clock*. So an application that
    subscribes and never reads cannot make the client's memory grow.
    """

    log = Logger()

    core: object
    write: object
    binary_frames: bool = False
    backlog: object = None
    clock: object = None
    high_water: int = PUSH_HIGH_WATER
    _cancel: object = None
    _draining: bool = False
    _retry: object = None
    #: outcome events: the ids this connection sent with, or every one
    #: (subscribe with "outcomes": true)
    _ids: set = attrs.field(factory=set)
    _all_outcomes: bool = False
    _cancel_outcomes: object = None

    def watch_outcome(self, message_id=None):
        """Tell this connection the outcome of *message_id* (None: of every
        message, restored ones included)."""
        if message_id is None:
            if not self._all_outcomes and self._cancel_outcomes is not None:
                # listening for ids only: again as a listener of every outcome,
                # which gets those of restored messages that came before it
                self._cancel_outcomes()
                self._cancel_outcomes = None
            self._all_outcomes = True
        else:
            self._ids.add(message_id)
        if self._cancel_outcomes is None and hasattr(self.core, "on_outcome"):
            self._cancel_outcomes = self.core.on_outcome(self._outcome,
                                                         every=self._all_outcomes)

    def _outcome(self, message_id, outcome):
        if not (self._all_outcomes or message_id in self._ids):
            return
        self._ids.discard(message_id)
        if not self.write(outcome_event(message_id, outcome), False):
            self.close()

    def close(self):
        """The connection is gone: no more events of any kind."""
        self.stop()
        cancel, self._cancel_outcomes = self._cancel_outcomes, None
        if cancel is not None:
            cancel()
        self._ids.clear()
        self._all_outcomes = False

    @property
    def active(self):
        return self._cancel is not None

    def start(self):
        if self._cancel is None:
            self._cancel = self.core.watch_inbox(self.drain)
        self.drain()

    def stop(self):
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _full(self):
        if self.backlog is None or self.backlog() <= self.high_water:
            return False
        if self.clock is not None and (self._retry is None or not self._retry.active()):
            self._retry = self.clock.callLater(PUSH_RETRY, self.drain)
        return True

    def drain(self):
        if self._draining or self._cancel is None:
            return  # a write that re-enters (a synchronous transport) or stopped
        self._draining = True
        try:
            budget = getattr(self.core, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
            while self._cancel is not None:
                # a budget of one largest message: at least one each time
                rows = self.core.peek(budget)
                if not rows:
                    return
                for row_id, message in rows:
                    if self._full():
                        return
                    data, is_binary = received_event(_as_message(message), self.binary_frames)
                    if not self.write(data, is_binary):
                        self.stop()
                        return
                    self.core.delete([row_id])
        finally:
            self._draining = False


def _as_message(body):
    return body if isinstance(body, Message) else Message(KIND_TEXT, bytes(body))


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
    _push: object = attrs.field(default=None, init=False)

    @property
    def max_frame(self):
        """The largest request or answer for this client's maximum message size."""
        return frame_limit(getattr(self.core, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE))

    def answer_bytes(self, data, max_size=None, push=None):
        """The :class:`Answer` to one request, its encoding at most *max_size*
        bytes (default ``max_frame``).

        Call ``sent()`` on it once the transport has taken ``data``; until
        then a fetch has removed nothing from the inbox (and a subscribe
        pushes nothing). *push* is the connection's :class:`Push`, for
        ``subscribe``; without one, subscribe is an error.
        """
        max_size = self.max_frame if max_size is None else max_size
        self._push = push
        try:
            response, on_sent = self._respond_bytes(data, max_size)
        finally:
            self._push = None
        return Answer(response, encode_response(response), on_sent)

    def answer_binary(self, frame, push=None):
        """The :class:`Answer` to one binary websocket frame (a binary send);
        *push* is the connection's :class:`Push`, which hears the outcome of
        a send with an id."""
        self._push = push
        try:
            anonymous = parse_binary_anonymous(frame)
            if anonymous is not None and anonymous[0] == "reply":
                tag, data = anonymous[1]
                response = self._queue_reply(tag, Message.from_bytes(data), None)
            elif anonymous is not None:
                recipient, surbs, data = anonymous[1]
                response = self._queue(recipient, Message.from_bytes(data), None, surbs)
            else:
                recipient, data, message_id = parse_binary_send(frame)
                response = self._queue(recipient, Message.from_bytes(data), message_id)
        except (SendError, _BadRequest) as e:
            # _BadRequest: a reply frame to a client that cannot reply (the
            # text requests' refusal, given here the same way)
            response = error(str(e))
        except ValueError as e:
            response = error(f"received invalid request. err: {e}")
        except Exception as e:
            self.log.failure("binary request failed")
            response = error(f"internal error: {type(e).__name__}")
        finally:
            self._push = None
        return Answer(response, encode_response(response))

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
            handler = {"send": self._send, "sendAnonymous": self._send_anonymous,
                       "reply": self._reply, "fetch": self._fetch,
                       "getClients": self._get_clients,
                       "ownDetails": self._own_details,
                       "subscribe": self._subscribe,
                       "unsubscribe": self._unsubscribe}.get(kind)
            if handler is None:
                raise _BadRequest(f"unknown request type {kind[:60]!r};"
                                  f" allowed: {', '.join(REQUEST_TYPES)}")
            if kind == "fetch":
                return self._fetch(request, max_size)
            if kind in ("subscribe", "unsubscribe"):
                return handler(request)
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

    def _send_anonymous(self, request):
        surbs = request.get("replySurbs", 5)
        if not isinstance(surbs, int) or isinstance(surbs, bool):
            raise _BadRequest(f"field 'replySurbs' must be a whole number, not {_json_type(surbs)}")
        return self._send(request, surbs)

    def _reply(self, request):
        from nymtx.client.core import parse_sender_tag
        tag = parse_sender_tag(self._field(request, "senderTag"))
        message_id = self._message_id(request)
        message = self._message_of(request)
        return self._queue_reply(tag, message, message_id)

    def _queue_reply(self, tag, message, message_id):
        if not hasattr(self.core, "reply"):
            raise _BadRequest("this client cannot reply")
        d = self.core.reply(tag, message, id=message_id) if message_id is not None \
            else self.core.reply(tag, message)
        if message_id is not None and self._push is not None:
            self._push.watch_outcome(message_id)
        d.addErrback(lambda f: self.log.warn("reply not sent: {why}", why=f.getErrorMessage()))
        return {"type": "reply"}

    def _message_id(self, request):
        if "id" not in request:
            return None
        message_id = self._field(request, "id")
        if not 1 <= len(message_id) <= MAX_ID:
            raise _BadRequest(f"field 'id' is 1 to {MAX_ID} characters, not {len(message_id)}")
        try:
            message_id.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadRequest("field 'id' holds text that is not valid Unicode")
        return message_id

    def _message_of(self, request):
        """The text ('message') or binary ('data', base64) of a request."""
        if "data" in request:
            if "message" in request:
                raise _BadRequest("a send has 'message' (text) or 'data' (base64), not both")
            data = self._field(request, "data")
            try:
                raw = base64.b64decode(data.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error, ValueError) as e:
                raise _BadRequest(f"field 'data' is not base64: {e}")
            return Message.from_bytes(raw)
        message = self._field(request, "message")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadRequest("field 'message' holds text that is not valid Unicode")
        return message

    def _send(self, request, surbs=None):
        message_id = None
        if "id" in request:
            # opt-in: this connection hears "delivered" or "failed" for it
            message_id = self._field(request, "id")
            if not 1 <= len(message_id) <= MAX_ID:
                raise _BadRequest(f"field 'id' is 1 to {MAX_ID} characters, not"
                                  f" {len(message_id)}")
            try:
                message_id.encode("utf-8")
            except UnicodeEncodeError:
                raise _BadRequest("field 'id' holds text that is not valid Unicode")
        if "data" in request:
            # binary: base64 of the bytes (docs/client.md)
            if "message" in request:
                raise _BadRequest("a send has 'message' (text) or 'data' (base64), not both")
            data = self._field(request, "data")
            recipient = self._field(request, "recipient_address")
            try:
                raw = base64.b64decode(data.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error, ValueError) as e:
                raise _BadRequest(f"field 'data' is not base64: {e}")
            return self._queue(recipient, Message.from_bytes(raw), message_id, surbs)
        message = self._field(request, "message")
        recipient = self._field(request, "recipient_address")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can carry lone surrogates, which no UTF-8 message can hold.
            raise _BadRequest("field 'message' holds text that is not valid Unicode")
        return self._queue(recipient, message, message_id, surbs)

    def _queue(self, recipient, message, message_id=None, surbs=None):
        if surbs is not None:
            if not hasattr(self.core, "send_anonymous"):
                raise _BadRequest("this client cannot send anonymously")
            d = self.core.send_anonymous(recipient, message, surbs, id=message_id)
        elif message_id is None:
            # as the seed: nothing new on the connection
            d = self.core.send(recipient, message)
        else:
            d = self.core.send(recipient, message, id=message_id)
        # a send with an id, anonymous or not, tells this connection its outcome
        if message_id is not None and self._push is not None:
            self._push.watch_outcome(message_id)
        # A reply goes out once queued, as nym did; a message that never leaves
        # (the client stopped) is logged, not left as an unhandled error.
        d.addErrback(lambda f: self.log.warn("message not sent: {why}",
                                             why=f.getErrorMessage()))
        return {"type": "send"}

    def _subscribe(self, request):
        push = self._push
        if push is None:
            raise _BadRequest("subscribe needs a connection that can push (the websocket"
                              " or TCP API)")
        outcomes = request.get("outcomes", False)
        if not isinstance(outcomes, bool):
            raise _BadRequest(f"field 'outcomes' must be true or false, not {_json_type(outcomes)}")
        if outcomes:
            push.watch_outcome(None)
        # pushing starts once the answer is out: it comes first on the wire
        return {"type": "subscribe"}, push.start

    def _unsubscribe(self, request):
        push = self._push
        if push is None:
            raise _BadRequest("unsubscribe needs a connection that can push")
        push.stop()
        return {"type": "unsubscribe"}, None

    def _fetch(self, request, max_size):
        # Each message's JSON takes at least its own bytes, so a peek of that
        # many raw bytes holds every message that can fit; the exact sizes
        # are counted as they are encoded.
        budget = None if max_size is None else max_size - _EMPTY_FETCH
        messages, ids, used = [], [], 0
        for row_id, message in self.core.peek(budget):
            # A binary message is given as text too, as the seed gave any
            # bytes: a client that wants its bytes subscribes (docs/client.md).
            text = _as_message(message).data.decode("utf-8", errors="replace")
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
