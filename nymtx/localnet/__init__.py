"""A whole mixnet on 127.0.0.1: a directory, 3 layers of mixnodes, gateways.

``nym-localnet`` runs it in this process (the default) or one OS process per
node (``--processes``); the end-to-end tests and the quick start embed
``LocalNetwork`` directly. The parts:

- ``model``: the plan of nodes and ports, ``describe``, ``poll_topology``;
- ``network``: ``LocalNetwork``, every node in this process;
- ``processes``: ``ProcessNetwork``, one process per node;
- ``tap``: ``Options``, ``makeService`` (twistd's ``nym-localnet``) and ``main``.
"""

from nymtx.localnet.model import (
    HOST, MAX_GATEWAYS, MAX_PER_LAYER, LocalNetError, NodePlan, Timing, describe, plan,
    poll_topology)
from nymtx.localnet.network import LocalNetwork, node_keys
from nymtx.localnet.processes import ProcessNetwork
from nymtx.localnet.tap import Options, main, makeService

__all__ = [
    "HOST", "MAX_GATEWAYS", "MAX_PER_LAYER", "LocalNetError", "LocalNetwork", "NodePlan",
    "Options", "ProcessNetwork", "Timing", "describe", "main", "makeService", "node_keys",
    "plan", "poll_topology"]
