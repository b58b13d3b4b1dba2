"""A small client of a nym client's websocket API, for scripts and tests.

    python -m nymtx.apiclient ws://127.0.0.1:9001/mix '{"type": "ownDetails"}'

sends each JSON request given and prints each response on its own line.
In Python::

    api = await connect_api(reactor, "ws://127.0.0.1:9001/mix")
    details = await api.request({"type": "ownDetails"})
    await api.close()
"""

import json
import sys
from collections import deque
from urllib.parse import urlparse

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint


USAGE = """\
usage: python -m nymtx.apiclient ws://127.0.0.1:9001/mix 'JSON' ['JSON' …]

Sends each JSON request to the nym client's websocket API and prints each
answer as one line of JSON, e.g.
    python -m nymtx.apiclient ws://127.0.0.1:9001/mix '{"type": "ownDetails"}'
Exit status 1 if the websocket cannot be opened or closes early."""


class ApiError(Exception):
    """The connection failed or closed before an answer came."""


class _ApiProtocol(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        waiters = self.factory.waiting
        if not waiters:
            return
        d = waiters.popleft()
        try:
            answer = json.loads(payload.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError included
            d.errback(ApiError(f"the answer is not JSON text: {e}"))
            return
        d.callback(answer)

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(ApiError(f"websocket refused: {reason or code}"))
        waiters, self.factory.waiting = self.factory.waiting, deque()
        for d in waiters:
            d.errback(ApiError(f"the websocket closed before the answer came: {reason or code}"))
        self.factory.closed.callback(None)


class ApiConnection:
    """One websocket to a nym client; answers come back in request order."""

    def __init__(self, protocol, factory):
        self.protocol = protocol
        self._factory = factory

    def request(self, message):
        """Send *message* (a dict, or raw text) and return Deferred[dict]."""
        if self._factory.closed.called:
            # no answer can come on a closed websocket: waiting would be for ever
            return fail(ApiError("the websocket is closed"))
        d = Deferred()
        self._factory.waiting.append(d)
        text = message if isinstance(message, str) else json.dumps(message)
        self.protocol.sendMessage(text.encode("utf-8"))
        return d

    def send_binary(self, data):
        """A binary frame, which the API answers with an error."""
        if self._factory.closed.called:
            return fail(ApiError("the websocket is closed"))
        d = Deferred()
        self._factory.waiting.append(d)
        self.protocol.sendMessage(data, isBinary=True)
        return d

    def close(self):
        """Deferred that fires once the connection is closed."""
        if not self._factory.closed.called:
            self.protocol.sendClose()
        return self._factory.closed


async def connect_api(reactor, url, origin=None, api_key=None):
    """An ApiConnection to the websocket at *url* (``ws://host:port/mix``).

    *origin*, if given, is sent as the ``Origin`` header, as a browser page
    would (a program sends none). *api_key*, if given, is shown as
    ``Authorization: Bearer KEY`` (the client's ``[socket] api_key``).
    """
    parsed = urlparse(url)
    try:
        port = parsed.port  # raises for a port out of range or not a number
    except ValueError:
        port = None
    if parsed.scheme != "ws" or not parsed.hostname or not port:
        raise ApiError(f"{url!r} is not a ws://host:port/path URL")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    factory = WebSocketClientFactory(url, origin=origin, headers=headers)
    factory.protocol = _ApiProtocol
    factory.opened = Deferred()
    factory.closed = Deferred()
    factory.waiting = deque()
    endpoint = HostnameEndpoint(reactor, parsed.hostname, port)
    try:
        await endpoint.connect(factory)
    except Exception as e:
        raise ApiError(f"cannot connect to {url}: {e}")
    protocol = await factory.opened
    return ApiConnection(protocol, factory)


def _is_api_url(url):
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        return False
    return parsed.scheme == "ws" and bool(parsed.hostname) and bool(port)


def main(argv=None):
    from twisted.internet import task

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(argv) < 2 or not _is_api_url(argv[0]):
        if argv:
            print(f"nymtx.apiclient: {argv[0]!r} is not a ws://host:port/path URL"
                  if not _is_api_url(argv[0]) else "nymtx.apiclient: no request given",
                  file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2

    async def run(reactor):
        try:
            api = await connect_api(reactor, argv[0])
            for text in argv[1:]:
                print(json.dumps(await api.request(text)), flush=True)
            await api.close()
        except ApiError as e:
            print(f"nymtx.apiclient: {e}", file=sys.stderr)
            raise SystemExit(1)

    def go(reactor):
        return Deferred.fromCoroutine(run(reactor))

    try:
        task.react(go)
    except SystemExit as e:
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
