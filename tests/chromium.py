"""A headless Chromium driven over the DevTools protocol (no extra package).

Chromium is started with ``--remote-debugging-port=0``; it writes the port
it chose and the browser's websocket path to ``DevToolsActivePort`` in its
profile directory. One autobahn websocket to the browser carries every
command; pages are targets attached with ``flatten`` so that each command
names its page by ``sessionId``.
"""

import itertools
import json
import os
import shutil

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-port=0", "--window-size=1200,800")


def find_chromium():
    """The path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsError(Exception):
    pass


class _Output(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = Deferred()
        self.output = b""

    def outReceived(self, data):
        self.output = (self.output + data)[-20000:]

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value)


class _DevTools(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        message = json.loads(payload.decode("utf-8"))
        waiter = self.factory.waiting.pop(message.get("id"), None)
        if waiter is None:
            return  # an event: nothing here subscribes to any
        if "error" in message:
            waiter.errback(DevToolsError(message["error"]))
        else:
            waiter.callback(message.get("result", {}))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(DevToolsError(f"devtools refused: {reason}"))
        waiting, self.factory.waiting = self.factory.waiting, {}
        for d in waiting.values():
            d.errback(DevToolsError(f"devtools closed: {reason}"))


class Chromium:
    """One headless browser; ``await Chromium.start(reactor, profile)``."""

    def __init__(self, reactor, process, output, socket):
        self.reactor = reactor
        self.process = process
        self.output = output
        self.socket = socket
        self._ids = itertools.count(1)

    @classmethod
    async def start(cls, reactor, profile, executable=None, timeout=30.0):
        executable = executable or find_chromium()
        os.makedirs(profile, exist_ok=True)
        output = _Output()
        args = [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        process = reactor.spawnProcess(output, executable, args, env=os.environ.copy())
        active = os.path.join(profile, "DevToolsActivePort")
        deadline = reactor.seconds() + timeout
        lines = []
        while len(lines) < 2:
            if output.ended.called or reactor.seconds() > deadline:
                if not output.ended.called:
                    process.signalProcess("KILL")
                raise DevToolsError("chromium did not start: "
                                    + output.output.decode("utf-8", "replace")[-2000:])
            await deferLater(reactor, 0.1, lambda: None)
            try:
                with open(active) as f:
                    lines = f.read().split()
            except OSError:
                pass
        port, path = int(lines[0]), lines[1]
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
        factory.protocol = _DevTools
        factory.opened = Deferred()
        factory.waiting = {}
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        socket = await factory.opened
        return cls(reactor, process, output, socket)

    def command(self, method, session=None, **params):
        """Deferred[dict]: the result of one DevTools command."""
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        d = Deferred()
        self.socket.factory.waiting[message_id] = d
        self.socket.sendMessage(json.dumps(message).encode("utf-8"))
        return d

    async def open(self, url):
        """A new tab at *url*; returns a Page."""
        target = (await self.command("Target.createTarget", url="about:blank"))["targetId"]
        session = (await self.command("Target.attachToTarget", targetId=target,
                                      flatten=True))["sessionId"]
        page = Page(self, session)
        await self.command("Page.enable", session=session)
        await self.command("Page.navigate", session=session, url=url)
        return page

    async def stop(self):
        if self.output.ended.called:
            return
        try:
            self.process.signalProcess("TERM")
        except Exception:
            pass
        d = self.output.ended
        timer = self.reactor.callLater(10, lambda: not d.called and self.process.signalProcess("KILL"))
        await d
        if timer.active():
            timer.cancel()


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    async def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = await self.browser.command("Runtime.evaluate", session=self.session,
                                            expression=expression, returnByValue=True,
                                            awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(result["exceptionDetails"])
        return result["result"].get("value")

    async def wait_for(self, expression, timeout=20.0, poll=0.1):
        """Poll until *expression* is truthy in the page; return its value."""
        reactor = self.browser.reactor
        deadline = reactor.seconds() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except DevToolsError:
                value = None  # the page is still loading
            if value:
                return value
            if reactor.seconds() > deadline:
                raise DevToolsError(f"timed out waiting for {expression}")
            await deferLater(reactor, poll, lambda: None)

    async def screenshot(self, path):
        import base64
        data = (await self.browser.command("Page.captureScreenshot", session=self.session,
                                           format="png"))["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
