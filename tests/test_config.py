"""nymtx.config and nymtx.cli: one verdict per value in every node, one exit status per outcome."""

import io
import math
import os
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import tomlkit
from hypothesis import given, settings, strategies as st
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import nymtx
from nymtx import cli, config as shared
from nymtx.client import cli as client_cli, tap as client_tap
from nymtx.client.config import ClientConfig
from nymtx.client.embed import init_client
from nymtx.gateway import cli as gateway_cli, config as gateway_config
from nymtx.mixnode import cli as mixnode_cli
from nymtx.mixnode.config import ConfigError as MixnodeConfigError, init_mixnode, parse_config
from nymtx.testing import FakeDirectory


def any_value():
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
        st.text(max_size=40), st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


class ValidatorTests(SynchronousTestCase):
    def test_each_error_names_the_key_and_the_value(self):
        for check, value, words in [
                (shared.port, 70000, ["p", "port number from 0 to 65535", "70000"]),
                (shared.port, True, ["p", "True"]),
                (shared.delay, 0, ["p", "positive whole number of milliseconds", "0"]),
                (shared.delay, 1.5, ["p", "1.5"]),
                (shared.delay, 10 ** 12, ["p", "at most 86400000"]),
                (shared.seconds, math.inf, ["p", "positive number of seconds", "inf"]),
                (shared.seconds, math.nan, ["p", "nan"]),
                (shared.url, "http://", ["p", "http:// or https:// URL", "'http://'"]),
                (shared.url, "http:", ["p", "'http:'"]),
                (shared.url, "http://[::1", ["p"]),
                (shared.url, "http://x:99999", ["p", "99999"]),
                (shared.url, "http://x/?a=1", ["p"]),
                (shared.url, "", ["p", "''"]),
                (shared.ip_host, "example.org", ["p", "IPv4 or IPv6", "example.org"]),
                (shared.identifier, "../x", ["p", "invalid id"]),
                (shared.endpoint, "tcp:notaport", ["p", "server endpoint", "'tcp:notaport'"]),
                (shared.endpoint, "bogus:1", ["p", "'bogus:1'"]),
                (shared.log_level, "loud", ["p", "'debug'", "'loud'"]),
                (shared.boolean, "yes", ["p", "true or false"])]:
            e = self.assertRaises(shared.ConfigError, check, value, "p")
            for word in words:
                self.assertIn(word, str(e), (check, value))

    def test_accepted_values_come_back_normalised(self):
        self.assertEqual(shared.url("http://127.0.0.1:8080/", "d"), "http://127.0.0.1:8080")
        self.assertEqual(shared.url("", "d", empty=True), "")
        self.assertEqual(shared.ip_host("::0001", "h"), "::1")
        self.assertEqual(shared.log_level("WARNING"), "warn")
        self.assertEqual(shared.endpoint("tcp:9001:interface=127.0.0.1", "e"),
                         "tcp:9001:interface=127.0.0.1")
        self.assertEqual(shared.delay(0, "d", low=0), 0)
        self.assertEqual(shared.from_text(shared.port, " 9001 ", "--port"), 9001)
        self.assertEqual(shared.from_text(shared.seconds, "2.5", "--expiry"), 2.5)

    def test_an_announced_address_can_be_dialled(self):
        for host in ("0.0.0.0", "::"):
            self.assertEqual(shared.ip_host(host, "h"), host)
            e = self.assertRaises(shared.ConfigError, shared.ip_host, host, "h", announce=True)
            self.assertIn("cannot be dialled", str(e))

    def test_endpoint_is_parsed_but_not_bound(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = f"tcp:{s.getsockname()[1]}:interface=127.0.0.1"
        # a port in use is the service's start-up failure, not a config error
        self.assertEqual(shared.endpoint(taken, "e"), taken)

    def test_an_endpoint_port_out_of_range_is_refused_before_any_bind(self):
        for bad in ("tcp:70000", "tcp:70000:interface=127.0.0.1", "tcp6:port=65536",
                    "tcp:-1"):
            e = self.assertRaises(shared.ConfigError, shared.endpoint, bad, "listening_endpoint")
            self.assertIn("listening_endpoint", str(e))
        self.assertEqual(shared.endpoint("tcp:65535", "e"), "tcp:65535")

    @given(st.sampled_from([shared.port, shared.delay, shared.seconds, shared.count,
                            shared.url, shared.ip_host, shared.identifier, shared.endpoint,
                            shared.log_level, shared.boolean, shared.text]),
           any_value())
    def test_any_value_is_accepted_or_a_config_error(self, check, value):
        try:
            check(value, "k")
        except shared.ConfigError as e:
            self.assertIn("k", str(e))

    @given(st.sampled_from([shared.port, shared.delay, shared.seconds, shared.count,
                            shared.url, shared.log_level]), st.text(max_size=30))
    def test_any_flag_text_is_accepted_or_a_config_error(self, check, text):
        try:
            shared.from_text(check, text, "--flag")
        except shared.ConfigError as e:
            self.assertIn("--flag", str(e))

    def test_one_config_error(self):
        from nymtx.client.config import ConfigError as client
        from nymtx.gateway.config import ConfigError as gateway
        self.assertIs(client, shared.ConfigError)
        self.assertIs(gateway, shared.ConfigError)
        self.assertIs(MixnodeConfigError, shared.ConfigError)


class LogLevelTests(SynchronousTestCase):
    def test_filter(self):
        from twisted.logger import PredicateResult
        from nymtx.logfilter import level_filter
        quiet, loud = level_filter(shared.log_level("INFO")), level_filter("debug")
        debug = {"log_level": LogLevel.debug, "log_namespace": "x"}
        info = {"log_level": LogLevel.info, "log_namespace": "x"}
        self.assertEqual(quiet(debug), PredicateResult.no)
        self.assertEqual(quiet(info), PredicateResult.maybe)
        self.assertEqual(loud(debug), PredicateResult.maybe)
        self.assertRaises(shared.ConfigError, shared.log_level, "loud")

    def test_the_flag_beats_the_config_which_beats_the_default(self):
        options = client_tap.Options()
        options.parseOptions(["--id", "A", "--home", self.mktemp()])
        self.assertEqual(cli.log_level(options), "info")
        config = ClientConfig.new(self.mktemp(), "A", log_level="Debug")
        self.assertEqual(config.log_level, "debug")
        self.assertEqual(cli.log_level(options, config), "debug")
        options = client_tap.Options()
        options.parseOptions(["--id", "A", "--home", self.mktemp(), "--log-level", "ERROR"])
        self.assertEqual(cli.log_level(options, config), "error")

    def test_twistd_plugins_take_the_config_level_unless_the_flag_says_otherwise(self):
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins
        import nymtx.logfilter
        levels = []
        self.patch(nymtx.logfilter, "filter_log", levels.append)
        plugin = {p.tapname: p for p in getPlugins(IServiceMaker)}["nym-mixnode"]
        home = self.mktemp()
        init_mixnode("M", 1, root=home, log_level="debug")
        for argv in (["--id", "M", "--home", home],
                     ["--id", "M", "--home", home, "--log-level", "error"]):
            options = plugin.options()
            options.parseOptions(argv)
            plugin.makeService(options)
        self.assertEqual(levels, ["debug", "error"])

    def test_every_command_takes_the_flag(self):
        from nymtx.directory import tap as directory_tap
        from nymtx.gateway import tap as gateway_tap
        from nymtx.mixnode import tap as mixnode_tap
        for options in (client_tap.Options, gateway_tap.Options, mixnode_tap.Options,
                        directory_tap.Options, gateway_cli.InitOptions,
                        mixnode_cli.InitOptions):
            self.assertIn("--log-level", str(options()), options)
        e = self.assertRaises(usage.UsageError, directory_tap.Options().parseOptions,
                              ["--log-level", "loud"])
        self.assertIn("--log-level", str(e))

    def test_the_level_is_a_key_of_every_config(self):
        home = self.mktemp()
        for text, parse in self.configs(home):
            doc = tomlkit.parse(text)
            self.assertEqual(doc["logging"]["level"], "info")
            doc["logging"]["level"] = "DEBUG"
            self.assertEqual(parse(tomlkit.dumps(doc)).log_level, "debug")

    def configs(self, home):
        return [
            (ClientConfig.new(home, "A").to_toml(),
             lambda t: ClientConfig.from_toml(t, "f.toml")),
            (gateway_config.GatewayConfig(id="G").to_toml(),
             lambda t: gateway_config.parse(t, "f.toml")),
            (init_mixnode("M", 1, root=home).to_toml(), lambda t: parse_config(t, "f.toml")),
        ]


class SameVerdictTests(SynchronousTestCase):
    """The same value in the same role gets the same verdict in every node's config.toml."""

    def setUp(self):
        home = self.mktemp()
        self.files = {
            "client": (ClientConfig.new(home, "A").to_toml(),
                       lambda t: ClientConfig.from_toml(t, "f.toml")),
            "gateway": (gateway_config.GatewayConfig(id="A").to_toml(),
                        lambda t: gateway_config.parse(t, "f.toml")),
            "mixnode": (init_mixnode("A", 1, root=home).to_toml(),
                        lambda t: parse_config(t, "f.toml")),
        }

    def verdicts(self, where, value, read):
        """{node: value read back or the error's text} with *value* at *where*."""
        out = {}
        for node, (section, key) in where.items():
            text, parse = self.files[node]
            doc = tomlkit.parse(text)
            doc[section][key] = value
            try:
                out[node] = ("ok", read(parse(tomlkit.dumps(doc))))
            except shared.ConfigError as e:
                self.assertIsInstance(e, shared.ConfigFileError)
                self.assertTrue(str(e).startswith("f.toml: "), str(e))
                self.assertIn(f"[{section}] {key}", str(e))
                # a node may announce nowhere (''), a client needs its directory
                reason = str(e).split(f"[{section}] {key}", 1)[1].replace(", or empty", "")
                out[node] = ("refused", reason)
        return out

    def assertSame(self, where, values, read):
        for value in values:
            verdicts = self.verdicts(where, value, read)
            self.assertEqual(len(set(verdicts.values())), 1, (value, verdicts))

    def test_directory_url(self):
        where = {"client": ("client", "directory_server"),
                 "gateway": ("debug", "presence_directory_server"),
                 "mixnode": ("debug", "presence_directory_server")}

        def read(config):
            return getattr(config, "directory_server", None) or getattr(
                config, "directory", None) or config.debug["presence_directory_server"]
        self.assertSame(where, ["http://", "http:", "ftp://x", "http://[::1", "http://x:99999",
                                "http://x/?q=1", " http://x", 5, True, "http://127.0.0.1:8080/",
                                "https://dir.example/nym//"], read)
        # "http://" used to be kept by the gateway and made "http:" by the mixnode
        self.assertEqual(self.verdicts(where, "http://", read)["gateway"][0], "refused")
        self.assertEqual(self.verdicts(where, "http://127.0.0.1:8080/", read)["mixnode"],
                         ("ok", "http://127.0.0.1:8080"))

    def test_delays(self):
        where = {"client": ("debug", "fetch_message_delay"),
                 "gateway": ("debug", "presence_sending_delay"),
                 "mixnode": ("debug", "presence_sending_delay")}

        def read(config):
            return getattr(config, "fetch_message_delay", None) or getattr(
                config, "presence_sending_delay_ms", None) or config.debug[
                    "presence_sending_delay"]
        self.assertSame(where, [0, -1, 1.5, "soon", "1500", True, math.inf, math.nan,
                                10 ** 12, 1500, 86_400_000], read)

    def test_ids(self):
        where = {"client": ("client", "id"), "gateway": ("gateway", "id"),
                 "mixnode": ("mixnode", "id")}
        self.assertSame(where, ["../x", "", ".hidden", "a b", 5, "A"], lambda c: c.id)

    def test_log_levels(self):
        where = {node: ("logging", "level") for node in self.files}
        self.assertSame(where, ["loud", "", 3, "DEBUG", "warning"], lambda c: c.log_level)

    def test_ports(self):
        where = {"client": ("socket", "listening_port"),
                 "gateway": ("clients_endpoint", "port")}

        def read(config):
            return getattr(config, "listening_port", None) or config.clients_port
        self.assertSame(where, [70000, -1, "9001", 1.5, False, 9001, 65535], read)

    def test_announced_hosts(self):
        # the mixnode announces ip:port, the gateway an ip and two ports
        for host, verdict in [("0.0.0.0", "refused"), ("::", "refused"),
                              ("example.org", "refused"), ("10.0.0.1", "ok")]:
            gateway = self.verdicts({"gateway": ("mixnet_endpoint", "announce_address")},
                                    host, lambda c: c.announce_host)["gateway"]
            mixnode = self.verdicts({"mixnode": ("mixnode", "announce_address")},
                                    f"[{host}]:1789" if ":" in host else f"{host}:1789",
                                    lambda c: c.announce_address.host)["mixnode"]
            self.assertEqual((gateway[0], mixnode[0]), (verdict, verdict), host)

    # each example reads nine files through tomlkit: fewer examples than the profile's
    @settings(max_examples=25)
    @given(st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
        st.from_regex(r"(https?|ftp)://[a-z0-9.:\[\]/?#@-]{0,20}", fullmatch=True),
        st.integers(), st.booleans(), st.floats()))
    def test_any_value_gets_one_verdict(self, value):
        for where, read in [
                ({"client": ("client", "directory_server"),
                  "gateway": ("debug", "presence_directory_server"),
                  "mixnode": ("debug", "presence_directory_server")},
                 lambda c: getattr(c, "directory_server", None) or getattr(
                     c, "directory", None) or c.debug["presence_directory_server"]),
                ({"client": ("debug", "topology_refresh_rate"),
                  "gateway": ("clients_endpoint", "idle_timeout"),
                  "mixnode": ("debug", "maximum_packet_delay")},
                 lambda c: getattr(c, "topology_refresh_rate", None) or getattr(
                     c, "client_idle_timeout_ms", None) or c.debug["maximum_packet_delay"]),
                ({node: ("logging", "level") for node in self.files}, lambda c: c.log_level)]:
            if value == "" and "directory_server" in str(where):
                continue  # empty: a node announces nowhere, a client has no directory
            verdicts = self.verdicts(where, value, read)
            self.assertEqual(len(set(verdicts.values())), 1, (value, verdicts))

    def test_flags_get_the_verdict_of_the_file(self):
        home = self.mktemp()
        for value in ["http://", "http:", "ftp://x", "nope"]:
            for main, argv in [
                    (client_cli.main, ["init", "--id", "A", "--home", home, "--directory"]),
                    (gateway_cli.main, ["init", "--id", "A", "--home", home, "--directory"]),
                    (mixnode_cli.main, ["init", "--id", "A", "--layer", "1", "--home", home,
                                        "--directory"])]:
                code, _, err = run_main(main, argv + [value])
                self.assertEqual(code, 2, (argv, value, err))
                self.assertIn("--directory must be an http:// or https:// URL", err)
                self.assertIn(repr(value), err)


def run_main(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # --help
            code = e.code
    return code, out.getvalue(), err.getvalue()


class PythonApiTests(SynchronousTestCase):
    def test_socket_type_any_case_in_stored_in_nyms_spelling(self):
        # init_client's default is "none"; ClientConfig refused it
        for spelling, stored in [("none", "None"), ("NONE", "None"), ("tcp", "TCP"),
                                 ("Tcp", "TCP"), ("websocket", "WebSocket"),
                                 ("ws", "WebSocket")]:
            config = ClientConfig.new(self.mktemp(), "A", socket_type=spelling)
            self.assertEqual(config.socket_type, stored)
            self.assertIn(f'socket_type = "{stored}"', config.to_toml())
            self.assertEqual(config.evolve(socket_type=spelling.upper()).socket_type, stored)

    def test_init_client_names_the_python_argument_not_the_flag(self):
        from twisted.internet.task import Clock
        root = self.mktemp()
        ClientConfig.new(root, "A").save()
        d = init_client(Clock(), root, "A", "http://127.0.0.1:1", directory=FakeDirectory(None))
        e = self.failureResultOf(d, shared.ConfigError).value
        self.assertIn("force=True", str(e))
        self.assertNotIn("use --force", str(e))

    def test_init_mixnode_names_the_python_argument(self):
        home = self.mktemp()
        init_mixnode("M", 1, root=home)
        e = self.assertRaises(shared.ConfigError, init_mixnode, "M", 1, root=home)
        self.assertIn("force=True", str(e))


class ConstructionTests(SynchronousTestCase):
    """A config made from Python is checked like one read from disk."""

    def test_every_node(self):
        from nymtx.mixnode.config import DEBUG, MixnodeConfig
        home = self.mktemp()
        mixnode = init_mixnode("M", 1, root=home)
        for make, words in [
                (lambda: ClientConfig.new(home, "A", directory_server="http://"),
                 "[client] directory_server"),
                (lambda: ClientConfig.new(home, "A").evolve(listening_port=-1),
                 "[socket] listening_port"),
                (lambda: gateway_config.GatewayConfig(id="G", directory="http:"),
                 "[debug] presence_directory_server"),
                (lambda: gateway_config.GatewayConfig(id="G", announce_host="0.0.0.0"),
                 "[mixnet_endpoint] announce_address"),
                (lambda: gateway_config.validate(id="G", mix_port=True),
                 "[mixnet_endpoint] port"),
                (lambda: MixnodeConfig(**{**vars_of(mixnode), "layer": 4}), "[mixnode] layer"),
                (lambda: MixnodeConfig(**{**vars_of(mixnode), "debug": {
                    **mixnode.debug, "packet_queue_size": 0}}), "[debug] packet_queue_size"),
                (lambda: MixnodeConfig(**{**vars_of(mixnode), "debug": {}}), "debug must have"),
                (lambda: MixnodeConfig(**{**vars_of(mixnode), "log_level": "loud"}),
                 "log level")]:
            e = self.assertRaises(shared.ConfigError, make)
            self.assertIn(words, str(e))
        self.assertEqual(len(mixnode.debug), len(DEBUG))


def vars_of(config):
    import attrs
    return attrs.asdict(config, recurse=False)


class ExitStatusTests(SynchronousTestCase):
    """Every command: 0 done, 1 could not be done, 2 a wrong command line.

    Through main() (what the console scripts call), and once per command as
    a process, where the status is the process's own.
    """

    def command(self, module, *args, home=None):
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(nymtx.__file__)),
                   NYM_HOME=home or self.mktemp())
        return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                              text=True, timeout=60, env=env)

    def assertStatus(self, result, code, *words):
        if isinstance(result, tuple):
            status, out, err = result
        else:
            status, out, err = result.returncode, result.stdout, result.stderr
        self.assertEqual(status, code, err)
        for word in words:
            self.assertIn(word, err)
        self.assertNotIn("Traceback", err)
        return out

    def test_as_processes(self):
        home = self.mktemp()
        for module in ("nymtx.client.cli", "nymtx.mixnode.cli", "nymtx.gateway.cli",
                       "nymtx.directory.cli"):
            self.assertStatus(self.command(module, "--bogus", home=home), 2,
                              "error:", "--bogus", "usage: nym-")
        self.assertStatus(self.command("nymtx.mixnode.cli", "run", "--id", "M", home=home),
                          1, "is not initialised", "nym-mixnode init --id M")
        # the client's init runs its own reactor: only a process can show its status
        self.assertStatus(self.command("nymtx.client.cli", "init", "--id", "A",
                                       "--directory", "http://127.0.0.1:1", home=home),
                          1, "cannot fetch the topology")

    def test_help_exits_0(self):
        from nymtx.directory import cli as directory_cli
        for main, args in [(client_cli.main, ["run", "--help"]),
                           (mixnode_cli.main, ["run", "--help"]),
                           (gateway_cli.main, ["init", "--help"]),
                           (directory_cli.main, ["--help"])]:
            out = self.assertStatus(run_main(main, args), 0)
            self.assertIn("--log-level", out)

    def test_a_usage_error_exits_2_with_the_usage(self):
        from nymtx.directory import cli as directory_cli
        home = self.mktemp()
        for main, args, words in [
                (client_cli.main, ["run", "--bogus"], ["nym-client: error:", "--bogus"]),
                (client_cli.main, [], ["give a command: init or run"]),
                (client_cli.main, ["run", "--id", "A", "--log-level", "loud"], ["--log-level"]),
                (client_cli.main, ["init", "--id", "A", "--socket-type", "udp"],
                 ["--socket-type"]),
                (mixnode_cli.main, ["init", "--id", "M", "--layer", "9"], ["--layer"]),
                (mixnode_cli.main, ["fly"], ["fly"]),
                (gateway_cli.main, ["init", "--id", "G", "--mix-port", "70000"],
                 ["--mix-port", "70000"]),
                (gateway_cli.main, ["run"], ["--id is required"]),
                (directory_cli.main, ["--expiry", "nan"], ["--expiry"]),
                (directory_cli.main, ["--port", "tcp:notaport"], ["--port"])]:
            if args and args[0] in ("run", "init"):
                args = args + ["--home", home]
            self.assertStatus(run_main(main, args), 2, *words, "usage: nym-")

    def test_a_failure_exits_1(self):
        home = self.mktemp()
        self.assertStatus(run_main(mixnode_cli.main, ["run", "--id", "M", "--home", home]),
                          1, "is not initialised", "nym-mixnode init --id M")
        self.assertStatus(run_main(gateway_cli.main, ["run", "--id", "G", "--home", home]),
                          1, "nym-gateway init --id G")
        self.assertStatus(run_main(gateway_cli.main, ["init", "--id", "G", "--home", home]), 0)
        self.assertStatus(run_main(gateway_cli.main, ["init", "--id", "G", "--home", home]),
                          1, "already initialised")
        self.assertStatus(run_main(mixnode_cli.main, ["init", "--id", "M", "--layer", "1",
                                                      "--home", home]), 0)
        self.assertStatus(run_main(mixnode_cli.main, ["init", "--id", "M", "--layer", "2",
                                                      "--home", home]), 1, "--force")

    def test_a_bad_config_file_exits_1(self):
        home = self.mktemp()
        self.assertStatus(run_main(mixnode_cli.main, ["init", "--id", "M", "--layer", "1",
                                                      "--home", home]), 0)
        path = os.path.join(home, "mixnodes", "M", "config", "config.toml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace('level = "info"', 'level = "loud"'))
        self.assertStatus(run_main(mixnode_cli.main, ["run", "--id", "M", "--home", home]),
                          1, "[logging] level must be one of")
        root = self.mktemp()
        ClientConfig.new(root, "A").save()
        path = ClientConfig.new(root, "A").config_path
        path.write_text(path.read_text().replace("listening_port = 9001", 'listening_port = "x"'))
        self.assertStatus(run_main(client_cli.main, ["run", "--id", "A", "--home", root]),
                          1, "[socket] listening_port must be a port number")
