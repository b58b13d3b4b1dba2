"""twistd finds every nymtx plugin, each one can build its options, and their
usage errors exit 2 (a config that cannot be used 1)."""

import io
from contextlib import redirect_stderr

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.python.reflect import namedAny
from zope.interface.verify import verifyObject

from nymtx.cli import TwistdUsage, Unusable, twistd_options

TAPNAMES = {
    "nym": "nymtx.client.tap",
    "nym-mixnode": "nymtx.mixnode.tap",
    "nym-gateway": "nymtx.gateway.tap",
    "nym-directory": "nymtx.directory.tap",
    "nym-localnet": "nymtx.localnet",
}


class PluginTests(SynchronousTestCase):
    def test_every_tapname_is_found(self):
        found = {p.tapname: p for p in getPlugins(IServiceMaker)}
        for name, module in TAPNAMES.items():
            self.assertIn(name, found)
            plugin = found[name]
            verifyObject(IServiceMaker, plugin)
            self.assertEqual(plugin.module, module)
            # the lazily imported module really has what twistd will call
            self.assertTrue(issubclass(plugin.options, usage.Options))
            self.assertTrue(callable(plugin.makeService))
            self.assertIn("--help", str(plugin.options()))

    def test_twistd_gets_the_tap_options_with_the_exit_statuses(self):
        found = {p.tapname: p for p in getPlugins(IServiceMaker)}
        for name, module in TAPNAMES.items():
            with self.subTest(plugin=name):
                offered = found[name].options
                own = namedAny(module).Options
                self.assertTrue(issubclass(offered, own))
                self.assertTrue(issubclass(offered, TwistdUsage))
                # the nym-* commands parse the tap's own class and say it their way
                self.assertFalse(issubclass(own, TwistdUsage))
                err = io.StringIO()
                with redirect_stderr(err), self.assertRaises(SystemExit) as e:
                    offered().parseOptions(["--no-such-flag"])
                self.assertEqual(e.exception.code, 2)
                self.assertIn(f"twistd {name}: error: option --no-such-flag not recognized",
                              err.getvalue())
                self.assertIn(f"Usage: twistd [options] {name}", err.getvalue())


class TwistdUsageTests(SynchronousTestCase):
    class Options(usage.Options):
        optParameters = [["config", None, None, "a file"]]

        def postOptions(self):
            if self["config"] == "unreadable":
                raise Unusable("config.toml: cannot be read")
            if self["config"] is None:
                raise usage.UsageError("--config is required")

    def parse(self, argv):
        err = io.StringIO()
        options = twistd_options(self.Options, "nym-test")()
        with redirect_stderr(err):
            try:
                options.parseOptions(argv)
            except SystemExit as e:
                return e.code, err.getvalue()
        return 0, err.getvalue()

    def test_a_usage_error_exits_2_after_the_usage_and_why(self):
        code, err = self.parse([])
        self.assertEqual(code, 2)
        self.assertTrue(err.startswith("Usage: twistd [options] nym-test"), err)
        self.assertIn("--config=", err)
        self.assertIn("twistd nym-test: error: --config is required\n"
                      "Try 'twistd nym-test --help' for more.", err)

    def test_a_file_that_cannot_be_used_exits_1_with_one_line(self):
        self.assertEqual(self.parse(["--config", "unreadable"]),
                         (1, "twistd nym-test: error: config.toml: cannot be read\n"))

    def test_good_flags_parse_as_before(self):
        self.assertEqual(self.parse(["--config", "x"]), (0, ""))
