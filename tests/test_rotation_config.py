"""Sphinx key rotation is on by default (docs/decisions.md, "Sphinx key
rotation"): a day per key on mixnodes and gateways, set by a key of their
main section, 0 turning it off, the old [debug] key (ms) still winning
when set; the taps wire it, with real files."""

import os

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import cli as gateway_cli, config as G, tap as gateway_tap
from nymtx.mixnode import tap as mixnode_tap
from nymtx.mixnode.config import ConfigError, init_mixnode, load_config, parse_config

from tests.test_trustwire_nodes import run

HOUR = 3600 * 10 ** 9


class DefaultsTests(SynchronousTestCase):

    def test_a_day_by_default_and_the_keys_that_change_it(self):
        home = self.mktemp()
        config = init_mixnode("M1", 1, port=1790, directory="", root=home)
        self.assertEqual(config.rotation_interval, 24 * HOUR)
        text = config.to_toml()
        self.assertIn("sphinx_key_rotation_hours = 24", text)
        off = parse_config(text.replace("sphinx_key_rotation_hours = 24",
                                        "sphinx_key_rotation_hours = 0"))
        self.assertEqual(off.rotation_interval, 0)
        # the old debug key, in ms, still works and wins when set
        fast = parse_config(text.replace("sphinx_key_rotation = 0",
                                         "sphinx_key_rotation = 2000"))
        self.assertEqual(fast.rotation_interval, 2000 * 10 ** 6)
        # a config written before the key existed rotates daily
        old = "\n".join(line for line in text.splitlines()
                        if not line.startswith("sphinx_key_rotation_hours"))
        self.assertEqual(parse_config(old).rotation_interval, 24 * HOUR)
        for bad in ("-1", "1.5", '"24"', "true", "9000"):
            e = self.assertRaises(ConfigError, parse_config, text.replace(
                "sphinx_key_rotation_hours = 24", f"sphinx_key_rotation_hours = {bad}"))
            self.assertIn("sphinx_key_rotation_hours", str(e))

    def test_the_gateway_too(self):
        config = G.GatewayConfig(id="G1")
        self.assertEqual(config.rotation_interval, 24 * HOUR)
        self.assertEqual(attrs.evolve(config, sphinx_key_rotation_hours=0).rotation_interval,
                         0)
        self.assertEqual(attrs.evolve(config, sphinx_key_rotation_ms=500).rotation_interval,
                         500 * 10 ** 6)
        self.assertEqual(G.parse(config.to_toml()), config)
        self.assertRaises(G.ConfigError, G.validate, id="G1", sphinx_key_rotation_hours=-1)


class TapTests(SynchronousTestCase):

    def test_a_mixnode_from_its_config_rotates(self):
        home = self.mktemp()
        init_mixnode("M1", 2, port=1791, directory="http://127.0.0.1:1", root=home)
        options = mixnode_tap.Options()
        options.parseOptions(["--id", "M1", "--home", home])
        service = mixnode_tap.makeService(options, Clock())
        self.addCleanup(service.directory.close)
        keyring = service.node.keyring
        self.addCleanup(keyring.close)
        self.addCleanup(options.replays.close)
        self.assertEqual((keyring.interval, keyring.lead, keyring.overlap),
                         (24 * HOUR, HOUR, HOUR // 2))
        self.assertFalse(keyring.keep_first)
        data = os.path.dirname(load_config("M1", home).private_sphinx_key_file)
        self.assertEqual(len(os.listdir(os.path.join(data, "sphinx_keys"))), 3)

    def test_a_gateway_from_its_config_rotates_and_keeps_its_name(self):
        home = self.mktemp()
        code, _, err = run(gateway_cli.main, "init", "--id", "G1", "--home", home,
                           "--mix-port", "1792", "--clients-port", "1793",
                           "--host", "127.0.0.1", "--directory", "http://127.0.0.1:1")
        self.assertEqual(code, 0, err)
        options = gateway_tap.Options()
        options.parseOptions(["--id", "G1", "--home", home])
        gateway = gateway_tap.makeService(options, Clock())
        self.addCleanup(gateway.store.close)
        self.addCleanup(gateway.directory.close)
        keyring = gateway.handler.keyring
        self.addCleanup(keyring.close)
        self.assertTrue(keyring.keep_first)
        self.assertEqual(keyring.interval, 24 * HOUR)
        self.assertEqual(keyring.accepted()[0], gateway.keys.public_key)
        # off, or no directory to announce keys to: no keyring, as before
        config = G.load("G1", home)
        for changes in ({"sphinx_key_rotation_hours": 0}, {"directory": ""}):
            G.save(attrs.evolve(config, **changes), home)
            options = gateway_tap.Options()
            options.parseOptions(["--id", "G1", "--home", home])
            gateway = gateway_tap.makeService(options, Clock())
            self.addCleanup(gateway.store.close)
            if gateway.directory is not None:
                self.addCleanup(gateway.directory.close)
            self.assertIsNone(gateway.handler.keyring)

    def test_a_mixnode_announcing_nowhere_keeps_its_key(self):
        home = self.mktemp()
        init_mixnode("M1", 1, port=1794, directory="", root=home)
        options = mixnode_tap.Options()
        options.parseOptions(["--id", "M1", "--home", home])
        service = mixnode_tap.makeService(options, Clock())
        self.addCleanup(options.replays.close)
        self.assertIsNone(service.node.keyring)
