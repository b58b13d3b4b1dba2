"""python -m nymtx.trust key FOLDER."""

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from nymtx.trust.__main__ import main
from nymtx.trust.allowlist import AllowList
from nymtx.trust.identity import PRIVATE_IDENTITY_FILE, IdentityKey


class KeyCommandTests(SynchronousTestCase):
    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), out, err), out.getvalue(), err.getvalue()

    def test_creates_then_prints_the_same_key(self):
        folder = self.mktemp()
        code, first, _ = self.run_main("key", folder)
        self.assertEqual(code, 0)
        self.assertEqual(first.strip(), IdentityKey.load(folder).public_text)
        self.assertEqual(self.run_main("key", folder)[1], first)

    def test_an_allow_list_line(self):
        folder = self.mktemp()
        code, line, _ = self.run_main("key", folder, "--label", "mix-1 (Alice)")
        allowed = AllowList.parse(line)
        self.assertEqual(list(allowed.labels.values()), ["mix-1 (Alice)"])

    def test_a_broken_key_file_is_one_line(self):
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, PRIVATE_IDENTITY_FILE), "w") as f:
            f.write("not a key")
        code, out, err = self.run_main("key", folder)
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("error: "))
        self.assertNotIn("Traceback", err)


class UsageTests(SynchronousTestCase):
    """The command is on usage.Options like every other: usage errors exit 2."""

    def test_usage_errors_exit_2(self):
        import contextlib
        for argv, why in [([], "give a command: key"),
                          (["key"], "give the FOLDER"),
                          (["key", "a", "b"], "Wrong number of arguments"),
                          (["key", "a", "--bogus"], "--bogus")]:
            with self.subTest(argv=argv):
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    self.assertEqual(main(argv), 2)
                self.assertIn(why, err.getvalue())
