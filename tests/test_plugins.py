"""twistd finds every nymtx plugin, and each one can build its options."""

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

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
