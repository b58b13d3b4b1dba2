"""ProcessNetwork's fault controls: one node's process killed with SIGKILL
and started again on the same home, as the fault runs of reliable delivery
need. Real processes, real sockets."""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nymtx.directory.client import DirectoryClient
from nymtx.localnet.model import LocalNetError
from nymtx.localnet.processes import ProcessNetwork
from nymtx.localnet.tap import Options
from tests.ports import free_ports


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


def process_network(test, per_layer=1):
    options = Options()
    # a plan of n per layer uses 1 + 3n + 1 ports for the nodes, and the
    # gateway's client port
    options.parseOptions(["--processes", "--home", test.mktemp(),
                          "--base-port", str(free_ports(3 * per_layer + 4)),
                          "--mixnodes-per-layer", str(per_layer)])
    network = ProcessNetwork(reactor, options)
    test.addCleanup(network.stopService)
    return network


class KillAndRestartTests(TestCase):
    timeout = 90

    def test_a_killed_mixnode_leaves_and_comes_back(self):
        return Deferred.fromCoroutine(self._kill_and_restart())

    async def _kill_and_restart(self):
        network = process_network(self)
        topology = await network.start()
        self.assertEqual(len(topology.mixnodes), 3)
        layer2 = next(n for n in network.nodes if n.kind == "mixnode" and n.layer == 2)
        code = await network.kill(layer2.name)
        self.assertEqual(code, "signal 9")
        self.assertNotIn(layer2.name, network.children)
        self.assertFalse(await self.answers(layer2.port))  # nobody listens there now
        self.assertRaises(LocalNetError, network.restart, "no-such-node")
        network.restart(layer2.name)
        self.assertRaises(LocalNetError, network.restart, layer2.name)  # running again
        for _ in range(100):
            if await self.answers(layer2.port):
                break
            await sleep(0.1)
        self.assertTrue(await self.answers(layer2.port))
        # the same home, so the same keys: the directory lists the same node
        directory = DirectoryClient(network.directory_url, reactor=reactor)
        self.addCleanup(directory.close)
        now = await directory.get_topology()
        self.assertEqual({m.public_key for m in now.mixnodes if m.layer == 2},
                         {m.public_key for m in topology.mixnodes if m.layer == 2})

    async def answers(self, port):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2)
        try:
            connected = await connectProtocol(endpoint, Protocol())
        except ConnectError:
            return False
        connected.transport.loseConnection()
        return True

    def test_killing_a_node_that_is_not_running_fails(self):
        network = process_network(self)
        return self.assertFailure(network.kill("mix-2-1"), LocalNetError)
