"""The quick start's conversation, on free ports, twice on the same home."""

import os
from argparse import Namespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nymtx.quickstart import QuickStart

FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=250)


class QuickStartTests(TestCase):
    timeout = 90

    def test_message_arrives_even_with_old_mail_waiting(self):
        return Deferred.fromCoroutine(self._run_twice())

    async def _start(self, home, **settings):
        args = Namespace(home=home, base_port=0, alice_port=0, bob_port=0, once=True)
        self.said = []
        quick = QuickStart(reactor, args, say=self.said.append, **dict(FAST, **settings))
        quick.startService()
        return quick

    async def _run_twice(self):
        home = self.mktemp()
        quick = await self._start(home)
        try:
            received = await quick.run()
            self.assertEqual(len(received), 1)
            self.assertIn("Hello Bob! Alice here", received[0])
            # Mail Bob has not fetched when the quick start stops ...
            alice = quick.clients["Alice"].client
            bob = quick.clients["Bob"].client
            await alice.send(bob.address, "left over from the first run")
            while len(bob.core.inbox) == 0:
                await deferLater(reactor, 0.05, lambda: None)
        finally:
            await quick.stopService()
        # ... is fetched first on the next run, which still waits for its own:
        # slow hops (four of 400 ms on average) make the old mail come alone
        # in an earlier fetch than the new message.
        quick = await self._start(home, average_packet_delay=400)
        try:
            received = await quick.run()
        finally:
            await quick.stopService()
        self.assertIn("left over from the first run", received)
        self.assertTrue(any(line.startswith("Bob receives after") for line in self.said))
        self.assertTrue(any("Hello Bob! Alice here" in m for m in received), received)

    def test_answers_are_printed_as_json(self):
        return Deferred.fromCoroutine(self._json())

    async def _json(self):
        import json
        quick = await self._start(self.mktemp())
        try:
            await quick.run()
        finally:
            await quick.stopService()
        shown = {}
        for line in self.said:
            for prefix in ("Alice sends: ", "Alice's client answers: ", ):
                if line.startswith(prefix):
                    shown[prefix] = json.loads(line[len(prefix):])
            if line.startswith("Bob receives after"):
                shown["Bob"] = json.loads(line.split(" s: ", 1)[1])
        self.assertEqual(shown["Alice's client answers: "], {"type": "send"})
        self.assertEqual(shown["Alice sends: "]["type"], "send")
        self.assertEqual(shown["Alice sends: "]["recipient_address"], quick.bob_address)
        self.assertEqual(shown["Bob"]["type"], "fetch")
        self.assertTrue(any("Hello Bob" in m for m in shown["Bob"]["messages"]))


class QuickStartScriptTests(TestCase):
    """quickstart.sh says what it does before each slow step.

    ``python3`` is replaced on PATH by a script that makes a ``.venv`` whose
    python only records how it was called: the test is about what the
    script prints and in which order, not about pip.
    """

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "quickstart.sh")
    if not os.path.exists(script):
        skip = f"quickstart.sh is not next to the tests ({script})"

    def test_says_what_it_is_doing(self):
        import shutil
        import subprocess
        place = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(place, "bin"))
        shutil.copy(self.script, place)
        calls = os.path.join(place, "calls")
        python = ("#!/bin/sh\n"
                  f'echo "python $*" >> {calls}\n'
                  f'echo "(python $*)"\n'
                  # pip --version fails until the venv was made by python3 -m venv
                  f'[ "$*" = "-m pip --version" ] && [ ! -e {place}/.venv/made ] && exit 1\n'
                  "exit 0\n")
        fake_python3 = ("#!/bin/sh\n"
                        f'mkdir -p {place}/.venv/bin\n'
                        f"cat > {place}/.venv/bin/python <<'END'\n{python}END\n"
                        f"chmod +x {place}/.venv/bin/python\n"
                        f"touch {place}/.venv/made\n")
        with open(os.path.join(place, "bin", "python3"), "w") as f:
            f.write(fake_python3)
        os.chmod(os.path.join(place, "bin", "python3"), 0o755)
        env = dict(os.environ, PATH=os.path.join(place, "bin") + os.pathsep + os.environ["PATH"])

        def run():
            return subprocess.run(["bash", os.path.join(place, "quickstart.sh"), "--once"],
                                  capture_output=True, text=True, env=env, timeout=30).stdout

        first = run().splitlines()
        install = first.index("(python -m pip install -q .)")
        said = first[:install]
        self.assertTrue(any("creating a virtual environment in .venv" in line for line in said),
                        first)
        self.assertTrue(any("installing nymtx" in line and "about 30 s" in line
                            for line in said), first)
        self.assertIn("(python -m nymtx.quickstart --once)", first)
        self.assertTrue(any("starting the quick start" in line
                            for line in first[install:first.index("(python -m nymtx.quickstart --once)")]))
        second = run().splitlines()
        self.assertFalse(any("creating" in line for line in second), second)
        self.assertTrue(any("updating nymtx in .venv" in line
                            for line in second[:second.index("(python -m pip install -q .)")]))
