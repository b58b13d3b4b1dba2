"""What a measurement records: the adversary's view and the ground truth, apart.

A :class:`Trace` comes from a simulated network (:mod:`nymtx.measure.sim`)
or from a real one tapped inside its nodes; the attacks read only
:meth:`Trace.view`, and only the scoring reads the truth.

Nodes are numbered: clients ``0..C-1``, then mixnodes, then gateways.

The adversary (a global passive observer) sees, for every packet on every
mix link, the time and the two ends (``hops``); on every client–gateway
link the times of pulls and, where the link leaks it, how many messages an
answer held (``pulls``). The truth says, for every hop, which packet it
was, and for every packet its sender, kind, recipient and message.
"""

import attrs
import numpy as np

#: packet kinds: a client's forward packets (real, loop and drop cover),
#: and SURB packets (docs/surb.md): the ack a gateway sends for every packet
#: that ends at it, and anonymous replies
REAL, LOOP, DROP, ACK, REPLY = 0, 1, 2, 3, 4
KIND_NAMES = {REAL: "real", LOOP: "loop", DROP: "drop", ACK: "ack", REPLY: "reply"}
#: the kinds a client sends into layer 1 itself
FORWARD = (REAL, LOOP, DROP)
#: ``packet_message`` of a real packet or a reply that carries no workload
#: message but one the clients made themselves: reply blocks sent on request
#: (a top-up), a request for more (docs/surb.md §5.6)
PROTOCOL = -2


@attrs.define
class Topology:
    clients: list           # names
    mix_layers: list        # per mixnode: its layer (1..3)
    gateways: list          # names
    client_gateway: list    # per client: its gateway index (0-based among gateways)

    @property
    def n_clients(self):
        return len(self.clients)

    @property
    def first_mix(self):
        return self.n_clients

    @property
    def first_gateway(self):
        return self.n_clients + len(self.mix_layers)

    def node_name(self, node):
        if node < self.first_mix:
            return f"client {self.clients[node]}"
        if node < self.first_gateway:
            i = node - self.first_mix
            return f"mix {self.mix_layers[i]}.{i}"
        return f"gateway {self.gateways[node - self.first_gateway]}"


@attrs.define
class View:
    """Everything a global passive observer sees, and nothing else."""

    topology: Topology
    #: every packet transmission on a mix link, in time order:
    #: ``time`` (s), ``src`` and ``dst`` (node numbers), ``size`` (bytes)
    hop_time: np.ndarray
    hop_src: np.ndarray
    hop_dst: np.ndarray
    hop_size: np.ndarray
    #: every pull answer on a client–gateway link: time, client, and the
    #: number of messages it visibly held (-1 where the link hides it)
    pull_time: np.ndarray
    pull_client: np.ndarray
    pull_count: np.ndarray
    #: the transmissions the adversary is asked about (indices into hops):
    #: each real message's last mix hop into its gateway. Asking about a
    #: known exit packet is the standard game (Loopix §4, WPES'21): the
    #: recipient, or its gateway, may be the adversary.
    targets: np.ndarray
    duration: float


@attrs.define
class Trace:
    topology: Topology
    duration: float
    # ---- per hop (a transmission), in time order
    hop_time: np.ndarray
    hop_src: np.ndarray
    hop_dst: np.ndarray
    hop_size: np.ndarray
    hop_packet: np.ndarray          # truth: which packet
    # ---- per packet (truth)
    #: the client that sent it; for an ack, the client whose packet it acks
    #: (the ack's destination), though a gateway sent it into layer 1
    packet_sender: np.ndarray
    packet_kind: np.ndarray
    packet_recipient: np.ndarray    # client number, or -1 (drop cover)
    packet_message: np.ndarray      # message number, or -1
    packet_sent: np.ndarray         # time it left the client
    packet_delays: np.ndarray       # (packets, hops) delays chosen, s; NaN past the route
    # ---- per message (truth)
    message_sender: np.ndarray
    message_recipient: np.ndarray
    message_queued: np.ndarray      # time the application handed it over
    # ---- client–gateway link
    pull_time: np.ndarray
    pull_client: np.ndarray
    pull_count: np.ndarray          # visible count, or -1
    pull_true_count: np.ndarray     # truth: messages really delivered in that pull
    # ---- workload phases, for plots: list of (start, end, label)
    phases: list = attrs.Factory(list)
    #: per packet: for an ack, the packet it acknowledges (-1 if that one
    #: is outside the trace); -1 for every other packet. None: a trace
    #: without acks (the model, a release before them)
    packet_origin: np.ndarray = None
    #: anonymous replies (the real network, a workload with replies; None
    #: otherwise): per reply its replier, the builder it went to, the message
    #: it answers and when the replier's application queued it. A REPLY
    #: packet's ``packet_message`` is its reply's number (or PROTOCOL)
    reply_sender: np.ndarray = None
    reply_recipient: np.ndarray = None
    reply_to: np.ndarray = None
    reply_queued: np.ndarray = None

    def exits(self):
        """Per real message, the index of its hop into the gateway (-1 if it never got there)."""
        out = np.full(len(self.message_sender), -1, dtype=np.int64)
        into_gateway = self.hop_dst >= self.topology.first_gateway
        for hop in np.nonzero(into_gateway)[0]:
            packet = self.hop_packet[hop]
            if self.packet_kind[packet] == REAL and self.packet_message[packet] >= 0:
                out[self.packet_message[packet]] = hop
        return out

    def view(self):
        exits = self.exits()
        return View(
            topology=self.topology, hop_time=self.hop_time, hop_src=self.hop_src,
            hop_dst=self.hop_dst, hop_size=self.hop_size, pull_time=self.pull_time,
            pull_client=self.pull_client, pull_count=self.pull_count,
            targets=exits[exits >= 0], duration=self.duration)

    def target_senders(self):
        """The true sender of each target of :meth:`view`, in the same order."""
        exits = self.exits()
        return self.message_sender[exits >= 0]

    def target_recipients(self):
        """The recipient of each target: the party the adversary plays (it
        knows which message it received, not who sent it)."""
        exits = self.exits()
        return self.message_recipient[exits >= 0]

    def check_complete(self):
        """Every hop names a packet, every packet has a sender and a kind,
        every real packet a message: the truth covers the whole view."""
        problems = []
        n = len(self.packet_sender)
        if len(self.hop_packet) and (self.hop_packet.min() < 0 or self.hop_packet.max() >= n):
            problems.append("a hop names no known packet")
        if np.any(self.packet_sender < 0):
            problems.append("a packet has no sender")
        real = self.packet_kind == REAL
        if np.any((self.packet_message[real] < 0) & (self.packet_message[real] != PROTOCOL)):
            problems.append("a real packet names no message")
        if np.any(self.packet_message[real] >= len(self.message_sender)):
            problems.append("a real packet names a message that is not in the workload")
        replies = self.packet_kind == REPLY
        if replies.any():
            known = -1 if self.reply_sender is None else len(self.reply_sender)
            got = self.packet_message[replies]
            if np.any(((got < 0) & (got != PROTOCOL)) | (got >= known)):
                problems.append("a reply packet names no reply")
        if np.any(~np.isin(self.packet_kind, list(KIND_NAMES))):
            problems.append("a packet of unknown kind")
        return problems
