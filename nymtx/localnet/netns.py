"""Many hosts on one machine: ``nym-localnet --netns``, one network namespace per host.

Every node (and every client host asked for) gets its own Linux network
namespace, joined to a private bridge by a veth pair, with its own address
on a /24 of 10.231.0.0/16 that no route of this machine uses yet:

- the bridge ``nymtx<N>b`` holds ``10.231.<N>.1`` (so that this process can
  reach the hosts) and is the only link between them;
- host *i* (the directory first, then any further directories of
  ``--directories N``, the mixnodes, the gateways, the clients) is the namespace ``nymtx-<N>-<name>`` with ``eth0`` at
  ``10.231.<N>.<10+i>`` and its own loopback, up;
- no namespace has a default route, nothing is forwarded or NATed, and
  IPv6 is off on the bridge and every veth: IPv4 packets only go between
  the hosts of one run (and to this process).

Each node runs as ``ip netns exec nymtx-<N>-<name> python -m nymtx.localnet
--node NAME --netns-plan JSON``, listening on its own address with nym's
default ports (directory 8080, mixnodes 1789, gateways 1789 and 9000) and
announcing that address. The run removes what it made when it stops, also
when it fails; what a killed run left is removed by ``python -m
nymtx.localnet.netns --clean``.
"""

import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import attrs
from twisted.internet.threads import deferToThreadPool

from nymtx.localnet.model import LocalNetError, NodePlan, Timing
from nymtx.localnet.processes import ProcessNetwork

PREFIX = "nymtx"
#: the /16 every run takes its /24 from
NETWORK = ipaddress.ip_network("10.231.0.0/16")
#: the first host's last byte; .1 is the bridge
FIRST_HOST = 10
MAX_HOSTS = 254 - FIRST_HOST + 1
#: nym's default ports: with a host per node, every node can have them
DIRECTORY_PORT = 8080
MIX_PORT = 1789
CLIENTS_PORT = 9000

_NAMESPACE = re.compile(rf"^{PREFIX}-(\d{{1,3}})-")
_LINK = re.compile(rf"^{PREFIX}(\d{{1,3}})(?:b|v\d+)$")
_OWNER = re.compile(r"pid=(\d+)")


CANNOT = "cannot create network namespaces (this needs root or CAP_NET_ADMIN)"


class NetnsError(LocalNetError):
    """A namespace, veth or bridge could not be made or removed; says which and why."""


def _ip(*args, check=True):
    """Run ``ip ARGS``; NetnsError with ip's own message if it fails."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetnsError("the 'ip' command (iproute2) is not installed")
    except subprocess.TimeoutExpired:
        raise NetnsError(f"'ip {' '.join(args)}' did not finish in 30 s")
    if check and done.returncode != 0:
        raise NetnsError(f"'ip {' '.join(args)}' failed: "
                         f"{done.stderr.strip() or 'exit code ' + str(done.returncode)}")
    return done


def unavailable():
    """Why namespaces cannot be made here (a line), or None if they can.

    Found by trying: a namespace is made and removed at once.
    """
    probe = f"{PREFIX}-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as e:
        return f"{CANNOT}: {e}"
    _ip("netns", "del", probe, check=False)
    return None


def namespaces():
    """The names of this machine's network namespaces."""
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def links():
    """The names of the links of this (the root) namespace."""
    done = _ip("-o", "link", "show", check=False)
    names = []
    for line in done.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            names.append(parts[1].strip().split("@")[0])
    return names


def _used_networks():
    """The IPv4 networks this machine routes or has addresses on already."""
    used = []
    for args in (("-4", "route", "show", "table", "all"), ("-4", "-o", "addr", "show")):
        for line in _ip(*args, check=False).stdout.splitlines():
            for word in line.split():
                if "." not in word:
                    continue  # a metric, a device name, a keyword
                try:
                    used.append(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    pass
    return used


@attrs.frozen
class Host:
    """One host of a run: its name, namespace and address."""

    name: str
    namespace: str
    address: str
    veth: str


class Namespaces:
    """The bridge and the namespaces of one run: ``Namespaces.create(names)``.

    ``hosts[name]`` is each host; ``exec_args(name)`` the argv prefix that
    runs a command in it; ``remove()`` takes everything away again (and
    kills what still runs in the namespaces: all of it was started there by
    this run).
    """

    def __init__(self, number, names):
        self.number = number
        self.subnet = ipaddress.ip_network(f"10.231.{number}.0/24")
        self.bridge = f"{PREFIX}{number}b"
        self.bridge_address = str(self.subnet[1])
        self.hosts = {}
        for i, name in enumerate(names):
            self.hosts[name] = Host(name, f"{PREFIX}-{number}-{name}",
                                    str(self.subnet[FIRST_HOST + i]), f"{PREFIX}{number}v{i}")
        self.removed = False

    @classmethod
    def create(cls, names, owner=None):
        """Pick a free /24, make the bridge and one namespace per name."""
        names = list(names)
        if len(set(names)) != len(names):
            raise NetnsError("every host needs its own name")
        if not 1 <= len(names) <= MAX_HOSTS:
            raise NetnsError(f"a run has 1 to {MAX_HOSTS} hosts, not {len(names)}")
        for name in names:
            # a namespace is a file name under /run/netns
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", name):
                raise NetnsError(f"{name!r} cannot name a namespace")
        owner = os.getpid() if owner is None else owner
        used = _used_networks()
        taken = ({int(m.group(1)) for m in map(_LINK.match, links()) if m}
                 | {int(m.group(1)) for m in map(_NAMESPACE.match, namespaces()) if m})
        numbers = list(range(256))
        random.shuffle(numbers)
        for number in numbers:
            subnet = ipaddress.ip_network(f"10.231.{number}.0/24")
            if number in taken or any(subnet.overlaps(n) for n in used if n.prefixlen):
                continue
            run = cls(number, names)
            # The bridge is the lock: of two runs picking one number at
            # once, the second fails to add it and tries the next.
            added = _ip("link", "add", run.bridge, "type", "bridge", check=False)
            if added.returncode:
                if "exists" in added.stderr:
                    continue
                raise NetnsError(f"{CANNOT}: 'ip link add {run.bridge} type bridge' failed:"
                                 f" {added.stderr.strip()}")
            try:
                run._build(owner)
            except BaseException:
                run.remove()
                raise
            return run
        raise NetnsError("no free /24 left in 10.231.0.0/16 (python -m nymtx.localnet.netns"
                         " --clean removes what earlier runs left)")

    def _build(self, owner):
        _ip("link", "set", self.bridge, "alias", f"nymtx localnet pid={owner}")
        _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _no_ipv6(self.bridge)
        _ip("link", "set", self.bridge, "up")
        for host in self.hosts.values():
            _ip("netns", "add", host.namespace)
            # before eth0 exists, so that it starts without IPv6
            _ip("netns", "exec", host.namespace, "sysctl", "-qw",
                "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                check=False)
            _ip("link", "add", host.veth, "type", "veth",
                "peer", "name", "eth0", "netns", host.namespace)
            _no_ipv6(host.veth)
            _ip("link", "set", host.veth, "master", self.bridge, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")

    def exec_args(self, name):
        """``ip netns exec NAMESPACE``: put a command after it to run it on host *name*."""
        return [shutil.which("ip") or "ip", "netns", "exec", self.hosts[name].namespace]

    def remove(self):
        """Kill what runs in the namespaces, delete them and the bridge; idempotent."""
        if self.removed:
            return
        self.removed = True
        remove_run(self.number, [h.namespace for h in self.hosts.values()])


def _no_ipv6(link):
    """IPv6 off on a link of this namespace before it is up: the hosts speak IPv4 only,
    and a link-local IPv6 address would send router solicitations and MLD reports."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass  # a kernel without IPv6 (or a test's scripted ip): nothing to turn off


def _kill_inside(namespace):
    for pid in _ip("netns", "pids", namespace, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ValueError, OSError):
            pass


def remove_run(number, names=None):
    """Delete run *number*'s namespaces (all with its prefix if *names* is None) and links."""
    if names is None:
        names = [n for n in namespaces() if n.startswith(f"{PREFIX}-{number}-")]
    problems = []
    for namespace in names:
        _kill_inside(namespace)
        done = _ip("netns", "del", namespace, check=False)
        if done.returncode and namespace in namespaces():
            problems.append(f"{namespace}: {done.stderr.strip()}")
    # deleting a namespace deletes its veth and the veth's peer; the bridge stays
    for link in links():
        m = _LINK.match(link)
        if m and int(m.group(1)) == number:
            done = _ip("link", "del", link, check=False)
            if done.returncode and link in links():
                problems.append(f"{link}: {done.stderr.strip()}")
    if problems:
        raise NetnsError("could not remove " + "; ".join(problems))


def leftovers():
    """{run number: owner pid or None} for every run whose bridge or namespaces exist."""
    runs = {}
    for namespace in namespaces():
        m = _NAMESPACE.match(namespace)
        if m:
            runs.setdefault(int(m.group(1)), None)
    for link in links():
        m = _LINK.match(link)
        if m and link.endswith("b"):
            number = int(m.group(1))
            alias = _ip("-o", "link", "show", link, check=False).stdout
            owner = _OWNER.search(alias)
            runs[number] = int(owner.group(1)) if owner else None
    return runs


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean(force=False, out=sys.stdout, only=None):
    """Remove what earlier runs left; a run whose owner still lives only with *force*.

    *only*: the run numbers to look at (default: every run).
    """
    kept = 0
    runs = {n: owner for n, owner in leftovers().items() if only is None or n in only}
    if not runs:
        print("nothing to remove: no bridge or namespace of nym-localnet --netns is left",
              file=out)
    for number, owner in sorted(runs.items()):
        if owner is not None and _alive(owner) and not force:
            print(f"run {number}: kept, its process {owner} still runs (--force removes it)",
                  file=out)
            kept += 1
            continue
        remove_run(number)
        print(f"run {number}: removed 10.231.{number}.0/24, its bridge and namespaces", file=out)
    return kept


# ---- the plan on many hosts ---------------------------------------------------

def host_names(nodes, clients=()):
    """Every host of a run in order: the nodes, then the client hosts."""
    return [n.name for n in nodes] + list(clients)


def place(nodes, run):
    """*nodes* with each one's host set to its namespace's address, on nym's ports."""
    placed = []
    for node in nodes:
        ports = {"directory": dict(port=DIRECTORY_PORT),
                 "mixnode": dict(port=MIX_PORT),
                 "gateway": dict(port=MIX_PORT, client_port=CLIENTS_PORT)}[node.kind]
        placed.append(attrs.evolve(node, host=run.hosts[node.name].address, **ports))
    return placed


def encode_plan(nodes, timing):
    """The ``--netns-plan`` text a node process reads its network from."""
    return json.dumps({"nodes": [attrs.asdict(n) for n in nodes],
                       "timing": attrs.asdict(timing)}, separators=(",", ":"))


def decode_plan(text):
    """(nodes, timing) from ``--netns-plan``; ValueError says what is wrong."""
    try:
        value = json.loads(text)
        nodes = [NodePlan(**n) for n in value["nodes"]]
        timing = Timing(**value["timing"])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"not a plan ({type(e).__name__}: {e})")
    for node in nodes:
        for address in (node.host, node.listen_host):
            try:
                ipaddress.IPv4Address(address)
            except (ValueError, TypeError):
                raise ValueError(f"{node.name}: {address!r} is not an IPv4 address")
        if node.kind not in ("directory", "mixnode", "gateway"):
            raise ValueError(f"{node.name}: unknown kind {node.kind!r}")
    if not nodes or nodes[0].kind != "directory":
        raise ValueError("the first node must be the directory")
    return nodes, timing


class NetnsNetwork(ProcessNetwork):
    """Every node in its own namespace (``nym-localnet --netns``), one process each.

    ``start()`` makes the namespaces (NetnsError, one line, if it cannot),
    places the nodes on their addresses, spawns them under ``ip netns exec``
    and fires with the topology once it is complete; ``stopService()``
    stops the nodes and removes every namespace, veth and the bridge.
    *clients* names extra hosts with no node, for clients (``hosts``,
    ``exec_args``). A node's ``bind`` (e.g. ``0.0.0.0``) is kept: it listens
    there and announces its namespace's address. *directories* and *secure*
    are LocalNetwork's: N signing directories, each a host of its own, and
    mix links unless *secure* is false (``--insecure-links``).
    """

    def __init__(self, reactor, home, nodes, clients=(), timing=Timing(), log_level=None,
                 directories=1, secure=True):
        super().__init__(reactor, {"plan": list(nodes), "home": str(home),
                                   "log-level": log_level, "directories": directories,
                                   "insecure-links": not secure})
        self.clients = list(clients)
        self.timing = timing
        self.run = None
        self.directory_url = None

    @property
    def hosts(self):
        return self.run.hosts if self.run else {}

    def exec_args(self, name):
        return self.run.exec_args(name)

    def _command(self, node):
        return self.run.exec_args(node.name) + [
            sys.executable, "-m", "nymtx.localnet", "--node", node.name,
            "--home", self.options["home"],
            "--netns-plan", encode_plan(self.nodes, self.timing),
            "--directories", str(self.directories)] + self._flags()

    def _in_thread(self, f, *args):
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def start(self):
        # some seventy short ip commands: in a thread, not on the reactor
        self.run = await self._in_thread(Namespaces.create, host_names(self.nodes, self.clients))
        self.nodes = place(self.nodes, self.run)
        directory = self.nodes[0]
        self.directory_url = f"http://{directory.host}:{directory.port}"
        self.directory_urls = {n.name: f"http://{n.host}:{n.port}" for n in self.nodes
                               if n.kind == "directory"}
        return await super().start()

    def stopService(self):
        d = super().stopService()

        def remove(result):
            if self.run is None:
                return result
            return self._in_thread(self.run.remove).addCallback(lambda _: result)
        return d.addBoth(remove)


def main(argv=None):
    """``python -m nymtx.localnet.netns --clean [--force] [N …]``: remove what runs left."""
    argv = sys.argv[1:] if argv is None else argv
    flags = [a for a in argv if a.startswith("-")]
    numbers = [a for a in argv if not a.startswith("-")]
    if "--clean" not in flags or set(flags) - {"--clean", "--force"} or not all(
            n.isdigit() and int(n) < 256 for n in numbers):
        print("usage: python -m nymtx.localnet.netns --clean [--force] [N …]\n"
              "  removes the bridges nymtx<N>b and namespaces nymtx-<N>-* that nym-localnet"
              " --netns runs left\n  (--force: also those of runs still going; N: only"
              " these runs)", file=sys.stderr)
        return 2
    try:
        clean(force="--force" in flags, only={int(n) for n in numbers} if numbers else None)
    except NetnsError as e:
        print(f"nymtx.localnet.netns: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
