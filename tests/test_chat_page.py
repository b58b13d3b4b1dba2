"""examples/chat/index.html in a real headless Chromium, over a real network.

Two real clients on a real in-process local network; one page opened from
``file://`` (Chromium sends ``Origin: null``), the other from a
twisted.web server on ``http://127.0.0.1:PORT/``. The test clicks and types
in the pages and reads what they show through the DevTools protocol.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.static import File

from nymtx.addressing import encode_client_address

from .chromium import Chromium, find_chromium
from .test_e2e import Network, coroutine

CHAT = FilePath(os.path.dirname(os.path.abspath(__file__))).parent().child(
    "examples").child("chat")


def _why_skip():
    if not CHAT.child("index.html").exists():
        return f"examples/chat/index.html is not next to the tests ({CHAT.path})"
    if find_chromium() is None:
        return ("no Chromium on PATH (Debian: apt-get install chromium); "
                ".ci/run installs it when apt-get is available")
    return None


def js(value):
    return json.dumps(value)


class ChatPageTests(TestCase):
    timeout = 120
    skip = _why_skip()

    async def browser(self):
        browser = await Chromium.start(reactor, self.mktemp())
        self.addCleanup(browser.stop)
        return browser

    async def serve_chat(self):
        site = Site(File(CHAT.path))
        site.noisy = False
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def client(self, network, config):
        await network.run(config)
        service, _ = network.clients[config.id]
        return await service.whenListening()

    @coroutine
    async def test_two_pages_chat_over_the_mixnet(self):
        network = await Network(self).start()
        configs = await network.init("Alice", "Bob")
        alice_port = await self.client(network, configs["Alice"])
        bob_port = await self.client(network, configs["Bob"])
        alice = encode_client_address(configs["Alice"].load_keys().public_key)
        bob = encode_client_address(configs["Bob"].load_keys().public_key)
        http_port = await self.serve_chat()
        browser = await self.browser()

        from_file = CHAT.child("index.html").path
        alice_page = await browser.open(f"file://{from_file}?port={alice_port}")
        bob_page = await browser.open(f"http://127.0.0.1:{http_port}/index.html?port={bob_port}")

        # each page shows its own address and lists the other client
        for page, own, other in ((alice_page, alice, bob), (bob_page, bob, alice)):
            await page.wait_for(
                f"document.getElementById('own-address').textContent === {js(own)}")
            await page.wait_for(
                f"document.querySelector('#clients li[data-address={js(other)}]') !== null")
            listed = await page.evaluate(
                "[...document.querySelectorAll('#clients li')].map(li => li.dataset.address)")
            self.assertEqual(listed, [other])  # not itself
            self.assertIn("connected", await page.evaluate(
                "document.getElementById('status').textContent"))

        await self.say(alice_page, bob, "hello Bob, from a file:// page ✓")
        await self.wait_received(bob_page, "hello Bob, from a file:// page ✓")
        await self.say(bob_page, alice, "hello Alice, from http://127.0.0.1")
        await self.wait_received(alice_page, "hello Alice, from http://127.0.0.1")
        for page in (alice_page, bob_page):
            self.assertEqual(await page.evaluate(
                "document.querySelectorAll('#errors li').length"), 0)
        self.assertEqual(await alice_page.evaluate(
            "[...document.querySelectorAll('#log .msg.sent')].map(m => m.lastChild.textContent)"),
            ["hello Bob, from a file:// page ✓"])

        # the API's errors are shown, and the page goes on working
        stranger = encode_client_address(bytes(range(32)))
        await alice_page.evaluate(f"""(() => {{
            document.getElementById('recipient').value = {js(stranger)};
            document.getElementById('message').value = 'anyone there?';
            document.getElementById('send').click(); }})()""")
        shown = await alice_page.wait_for(
            "document.querySelector('#errors li') && "
            "document.querySelector('#errors li').textContent")
        self.assertIn(stranger, shown)
        self.assertIn("send to", shown)
        await alice_page.evaluate(f"""(() => {{
            document.getElementById('message').value = 'x'.repeat(1048577);
            document.querySelector('#clients li[data-address={js(bob)}]').click();
            document.getElementById('send').click(); }})()""")
        await alice_page.wait_for(
            "[...document.querySelectorAll('#errors li')].some(li => "
            "li.textContent.includes('message too long'))")
        await self.say(alice_page, bob, "still here")
        await self.wait_received(bob_page, "still here")

        if os.environ.get("NYMTX_CHAT_SCREENSHOTS"):
            for name, page in (("alice", alice_page), ("bob", bob_page)):
                await page.screenshot(os.path.join(os.environ["NYMTX_CHAT_SCREENSHOTS"],
                                                   f"chat-{name}.png"))

    @coroutine
    async def test_nobody_listening_is_shown(self):
        browser = await self.browser()
        page = await browser.open(
            f"file://{CHAT.child('index.html').path}?port={await self.free_port()}")
        shown = await page.wait_for(
            "document.querySelector('#errors li') && "
            "document.querySelector('#errors li').textContent")
        self.assertIn("connection closed", shown)
        self.assertEqual(await page.evaluate("document.getElementById('status').textContent"),
                         "not connected")
        self.assertFalse(await page.evaluate("!document.getElementById('send').disabled"))

    async def free_port(self):
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(File(".")))
        number = port.getHost().port
        await port.stopListening()
        return number

    async def say(self, page, to, text):
        """Pick *to* in the page's client list, type *text* and press Enter."""
        await page.evaluate(f"""(() => {{
            document.querySelector('#clients li[data-address={js(to)}]').click();
            const box = document.getElementById('message');
            box.value = {js(text)};
            box.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter', bubbles: true}}));
        }})()""")

    async def wait_received(self, page, text):
        await page.wait_for(
            "[...document.querySelectorAll('#log .msg.received')].some(m => "
            f"m.lastChild.textContent === {js(text)})", timeout=30)
