"""``nym-localnet`` and ``twistd nym-localnet``: Options, makeService and main."""

import json
import os
import sys

from twisted.internet import defer
from twisted.python import usage

from nymtx.exitstatus import exit_with
from nymtx.localnet.model import (
    MAX_GATEWAYS, MAX_PER_LAYER, LocalNetError, Timing, describe, plan)
from nymtx.localnet.network import LocalNetwork
from nymtx.localnet.processes import READY_LINE, ProcessNetwork, ParentWatch
from nymtx.logfilter import LEVELS
from nymtx.paths import nym_root

#: client hosts of --netns; with 50 mixnodes a layer and 20 gateways, 245 hosts fit a /24
MAX_CLIENT_HOSTS = 74


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


def _clients(text):
    try:
        value = int(text)
    except ValueError:
        raise usage.UsageError(f"--clients must be a whole number, not {text!r}")
    if not 0 <= value <= MAX_CLIENT_HOSTS:
        raise usage.UsageError(f"--clients must be 0 to {MAX_CLIENT_HOSTS}, not {value}")
    return value


_clients.coerceDoc = f"(0 to {MAX_CLIENT_HOSTS})"


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
                " [--directories N] [--processes | --netns [--clients N]] [--insecure-links]"
                " [--log-level LEVEL]")

    def getSynopsis(self):
        # --help's first line, as the other nym-* commands print it
        return f"Usage: nym-localnet {self.synopsis}"
    longdesc = ("Starts a directory, 3 layers of mixnodes and the gateways on 127.0.0.1 (with"
                " --netns: each in its own network namespace, on its own address), waits until"
                " the topology is complete, prints it, and runs until interrupted.")
    optFlags = [
        ["processes", None, "run one OS process per node (not under twistd)"],
        ["netns", None, "every node in its own network namespace, on its own address"
         " (root or CAP_NET_ADMIN; one process per node; not under twistd)"],
        ["insecure-links", None, "plain links between the nodes and, with one directory,"
         " an unsigned one: the network before mix links, for seed (nym v0.5) nodes or"
         " tools that read packets on the links (docs/localnet.md)"],
    ]
    optParameters = [
        ["mixnodes-per-layer", None, 1, "mixnodes in each of the 3 layers",
         _count("--mixnodes-per-layer", MAX_PER_LAYER)],
        ["gateways", None, 1, "number of gateways", _count("--gateways", MAX_GATEWAYS)],
        ["directories", None, 1, "signing directories; the nodes announce to each and"
         " a client needs a majority (docs/trust.md)", _count("--directories", 9)],
        ["base-port", None, 8080, "the directory's port; the nodes take the ports after it"
         " (0: any free ports, in one process only)", _port],
        ["home", None, None, "where node keys and mailboxes live (default: $NYM_HOME or ~/.nym)"],
        ["log-level", None, None, "debug, info, warn, error or critical (default: info"
         " under twistd, warn for nym-localnet, which prints the network itself)", _level],
        ["clients", None, 2, "with --netns: namespaces made for clients (client-1 …)",
         _clients],
        ["node", None, None, "(internal, with --processes or --netns) run only this node"],
        ["netns-plan", None, None, "(internal, with --netns) the network a --node runs in"],
    ]

    def opt_help(self):
        print(str(self))
        raise SystemExit(0)

    def postOptions(self):
        if self["processes"] and self["netns"]:
            raise usage.UsageError("--netns runs one process per node already: not with"
                                   " --processes")
        if self["processes"] and self["base-port"] == 0:
            raise usage.UsageError("--processes needs a fixed --base-port, not 0")
        self["timing"] = Timing()
        if self["netns-plan"] is not None:
            # imported here: ``python -m nymtx.localnet.netns`` must find it not yet imported
            from nymtx.localnet.netns import decode_plan
            try:
                self["plan"], self["timing"] = decode_plan(self["netns-plan"])
            except ValueError as e:
                raise usage.UsageError(f"--netns-plan: {e}")
            # the plan lists every directory already
            self["directories"] = sum(1 for n in self["plan"] if n.kind == "directory")
        else:
            try:
                self["plan"] = plan(self["mixnodes-per-layer"], self["gateways"],
                                    self["base-port"])
            except LocalNetError as e:
                raise usage.UsageError(str(e))
        from nymtx.trust.localnet import more_directories  # directory-2.. (--directories)
        try:
            names = {n.name for n in more_directories(self["plan"], self["directories"])}
        except LocalNetError as e:
            raise usage.UsageError(str(e))
        if self["node"] is not None and self["node"] not in names:
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
    network = LocalNetwork(reactor, options["home"], options["plan"], only=options["node"],
                           timing=options["timing"],
                           directories=options["directories"],
                           secure=not options["insecure-links"])
    for flag in ("processes", "netns"):
        if options[flag]:
            network.log.warn("--{flag} is for the nym-localnet command; under twistd the"
                             " network runs in this one process on 127.0.0.1", flag=flag)
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


def netns_lines(network):
    """What --netns prints after the topology: the hosts, and how to run a client."""
    lines = [f"bridge     {network.run.bridge} {network.run.subnet}"
             f" (this machine: {network.run.bridge_address})"]
    for name, host in network.hosts.items():
        lines.append(f"host       {host.address:<15} {host.namespace}  ({name})")
    for name in network.clients[:1]:
        namespace = network.hosts[name].namespace
        if network.signed:
            from nymtx.trust.localnet import init_line
            lines.append(f"a client:  ip netns exec {namespace} nym-client init --id Alice"
                         f" {init_line(network)}")
            lines.append(f"           ip netns exec {namespace} nym-client run --id Alice")
        else:
            lines.append(f"a client:  ip netns exec {namespace} nym-client run --id Alice"
                         f" --directory {network.directory_url}")
    return lines


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
        network = LocalNetwork(reactor, options["home"], options["plan"], only=options["node"],
                               timing=options["timing"], directories=options["directories"],
                               secure=not options["insecure-links"])

        def ready(_):
            if network.links_ready:
                # the parent's cue (taken, not shown): this node knows every other
                print(READY_LINE, flush=True)

        def start_one():
            network.startService()
            network.whenReady().addCallbacks(ready, fail)
        reactor.callWhenRunning(start_one)
    else:
        if options["netns"]:
            from nymtx.localnet.netns import NetnsNetwork
            network = NetnsNetwork(
                reactor, options["home"], options["plan"],
                clients=[f"client-{i}" for i in range(1, options["clients"] + 1)],
                log_level=options["log-level"], directories=options["directories"],
                secure=not options["insecure-links"])
        elif options["processes"]:
            network = ProcessNetwork(reactor, options)
        else:
            network = LocalNetwork(reactor, options["home"], options["plan"],
                                   directories=options["directories"],
                                   secure=not options["insecure-links"])

        async def announce():
            if options["processes"] or options["netns"]:
                topology = await network.start()
            else:
                await network.whenReady()
                topology = await network.wait_for_topology()
            print("nym-localnet: the network is up", flush=True)
            for line in describe(topology, network.directory_url):
                print("  " + line, flush=True)
            announcement = {"directory": network.directory_url}
            if options["netns"]:
                for line in netns_lines(network):
                    print("  " + line, flush=True)
                announcement["hosts"] = {name: {"namespace": h.namespace, "address": h.address}
                                         for name, h in network.hosts.items()}
            if network.signed:
                from nymtx.trust.localnet import client_settings, init_line
                trust = client_settings(network)
                print("  clients pin: nym-client init --id NAME " + init_line(network),
                      flush=True)
                announcement.update(directories=list(network.directory_urls.values()),
                                    directory_keys=trust["directory_keys"])
            print("  mix links: " + ("on (authenticated, docs/mix-link.md)" if network.secure
                                     else "plain (--insecure-links)"), flush=True)
            print(json.dumps(announcement), flush=True)
            print("Press Ctrl-C to stop.", flush=True)

        def start():
            network.startService()
            defer.Deferred.fromCoroutine(announce()).addErrback(fail)
        reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: network.stopService() if network.running else None)
    reactor.run()
    return outcome["code"]
