import io
import os
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import given, strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import cli, config as C, tap
from nymtx.gateway.service import Gateway
from nymtx.keys import KeyPair


class Config(SynchronousTestCase):
    def test_round_trip(self):
        config = C.validate(id="G1", mix_port=1, clients_port=2, announce_host="::1",
                            directory="", location='a "quoted" place', max_clients=7)
        self.assertEqual(C.parse(config.to_toml()), config)

    @given(st.text(max_size=300))
    def test_any_text_is_a_config_or_a_config_error(self, text):
        try:
            C.parse(text)
        except C.ConfigError:
            pass

    @given(st.sampled_from(["quota_messages", "commit_interval_ms", "max_clients",
                            "presence_sending_delay", "port", "sphinx_key_rotation_hours",
                            "sphinx_key_rotation"]),
           st.one_of(st.integers(), st.floats(), st.text(max_size=10), st.booleans()))
    def test_any_value_of_a_key_is_a_config_or_a_config_error(self, key, value):
        import re
        import tomlkit
        good = C.GatewayConfig(id="G1").to_toml()
        line = f"{key} = {tomlkit.item(value).as_string()}"
        text = re.sub(rf"^{key} = .*$", lambda _: line, good, count=1, flags=re.M)
        try:
            C.parse(text)
        except C.ConfigError as e:
            self.assertIn(key, str(e))

    def test_template_is_commented(self):
        text = C.GatewayConfig(id="G1").to_toml()
        self.assertGreater(text.count("\n#"), 10)

    def test_endpoints(self):
        config = C.validate(id="G", listening_host="::1", mix_port=5)
        self.assertEqual(config.mix_endpoint(), "tcp:5:interface=\\:\\:1")

    def assertConfigError(self, text, *words):
        e = self.assertRaises(C.ConfigError, C.parse, text, "f.toml")
        for w in ("f.toml",) + words:
            self.assertIn(w, str(e))

    def test_bad_values(self):
        base = C.GatewayConfig(id="G1").to_toml()
        self.assertConfigError(base.replace("port = 1789", "port = 70000"),
                               "[mixnet_endpoint] port", "70000")
        self.assertConfigError(base.replace("port = 1789", 'port = "x"'), "[mixnet_endpoint] port")
        self.assertConfigError(base.replace("quota_messages = 20000", "quota_messages = -1"),
                               "[storage] quota_messages")
        self.assertConfigError(base.replace('announce_address = "127.0.0.1"',
                                            'announce_address = "example.org"'),
                               "announce_address")
        self.assertConfigError(base.replace('id = "G1"', 'id = "../x"'), "[gateway] id")
        self.assertConfigError(base + "\n[extra]\nkey = 1\n", "unknown section [extra]")
        self.assertConfigError("this is = = not toml", "not valid TOML")
        self.assertConfigError("[gateway]\nlocation = 'x'\n", "[gateway] id is missing")
        self.assertConfigError('gateway = 3\n', "must be a [gateway] table")
        self.assertConfigError(base.replace("presence_directory_server = \"http",
                                            "presence_directory_server = \"ftp"),
                               "presence_directory_server")


class CommandLine(SynchronousTestCase):
    def setUp(self):
        self.home = self.mktemp()

    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_admission_from_config_toml(self):
        self.run_cli("init", "--id", "G2", "--home", self.home, "--mix-port", "0",
                     "--clients-port", "0", "--host", "127.0.0.1", "--directory", "")
        path = C.config_path("G2", self.home)
        text = path.read_text()
        for old, new in (("idle_expiry = 168", "idle_expiry = 2"),
                         ("per_source_burst = 3", "per_source_burst = 5"),
                         ("per_source_interval = 600.0", "per_source_interval = 60"),
                         ("total_burst = 20", "total_burst = 50"),
                         ("total_interval = 10.0", "total_interval = 0.5")):
            self.assertIn(old, text)
            text = text.replace(old, new)
        path.write_text(text)
        options = tap.Options()
        options.parseOptions(["--id", "G2", "--home", self.home])
        service = tap.makeService(options)
        self.addCleanup(service.store.close)
        self.assertEqual(service.registration_idle, 7200.0)
        limit = service.client_factory.admission
        self.assertEqual((limit.per_source, limit.total), ((5, 60.0), (50, 0.5)))
        # a registration in use is touched at least four times per idle period
        self.assertEqual(service.client_factory.touch_interval, 1800.0)

    def test_admission_defaults_when_the_section_is_absent(self):
        # a config.toml written before [admission] existed still loads
        text = C.GatewayConfig(id="G1").to_toml()
        old = text[:text.index("[admission]")] + text[text.index("[logging]"):]
        config = C.parse(old)
        self.assertEqual((config.registration_idle_hours, config.registration_per_source_burst,
                          config.registration_per_source_interval,
                          config.registration_total_burst, config.registration_total_interval),
                         (168, 3, 600.0, 20, 10.0))

    assertConfigError = Config.assertConfigError

    def test_bad_admission_values(self):
        base = C.GatewayConfig(id="G1").to_toml()
        for old, new, words in (
                ("idle_expiry = 168", "idle_expiry = 0", ("[admission] idle_expiry", "hours")),
                ("idle_expiry = 168", "idle_expiry = 1.5", ("[admission] idle_expiry", "1.5")),
                ("idle_expiry = 168", "idle_expiry = 10000000", ("at most 8784",)),
                ("per_source_burst = 3", "per_source_burst = 0",
                 ("[admission] per_source_burst", "1 to 1000000", "not 0")),
                ("per_source_burst = 3", 'per_source_burst = "3"', ("per_source_burst",)),
                ("per_source_interval = 600.0", "per_source_interval = -1",
                 ("[admission] per_source_interval", "positive number of seconds")),
                ("total_burst = 20", "total_burst = true", ("[admission] total_burst",)),
                ("total_interval = 10.0", "total_interval = nan",
                 ("[admission] total_interval",)),
                ("total_interval = 10.0", "total_interval = 1e9", ("at most 604800",)),
                ("[admission]", "[admission]\nburst = 1", ("burst",))):
            self.assertIn(old, base)
            self.assertConfigError(base.replace(old, new), *words)
        self.assertRaises(C.ConfigError, C.validate, id="G", registration_total_burst=-3)

    def test_init_then_tap(self):
        code, out, err = self.run_cli("init", "--id", "G1", "--home", self.home,
                                      "--mix-port", "0", "--clients-port", "0",
                                      "--host", "127.0.0.1", "--directory", "")
        self.assertEqual((code, err), (0, ""))
        keys = KeyPair.load(C.data_dir("G1", self.home))
        self.assertIn(keys.public_text, out)
        options = tap.Options()
        options.parseOptions(["--id", "G1", "--home", self.home])
        service = tap.makeService(options)
        self.addCleanup(service.store.close)
        self.assertIsInstance(service, Gateway)
        self.assertEqual(service.mix_endpoint, "tcp:0:interface=127.0.0.1")
        self.assertEqual(service.announce_host, "127.0.0.1")
        self.assertIsNone(service.directory)
        self.assertTrue(os.path.isdir(C.data_dir("G1", self.home)))

    def test_init_twice_refused(self):
        self.run_cli("init", "--id", "G1", "--home", self.home)
        code, _, err = self.run_cli("init", "--id", "G1", "--home", self.home)
        self.assertEqual(code, 1)
        self.assertIn("already initialised", err)

    def test_bad_flags(self):
        for argv, words in [
                (["init", "--id", "G1", "--mix-port", "x"], ["--mix-port", "'x'"]),
                (["init", "--id", "G1", "--mix-port", "99999"], ["--mix-port", "99999"]),
                (["init", "--id", "G1", "--host", "nowhere"], ["--host", "nowhere"]),
                (["init", "--id", "G1", "--directory", "ftp://x"], ["--directory"]),
                (["init", "--id", "../G1"], ["invalid id"]),
                (["init"], ["--id"]),
                (["frobnicate"], ["frobnicate"])]:
            code, out, err = self.run_cli(*argv, "--home", self.home)
            # a usage error, not a failure: the command line is what is wrong
            self.assertEqual(code, 2, argv)
            for w in words:
                self.assertIn(w, err, argv)

    def test_run_uninitialised(self):
        code, _, err = self.run_cli("run", "--id", "G9", "--home", self.home)
        self.assertEqual(code, 1)
        self.assertIn("nym-gateway init --id G9", err)

    def test_tap_requires_id(self):
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, [])

    def test_tap_bad_config(self):
        self.run_cli("init", "--id", "G1", "--home", self.home)
        path = C.config_path("G1", self.home)
        path.write_text(path.read_text().replace("port = 1789", "port = -5"))
        e = self.assertRaises(usage.UsageError, tap.Options().parseOptions,
                              ["--id", "G1", "--home", self.home])
        self.assertIn("[mixnet_endpoint] port", str(e))

    def test_tap_missing_key(self):
        self.run_cli("init", "--id", "G1", "--home", self.home)
        os.remove(os.path.join(C.data_dir("G1", self.home), "private_sphinx.key"))
        e = self.assertRaises(usage.UsageError, tap.Options().parseOptions,
                              ["--id", "G1", "--home", self.home])
        self.assertIn("private key", str(e))


class ConfigFileModeTests(SynchronousTestCase):
    def test_config_is_owner_only_and_never_written_through_a_leftover(self):
        import stat
        home = self.mktemp()
        config = C.validate(id="G1", mix_port=1, clients_port=2, announce_host="::1",
                            directory="")
        path = C.save(config, home)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        elsewhere = self.mktemp()
        os.symlink(elsewhere, str(path) + ".tmp")
        C.save(config, home)
        self.assertFalse(os.path.exists(elsewhere))
        self.assertEqual(C.parse(path.read_text()), config)
