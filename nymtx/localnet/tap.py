"""``nym-localnet`` and ``twistd nym-localnet``: Options, makeService and main."""

import json
import os
import sys

from twisted.internet import defer
from twisted.python import usage

from nymtx.exitstatus import exit_with
from nymtx.localnet.model import MAX_GATEWAYS, MAX_PER_LAYER, LocalNetError, describe, plan
from nymtx.localnet.network import LocalNetwork
from nymtx.localnet.processes import ProcessNetwork, ParentWatch
from nymtx.logfilter import LEVELS
from nymtx.paths import nym_root


# The coercers raise UsageError, not ValueError: twisted.python.usage would
# put "Parameter type enforcement failed:" before a ValueError's message.
def _count(name, most):
    def coerce(text):
        try:
            value = int(text)
        except ValueError:
            raise usage.UsageError(f"{name} must be a whole number, not {text!r}")
        if not 1 <= value <= most:
            raise usage.UsageError(f"{name} must be 1 to {most}, not {value}")
        return value
    coerce.coerceDoc = f"(1 to {most})"
    return coerce


def _level(text):
    if text not in LEVELS:
        raise usage.UsageError(f"--log-level must be one of {', '.join(LEVELS)}, not {text!r}")
    return text


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise usage.UsageError(f"--base-port must be a port number, not {text!r}")
    if not 0 <= value <= 65535:
        raise usage.UsageError(f"--base-port must be 0 to 65535, not {value}")
    return value


class Options(usage.Options):
    synopsis = ("[--mixnodes-per-layer N] [--gateways N] [--base-port PORT] [--home DIR]"
                " [--processes] [--log-level LEVEL]")
    longdesc = ("Starts a directory, 3 layers of mixnodes and the gateways on 127.0.0.1, "
                "waits until the topology is complete, prints it, and runs until interrupted.")
    optFlags = [
        ["processes", None, "run one OS process per node (not under twistd)"],
    ]
    optParameters = [
        ["mixnodes-per-layer", None, 1, "mixnodes in each of the 3 layers",
         _count("--mixnodes-per-layer", MAX_PER_LAYER)],
        ["gateways", None, 1, "number of gateways", _count("--gateways", MAX_GATEWAYS)],
        ["base-port", None, 8080, "the directory's port; the nodes take the ports after it"
         " (0: any free ports, in one process only)", _port],
        ["home", None, None, "where node keys and mailboxes live (default: $NYM_HOME or ~/.nym)"],
        ["log-level", None, None, "debug, info, warn, error or critical (default: info"
         " under twistd, warn for nym-localnet, which prints the network itself)", _level],
        ["node", None, None, "(internal, with --processes) run only this node"],
    ]

    def opt_help(self):
        print(str(self))
        raise SystemExit(0)

    def postOptions(self):
        if self["processes"] and self["base-port"] == 0:
            raise usage.UsageError("--processes needs a fixed --base-port, not 0")
        try:
            self["plan"] = plan(self["mixnodes-per-layer"], self["gateways"], self["base-port"])
        except LocalNetError as e:
            raise usage.UsageError(str(e))
        if self["node"] is not None and self["node"] not in {n.name for n in self["plan"]}:
            raise usage.UsageError(f"--node {self['node']!r} is not a node of this network")
        self["home"] = str(nym_root(self["home"]))
        place = os.path.join(self["home"], "localnet")
        try:
            os.makedirs(place, mode=0o700, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"--home {self['home']}: cannot create {place}: {e.strerror}")


def makeService(options, reactor=None, exit_with=exit_with):
    """The twistd tapname ``nym-localnet``: the whole network in one process.

    If the network cannot start, the reactor stops and ``exit_with(1)``
    makes twistd's exit status 1 (tests pass their own *exit_with*).
    """
    if reactor is None:
        from twisted.internet import reactor
    network = LocalNetwork(reactor, options["home"], options["plan"], only=options["node"])
    if options["processes"]:
        network.log.warn("--processes is for the nym-localnet command; under twistd the"
                         " network runs in this one process")
    # Under twistd nobody waits on whenReady(): a network that cannot start
    # must not leave twistd running with half of it. twistd starts services
    # before it runs the reactor, so the failure may come before it runs.
    def stop(failure):
        exit_with(1)
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)
    network.whenReady().addErrback(stop)
    return network


def main(argv=None):
    from twisted.internet import reactor
    from nymtx.runner import start_logging

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"nym-localnet: {e}", file=sys.stderr)
        print(f"usage: nym-localnet {Options.synopsis}", file=sys.stderr)
        return 2
    start_logging(options["log-level"] or "warn")
    outcome = {"code": 0}

    def fail(failure):
        print(f"nym-localnet: error: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        outcome["code"] = 1
        if reactor.running:
            reactor.stop()

    if options["node"] is not None:
        # A child of --processes: Ctrl-C reaches the whole process group, but
        # only the parent acts on it (and then stops us with SIGTERM).
        import signal
        from twisted.internet import stdio
        reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
        stdio.StandardIO(ParentWatch(reactor), reactor=reactor)
        network = LocalNetwork(reactor, options["home"], options["plan"], only=options["node"])

        def start_one():
            network.startService()
            network.whenReady().addErrback(fail)
        reactor.callWhenRunning(start_one)
    else:
        network = (ProcessNetwork(reactor, options) if options["processes"]
                   else LocalNetwork(reactor, options["home"], options["plan"]))

        async def announce():
            if options["processes"]:
                topology = await network.start()
            else:
                await network.whenReady()
                topology = await network.wait_for_topology()
            print("nym-localnet: the network is up", flush=True)
            for line in describe(topology, network.directory_url):
                print("  " + line, flush=True)
            print(json.dumps({"directory": network.directory_url}), flush=True)
            print("Press Ctrl-C to stop.", flush=True)

        def start():
            network.startService()
            defer.Deferred.fromCoroutine(announce()).addErrback(fail)
        reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: network.stopService() if network.running else None)
    reactor.run()
    return outcome["code"]
