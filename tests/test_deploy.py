"""The systemd units in deploy/systemd/ parse, strictly, and their ExecStart runs a node.

Two checks: a strict parser of our own (sections, known keys, values, the
twistd command line given to twistd's own option parser with a node
initialised for it), and ``systemd-analyze verify`` where it is installed.
"""

import inspect
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from contextlib import redirect_stdout

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from nymtx.gateway import cli as gateway_cli
from nymtx.gateway.config import GatewayConfig
from nymtx.links import PacketLinks
from nymtx.listening import FD_RESERVE
from nymtx.mixnode.config import DEBUG as MIXNODE_DEBUG, init_mixnode

# the checkout (or, under .ci/run, the scratch folder that holds tests/,
# docs/ and deploy/ beside an installed nymtx)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "deploy", "systemd")
#: unit file -> the twistd plugin it runs
TAPNAMES = {"nym-directory.service": "nym-directory", "nym-mixnode@.service": "nym-mixnode",
            "nym-gateway@.service": "nym-gateway", "nym-client@.service": "nym"}
INSTALLED_TWISTD = "/opt/nymtx/bin/twistd"

_YES_NO = {"yes", "no"}
#: section -> key -> check of its value (None: any text)
KNOWN = {
    "Unit": {"Description": None, "After": None, "Wants": None, "Documentation": None},
    "Service": {
        "Type": {"simple", "exec"}, "User": None, "Group": None, "StateDirectory": None,
        "StateDirectoryMode": "mode", "ExecStart": None,
        "Restart": {"on-failure", "always", "on-abnormal"}, "RestartSec": "int",
        "TimeoutStopSec": "int", "LimitNOFILE": "int", "NoNewPrivileges": _YES_NO,
        "ProtectSystem": {"strict", "full", "yes"}, "ProtectHome": _YES_NO | {"read-only"},
        "PrivateTmp": _YES_NO, "PrivateDevices": _YES_NO, "RestrictAddressFamilies": None},
    "Install": {"WantedBy": None},
}


class UnitError(Exception):
    """A unit file breaks a rule; the message names the file, the line and the rule."""


def parse_unit(text, name):
    """{section: {key: value}} of a unit file, refusing what systemd would only warn about."""
    sections = {}
    current = None
    template = "@." in name
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line != line.strip():
            raise UnitError(f"{where}: leading or trailing white space")
        if line.endswith("\\"):
            raise UnitError(f"{where}: no continuation lines")
        if line.startswith("["):
            if not line.endswith("]") or line[1:-1] not in KNOWN:
                raise UnitError(f"{where}: unknown section {line}")
            current = line[1:-1]
            if current in sections:
                raise UnitError(f"{where}: section [{current}] twice")
            sections[current] = {}
            continue
        if current is None:
            raise UnitError(f"{where}: a setting before any section")
        key, sep, value = line.partition("=")
        if not sep or not value:
            raise UnitError(f"{where}: not Key=Value")
        if key not in KNOWN[current]:
            raise UnitError(f"{where}: unknown key {key} in [{current}]")
        if key in sections[current]:
            raise UnitError(f"{where}: {key} twice")
        check = KNOWN[current][key]
        if isinstance(check, set) and value not in check:
            raise UnitError(f"{where}: {key}={value}, not one of {sorted(check)}")
        if check == "int" and not value.isdigit():
            raise UnitError(f"{where}: {key} must be a whole number, not {value!r}")
        if check == "mode" and not (len(value) == 4 and set(value) <= set("01234567")):
            raise UnitError(f"{where}: {key} must be an octal mode such as 0700")
        rest = value.replace("%i", "")
        if "%" in rest or ("%i" in value and not template):
            raise UnitError(f"{where}: only %i, and only in a template unit (NAME@.service)")
        sections[current][key] = value
    if list(sections) != list(KNOWN):
        raise UnitError(f"{name}: needs the sections [Unit], [Service], [Install] in that"
                        f" order, has {list(sections)}")
    for section, key in (("Unit", "Description"), ("Service", "ExecStart"),
                         ("Service", "User"), ("Install", "WantedBy")):
        if key not in sections[section]:
            raise UnitError(f"{name}: [{section}] {key} is missing")
    return sections


def twistd_argv(unit, name):
    """ExecStart as argv, checked: twistd in the foreground, no pid file, log to the journal."""
    argv = shlex.split(unit["Service"]["ExecStart"])
    if not os.path.isabs(argv[0]) or os.path.basename(argv[0]) != "twistd":
        raise UnitError(f"{name}: ExecStart must run twistd by its absolute path")
    tapname = TAPNAMES.get(name)
    if tapname not in argv:
        raise UnitError(f"{name}: ExecStart does not run the plugin {tapname}")
    before = argv[1:argv.index(tapname)]
    for flag in ("--nodaemon", "--pidfile=", "--logfile=-"):
        if flag not in before:
            raise UnitError(f"{name}: twistd needs {flag} under systemd")
    return argv


#: the allow list the directory unit names (docs/deployment.md)
ALLOW_LIST = "/etc/nymtx/allow-list"


def _local(arg, home):
    """*arg* of an ExecStart with the unit's paths moved under *home*: the
    state directory itself, and the allow list (made there, empty but for a
    comment, as an operator's before the first node is admitted)."""
    if arg == ALLOW_LIST:
        os.makedirs(home, exist_ok=True)
        path = os.path.join(home, "allow-list")
        with open(path, "w", encoding="utf-8") as f:
            f.write("# nymtx allow list: one node identity key (base58) a line, then a label\n")
        return path
    if arg == "/var/lib/nymtx" or arg.startswith("/var/lib/nymtx/"):
        return home + arg[len("/var/lib/nymtx"):]
    return arg


def unit_text(name):
    with open(os.path.join(UNITS, name), encoding="utf-8") as f:
        return f.read()


class UnitFileTests(SynchronousTestCase):
    def test_every_unit_is_here(self):
        self.assertEqual(sorted(f for f in os.listdir(UNITS) if f.endswith(".service")),
                         sorted(TAPNAMES))

    def test_every_unit_parses_strictly(self):
        for name in TAPNAMES:
            unit = parse_unit(unit_text(name), name)
            argv = twistd_argv(unit, name)
            self.assertEqual(argv[0], INSTALLED_TWISTD)
            if "--home" in argv:
                # the config root is the directory systemd keeps for the user
                self.assertEqual(argv[argv.index("--home") + 1],
                                 "/var/lib/" + unit["Service"]["StateDirectory"])
            self.assertNotEqual(unit["Service"]["User"], "root")

    def _parse_exec_start(self, name, home):
        from twisted.scripts._twistd_unix import ServerOptions
        argv = twistd_argv(parse_unit(unit_text(name), name), name)
        argv = [_local(a, home).replace("%i", "node1") for a in argv]
        options = ServerOptions()
        options.parseOptions(argv[1:])
        return options

    def test_exec_start_is_a_twistd_command_line_that_runs_the_node(self):
        home = os.path.abspath(self.mktemp())
        init_mixnode("node1", 1, root=home)
        with redirect_stdout(io.StringIO()):
            self.assertEqual(gateway_cli.main(["init", "--id", "node1", "--home", home]), 0)
        for name, tapname in TAPNAMES.items():
            options = self._parse_exec_start(name, home)
            self.assertEqual(options.subCommand, tapname)
            self.assertTrue(options["nodaemon"])
        mixnode = self._parse_exec_start("nym-mixnode@.service", home).subOptions
        self.assertEqual(mixnode.config.id, "node1")
        gateway = self._parse_exec_start("nym-gateway@.service", home).subOptions
        self.assertEqual(gateway["config"].id, "node1")
        directory = self._parse_exec_start("nym-directory.service", home).subOptions
        self.assertEqual(directory["port"], "tcp:8080:interface=0.0.0.0")

    def test_the_directory_unit_runs_as_systemd_would_run_it(self):
        """Its ExecStart, on a free port: logs to stdout, writes no pid file, stops on TERM."""
        twistd = _twistd()
        if twistd is None:
            raise SkipTest("no twistd installed here")
        argv = twistd_argv(parse_unit(unit_text("nym-directory.service"),
                                      "nym-directory.service"), "nym-directory.service")
        home = os.path.abspath(self.mktemp())
        argv = [twistd if a == INSTALLED_TWISTD else
                "tcp:0:interface=127.0.0.1" if a.startswith("tcp:8080") else _local(a, home)
                for a in argv]
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        self.addCleanup(process.wait)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        # a directory that never says it listens must not hang the suite
        watchdog = threading.Timer(60, process.kill)
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        seen = []
        for line in process.stdout:
            seen.append(line)
            if "the directory listening on" in line:
                break
        self.assertTrue(seen and "host='127.0.0.1'" in seen[-1], "".join(seen))
        # it signs: its identity key was made where the unit says
        self.assertTrue(os.path.exists(os.path.join(home, "directory", "public_identity.key")))
        port = int(re.search(r"port=(\d+)", seen[-1]).group(1))
        # it answers: the reactor runs (and has its SIGTERM handler: the
        # port may be bound before, in privilegedStartService)
        url = f"http://127.0.0.1:{port}/api/presence/topology"
        with urllib.request.urlopen(url, timeout=30) as answer:
            self.assertEqual(answer.status, 200)
        process.terminate()
        rest = process.stdout.read()
        # twistd shuts down, then exits by the signal it got (systemd counts
        # SIGTERM as a clean stop of a service)
        self.assertEqual(process.wait(timeout=30), -signal.SIGTERM, rest)
        self.assertIn("Server Shut Down.", rest)
        self.assertEqual(os.listdir(cwd), [])  # no twistd.pid, no twistd.log

    def test_the_open_files_limit_holds_the_default_connection_limits(self):
        gateway = GatewayConfig(id="g")
        needs = {
            "nym-gateway@.service": gateway.mix_max_connections
            + gateway.client_max_connections + FD_RESERVE,
            # a mixnode's outgoing links, one per next hop, count too
            "nym-mixnode@.service": MIXNODE_DEBUG["maximum_connections"][0]
            + inspect.signature(PacketLinks).parameters["max_peers"].default,
        }
        for name, need in needs.items():
            limit = int(parse_unit(unit_text(name), name)["Service"]["LimitNOFILE"])
            self.assertGreaterEqual(limit, need + FD_RESERVE, name)

    def test_the_parser_refuses_what_systemd_would_only_warn_about(self):
        good = unit_text("nym-mixnode@.service")
        parse_unit(good, "nym-mixnode@.service")
        cases = {
            "unknown key": good.replace("[Service]\n", "[Service]\nBogus=1\n"),
            "twice": good.replace("Restart=on-failure", "Restart=on-failure\nRestart=always"),
            "not one of": good.replace("Restart=on-failure", "Restart=sometimes"),
            "whole number": good.replace("LimitNOFILE=65536", "LimitNOFILE=lots"),
            "unknown section": good.replace("[Install]", "[Instal]"),
            "only %i": good.replace("--id %i", "--id %n"),
            "Key=Value": good.replace("Restart=on-failure", "Restart on-failure"),
        }
        for why, text in cases.items():
            with self.assertRaises(UnitError) as caught:
                parse_unit(text, "nym-mixnode@.service")
            self.assertIn(why, str(caught.exception))
        with self.assertRaises(UnitError) as caught:
            parse_unit(unit_text("nym-mixnode@.service"), "nym-mixnode.service")
        self.assertIn("template", str(caught.exception))
        for flag in ("--pidfile= ", "--nodaemon "):
            unit = parse_unit(good.replace(flag, ""), "nym-mixnode@.service")
            with self.assertRaises(UnitError) as caught:
                twistd_argv(unit, "nym-mixnode@.service")
            self.assertIn(flag.strip(), str(caught.exception))

    def test_deployment_doc_names_the_units(self):
        with open(os.path.join(ROOT, "docs", "deployment.md"), encoding="utf-8") as f:
            doc = f.read()
        self.assertIn("deploy/systemd/", doc)
        for name in TAPNAMES:
            self.assertIn(name.split("@")[0].replace(".service", ""), doc)


def _twistd():
    here = os.path.join(os.path.dirname(sys.executable), "twistd")
    return here if os.access(here, os.X_OK) else shutil.which("twistd")


class SystemdVerifyTests(SynchronousTestCase):
    skip = (None if shutil.which("systemd-analyze") and _twistd()
            else "systemd-analyze verify needs systemd-analyze and twistd installed")

    def verify(self, texts):
        """systemd-analyze verify on copies whose twistd is the installed one here."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        paths = []
        for name, text in texts.items():
            path = os.path.join(folder, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace(INSTALLED_TWISTD, _twistd()))
            paths.append(path)
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths],
                              capture_output=True, text=True, timeout=60)
        # systemd warns about an unknown key and goes on: a line naming a
        # unit is a failure whatever the exit status
        ours = [line for line in (done.stdout + done.stderr).splitlines()
                if any(name.split("@")[0].replace(".service", "") in line for name in texts)]
        return done.returncode, ours

    def test_systemd_accepts_every_unit(self):
        code, complaints = self.verify({name: unit_text(name) for name in TAPNAMES})
        self.assertEqual((code, complaints), (0, []))

    def test_systemd_verify_would_catch_a_bad_unit(self):
        bad = unit_text("nym-gateway@.service").replace("[Service]\n", "[Service]\nBogus=1\n")
        code, complaints = self.verify({"nym-gateway@.service": bad})
        self.assertTrue(any("Bogus" in line for line in complaints), complaints)
