"""The real network, measured: a local network in this process, tapped inside its nodes.

:func:`capture` starts a :class:`~nymtx.localnet.LocalNetwork` (ports
``tcp:0``, a temporary home) and N embedded clients, drives a workload of
:class:`~nymtx.measure.sim.Phase` against them on the real reactor, and
records, as a global passive observer would:

- every mix-link packet as a mixnode or gateway receives it: the time, the
  receiving node, the sending node or client, the bytes. The sender is the
  connection's source address, never anything the packet says: every
  client, mixnode and gateway makes its outgoing connections from its own
  loopback address (127.1.x.x clients, 127.2.x.x mixnodes, 127.3.x.x
  gateways, which send the acks into layer 1), as machines of a real
  network have their own;
- every chunk of bytes on every client–gateway connection, both ways, as the
  gateway's listener reads and writes it (the client is again the
  connection's source address), and which answers are pull answers.

No node or client has a hook for this: every listener is a
:class:`nymtx.listening.ConnectionLimit`, a Twisted ``WrappingFactory``, and
the measurement puts a :class:`TappingFactory` between it and the node's
protocol factory (its ``wrappedFactory``); the clients and mixnodes get a
reactor that binds their outgoing connections. A node that is not measured
is the same code, untouched.

:func:`to_trace` then finds the truth: it peels every recorded packet with
the node keys, read from the home's key files
(:func:`nymtx.sphinx.process_packet`), chains the hops into routes by their
bytes (what a node forwards is what the next node receives), and at the
gateway reads the destination and the payload to classify the packet: a
real message of the workload, loop cover (today's clients: a MAC under the
client's own key, :mod:`nymtx.client.cover`; or the message layer's typed,
encrypted payloads, opened with the clients' keys, when it is there) or drop
cover. Every such packet's SURB-ACK names the ack its gateway then sends
into layer 1 (docs/surb.md §2): acks are peeled hop by hop too, tied to the
packet they acknowledge, and told from replies by the client's ack key.
A reply is opened with the keys of the reply block it came through (noted
as the builder's client made them); the replier's SURB-ACK inside names
the ack the builder's client then sends on (docs/surb.md §5.4). Messages
of several fragments (an anonymous message's reply blocks take 420 bytes
each) are gathered by set id until whole.
The result is a :class:`~nymtx.measure.trace.Trace` like the model's,
and a list of problems: every packet the truth cannot explain is named
there, none is dropped silently.
"""

import collections
import os
import tempfile

import attrs
import numpy as np
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from zope.interface import directlyProvides, providedBy

from nymtx.addressing import NodeAddress
from nymtx.client.config import ClientConfig
from nymtx.gateway import frames as F
from nymtx.keys import KeyPair
from nymtx.localnet.model import count as _count_words
from nymtx.localnet import HOST, LocalNetwork, Timing, plan
from nymtx.measure.sim import _poisson_times
from nymtx.measure.trace import ACK, DROP, LOOP, PROTOCOL, REAL, REPLY, Topology, Trace
from nymtx.reliable import replies as reply_layer
from nymtx.reliable.ack import COMPACT_ADDRESS_SIZE, SURB_ACK_SIZE
from nymtx.sphinx import ForwardHop, SphinxError, process_packet
from nymtx.sphinx.constants import ADDRESS_SIZE, HEADER_SIZE, MAX_MESSAGE_SIZE
from nymtx.sphinx.surb import (SurbDelivery, SurbError, SurbKeys, open_surb_delivery,
                               process_gateway_packet)

try:   # the end-to-end message layer (issue 11), when it is merged
    from nymtx import message as _message_layer
except ImportError:   # pragma: no cover - depends on what main holds
    _message_layer = None

#: the directions of a client–gateway chunk
UP, DOWN = 0, 1
#: p_message of a fragment whose set is not yet whole (to_trace, internal)
PENDING = -3
#: seconds past its due time after which a packet that never reached its next
#: hop, though the recording went on, is lost (a problem), not in flight
LOST_AFTER = 2.0


def debug_ms(settings):
    """The client's ``[debug]`` keys (ms) for the rates of *settings* (s)."""
    def ms(seconds):
        return max(1, int(round(seconds * 1000)))
    return {"message_sending_average_delay": ms(settings.send_gap),
            "loop_cover_traffic_average_delay": ms(settings.loop_gap),
            "average_packet_delay": ms(settings.hop_delay),
            "fetch_message_delay": ms(settings.fetch_gap)}


def source_host(kind, index):
    """The loopback address client, mixnode or gateway number *index*
    connects from (gateways send acks into layer 1, docs/surb.md §2.5)."""
    base = {"client": 1, "mixnode": 2, "gateway": 3}[kind]
    return f"127.{base}.{index // 250}.{index % 250 + 1}"


class SourceBoundReactor:
    """The reactor, except that every outgoing TCP connection leaves from *host*.

    An observer tells machines apart by their addresses; on one machine the
    measurement gives each client and mixnode a loopback address of its own.
    """

    def __init__(self, reactor, host):
        self._reactor = reactor
        self._host = host
        directlyProvides(self, *providedBy(reactor))

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        return self._reactor.connectTCP(host, port, factory, timeout,
                                        bindAddress or (self._host, 0))

    def __getattr__(self, name):
        return getattr(self._reactor, name)


class TappingFactory:
    """A protocol factory that hands each protocol *factory* builds, with the
    peer's address, to ``tap(protocol, addr)`` and uses what it returns.

    Everything else is *factory*'s: put between a ConnectionLimit and the
    factory it wraps, the listener's bounds and the node's protocol are
    unchanged.
    """

    def __init__(self, factory, tap):
        self._factory = factory
        self._tap = tap

    def buildProtocol(self, addr):
        protocol = self._factory.buildProtocol(addr)
        return None if protocol is None else self._tap(protocol, addr)

    def __getattr__(self, name):
        return getattr(self._factory, name)


def tap_listener(limit, tap):
    """Put *tap* into the listener whose ConnectionLimit is *limit*."""
    limit.wrappedFactory = TappingFactory(limit.wrappedFactory, tap)


class _TappedTransport:
    """A transport that shows what is written through it to *on_write*."""

    def __init__(self, transport, on_write):
        self._transport = transport
        self._on_write = on_write
        directlyProvides(self, *providedBy(transport))

    def write(self, data):
        self._on_write(data)
        self._transport.write(data)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def __getattr__(self, name):
        return getattr(self._transport, name)


@attrs.define(eq=False)
class Capture:
    """Everything recorded in one run; times are the reactor's (absolute)."""

    home: str
    clients: list               # client ids, in node order
    mixnodes: list              # node names, in node order (layer by layer)
    mix_layers: list
    gateways: list
    client_gateway: list
    node_address: dict          # 32-byte address of a listener -> node number
    start: float                # the workload's time 0
    end: float                  # the end of the recording
    phase_end: float            # the workload's last phase end (relative)
    phases: list = attrs.Factory(list)    # (start, end, label), for the plots
    # mix-link packets: (time, receiving node, sending node or -1, bytes)
    packets: list = attrs.Factory(list)
    # client–gateway chunks: (time, client or -1, UP/DOWN, size)
    chunks: list = attrs.Factory(list)
    # pull answers: (time, client, bytes written, messages the store gave,
    # the client's key)
    pulls: list = attrs.Factory(list)
    # the workload's messages: sender, recipient, queued (relative), body
    message_sender: list = attrs.Factory(list)
    message_recipient: list = attrs.Factory(list)
    message_queued: list = attrs.Factory(list)
    message_body: list = attrs.Factory(list)
    #: per message: None (left its client), or why it did not
    message_unsent: list = attrs.Factory(list)
    #: anonymous replies (a workload with ``replies``): the replier, the
    #: builder it answers, the message it answers, when it was queued
    #: (relative), its body, None or why it did not leave, and when the
    #: builder's application got it (relative; None: not by the end)
    reply_sender: list = attrs.Factory(list)
    reply_recipient: list = attrs.Factory(list)
    reply_to: list = attrs.Factory(list)
    reply_queued: list = attrs.Factory(list)
    reply_body: list = attrs.Factory(list)
    reply_unsent: list = attrs.Factory(list)
    reply_received: list = attrs.Factory(list)
    #: per message, when its recipient's application got it (relative), for
    #: a workload with anonymous messages (None: not received, or not noted)
    message_received: list = attrs.Factory(list)
    #: whether the workload sent anonymous messages at all
    anonymous: bool = False
    #: the keys of every reply block a client built (identifier -> the
    #: SurbKeys' bytes), noted as the client remembered them: the client
    #: deletes them when it opens a reply, so the truth keeps its own copy
    reply_keys: dict = attrs.Factory(dict)
    problems: list = attrs.Factory(list)
    #: the directory's topology document when the workload started: the
    #: public knowledge of who listens where (what a pcap reader is given)
    topology: dict = None


class Recorder:
    """The taps: installed on the listeners of a :class:`TappedNetwork`."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.sources = {}        # source host -> node number
        self.client_keys = {}    # client public key -> client number
        self.key_of = {}         # client number -> public key
        self.packets = []
        self.chunks = []
        self.pulls = []
        # client key -> what each store pull not yet written gave, in order:
        # answers wait for the gateway's commit, and a client keeps several
        # pulls in flight (nymtx.gateway.private_server), so two pulls may
        # be taken before the first answer is written
        self._pending = collections.defaultdict(collections.deque)
        self.problems = []
        self.reply_keys = {}     # reply block identifier -> SurbKeys bytes

    def reply_store_tap(self, store):
        """A client's reply store, with the keys of each block it builds noted."""
        return _KeysNoted(store, self.reply_keys)

    def source(self, host):
        return self.sources.get(host, -1)

    def mix_tap(self, node):
        packets, seconds = self.packets, self.reactor.seconds

        def tap(protocol, addr):
            src = self.source(addr.host)
            received = protocol.packetReceived

            def packetReceived(packet):
                packets.append((seconds(), node, src, packet))
                received(packet)
            protocol.packetReceived = packetReceived
            return protocol
        return tap

    def client_link_tap(self):
        chunks, seconds = self.chunks, self.reactor.seconds

        def tap(protocol, addr):
            client = self.source(addr.host)
            data_received = protocol.dataReceived
            make_connection = type(protocol).makeConnection

            def dataReceived(data):
                chunks.append((seconds(), client, UP, len(data)))
                data_received(data)

            def on_write(data):
                now = seconds()
                chunks.append((now, client, DOWN, len(data)))
                # the answer to a pull is written as the store gave it; the
                # channel knows the key its handshake proved
                proven = getattr(getattr(protocol, "channel", None), "remote_key", None)
                key = self.key_for(client, proven)
                if key is not None and self._pending.get(key):
                    if proven is not None and proven != key:
                        self.problems.append(
                            f"the gateway answered a pull of client {proven.hex()[:8]}"
                            f" on a connection from {addr.host}")
                    self.pulls.append((now, client, bytes(data), self._pending[key].popleft(),
                                       key))

            def makeConnection(transport):
                make_connection(protocol, _TappedTransport(transport, on_write))
            protocol.dataReceived = dataReceived
            protocol.makeConnection = makeConnection
            return protocol
        return tap

    def key_for(self, client, proven):
        """The key whose pull answers a connection from *client* carries."""
        return self.key_of.get(client)

    def store_pull_tap(self, store):
        """The store, as the client listener should see it: its pulls noted."""
        return _PullNoted(store, self._pending)


class _PullNoted:
    """A gateway store whose ``pull`` notes how many messages it gave (the truth
    of the answer the listener writes next); everything else is the store's."""

    def __init__(self, store, pending):
        self._store = store
        self._pending = pending

    def pull(self, client_key, limit, after=0):
        got = self._store.pull(client_key, limit, after=after)
        self._pending[bytes(client_key)].append(len(got))
        return got

    def __getattr__(self, name):
        return getattr(self._store, name)


class _KeysNoted:
    """A client's ReplyStore whose ``remember`` notes the keys of each reply
    block (the truth of the replies through it); everything else is the store's."""

    def __init__(self, store, keys):
        self._store = store
        self._keys = keys

    def remember(self, keys, tag, expires_at):
        self._keys[bytes(keys.identifier)] = keys.to_bytes()
        return self._store.remember(keys, tag, expires_at)

    def __getattr__(self, name):
        return getattr(self._store, name)


class TappedNetwork(LocalNetwork):
    """A LocalNetwork whose listeners record through a :class:`Recorder`, and
    whose mixnodes connect from addresses of their own."""

    def __init__(self, reactor, home, nodes, recorder, clients, timing=Timing(), only=None):
        # plain links, unsigned directory: the taps read packets on the links
        super().__init__(reactor, home, nodes, timing=timing, only=only, secure=False)
        self.recorder = recorder
        mixnodes = [n for n in nodes if n.kind == "mixnode"]
        self.mixnode_names = [n.name for n in sorted(mixnodes, key=lambda n: (n.layer, n.name))]
        self.gateway_names = [n.name for n in nodes if n.kind == "gateway"]
        # node numbers as in a Trace: clients first, then mixnodes, then gateways
        self.first_mix = clients

    def _make(self, node):
        if node.kind not in ("mixnode", "gateway"):
            service = super()._make(node)
        else:
            # a gateway too sends on mix links: every packet that ends at it
            # makes it send an ack packet into layer 1 (docs/surb.md §2.5)
            source = (source_host("mixnode", self.mixnode_names.index(node.name))
                      if node.kind == "mixnode"
                      else source_host("gateway", self.gateway_names.index(node.name)))
            real, self.reactor = self.reactor, SourceBoundReactor(self.reactor, source)
            try:
                service = super()._make(node)
            finally:
                self.reactor = real
        number = self.node_number(node.name)
        if node.kind == "mixnode":
            tap_listener(service.factory, self.recorder.mix_tap(number))
        elif node.kind == "gateway":
            tap_listener(service.mix_listener.factory, self.recorder.mix_tap(number))
            tap_listener(service.client_listener.factory, self.recorder.client_link_tap())
            service.client_factory.store = self.recorder.store_pull_tap(
                service.client_factory.store)
        return service

    def gateway_key(self, name):
        return self.node_services[name].keys.public_text

    def node_number(self, name):
        if name in self.mixnode_names:
            return self.first_mix + self.mixnode_names.index(name)
        if name in self.gateway_names:
            return self.first_mix + len(self.mixnode_names) + self.gateway_names.index(name)
        return -1


def message_schedule(phases, clients, send_gap, rng, conversations=False):
    """(queued time, sender, recipient) of every message of *phases*, in time
    order; the same script as the model's (:func:`nymtx.measure.sim.simulate`).
    With *conversations*, each tuple ends with its Conversation too."""
    out = []
    for phase in phases:
        for conv in phase.conversations:
            if not (0 <= conv.sender < clients and 0 <= conv.recipient < clients):
                raise ValueError(f"conversation {conv} names a client outside 0..{clients - 1}")
            if conv.pattern == "flood":
                times = np.linspace(phase.start, phase.end,
                                    int((phase.end - phase.start) / send_gap * 1.1) + 1,
                                    endpoint=False)
            else:
                times = _poisson_times(rng, 1.0 / conv.rate, phase.start, phase.end)
            out += [(float(t), conv.sender, conv.recipient) + ((conv,) if conversations else ())
                    for t in times]
    out.sort(key=lambda m: m[0])
    return out


def _sleep(reactor, seconds):
    return deferLater(reactor, max(0.0, seconds), lambda: None)


async def capture(reactor, settings, phases, duration, seed=0, home=None,
                  timing=Timing(), drain_timeout=60.0, log=None, processes=False):
    """Run *phases* on a real local network of *settings*; returns a :class:`Capture`.

    The workload starts once every client runs and is listed; after
    *duration* s the recording goes on until every message has left its
    client (at most *drain_timeout* s) and then long enough for it to reach
    its gateway and be pulled. *home* (default: a new temporary folder)
    keeps every key on disk, for :func:`to_trace`. With *processes* every
    node runs in a process of its own (:mod:`nymtx.measure.processes`), its
    taps writing to a file read back once it has stopped.
    """
    from nymtx.client import connect
    s = settings
    say = log or (lambda text: None)
    home = home or tempfile.mkdtemp(prefix="nym-measure-")
    recorder = Recorder(reactor)
    if processes:
        from nymtx.measure.processes import ProcessNodes
        net = ProcessNodes(reactor, home, s, timing)
    else:
        nodes = plan(s.mixnodes_per_layer, s.gateways, 0)
        net = TappedNetwork(reactor, home, nodes, recorder, s.clients, timing=timing)
    for j in range(len(net.mixnode_names)):
        recorder.sources[source_host("mixnode", j)] = s.clients + j
    for k in range(len(net.gateway_names)):
        recorder.sources[source_host("gateway", k)] = s.clients + len(net.mixnode_names) + k
    names = [f"c{i}" for i in range(s.clients)]
    clients = []
    net.startService()
    try:
        url = await net.whenReady()
        say(f"network up at {url}: {_count_words(len(net.mixnode_names), 'mixnode')},"
            f" {_count_words(len(net.gateway_names), 'gateway')}")
        gateway_keys = [net.gateway_key(g) for g in net.gateway_names]
        for i, name in enumerate(names):
            recorder.sources[source_host("client", i)] = i
            # maximum_retransmissions=0: the truth maps each message to one
            # packet; retransmissions (docs/surb.md §3) are not modelled yet.
            # An ack's hops draw their delays with the forward packets' mean,
            # so the per-hop delay checks hold for both streams.
            client = await connect(
                SourceBoundReactor(reactor, source_host("client", i)), home, name, url,
                gateway=gateway_keys[i % len(gateway_keys)], maximum_retransmissions=0,
                average_ack_delay=debug_ms(s)["average_packet_delay"], **debug_ms(s))
            # the keys of the reply blocks it builds, for the truth of replies
            client.core.replies = recorder.reply_store_tap(client.core.replies)
            clients.append(client)
            recorder.client_keys[client.core.keys.public_key] = i
            recorder.key_of[i] = client.core.keys.public_key
        public = await net.wait_for_clients(list(recorder.client_keys))
        addresses = [c.full_address for c in clients]
        node_address = {}
        for name in net.mixnode_names + net.gateway_names:
            port = net.nodes[name].port
            node_address[NodeAddress(HOST, port).to_bytes()] = net.node_number(name)
        say(f"{s.clients} clients running; the workload starts ({duration:g} s)")

        schedule = message_schedule(phases, s.clients, s.send_gap, np.random.default_rng(seed),
                                    conversations=True)
        # which messages their recipient answers: drawn apart, so that the
        # schedule stays the model's
        answered = np.random.default_rng([seed, 1]).random(len(schedule)) < [
            conv.replies for *_, conv in schedule]
        start = reactor.seconds()
        cap = Capture(
            home=home, clients=names, mixnodes=list(net.mixnode_names),
            mix_layers=[net.nodes[n].layer for n in net.mixnode_names],
            gateways=list(net.gateway_names),
            client_gateway=[i % len(net.gateway_names) for i in range(s.clients)],
            node_address=node_address, start=start, end=start, phase_end=duration,
            phases=[(p.start, p.end, p.label) for p in phases],
            packets=recorder.packets, chunks=recorder.chunks, pulls=recorder.pulls,
            problems=recorder.problems, topology=public.to_json(),
            anonymous=any(conv.anonymous for *_, conv in schedule),
            reply_keys=recorder.reply_keys)
        sends = []
        replies = []
        replying = [True]

        def send(index, sender, recipient, body, conv):
            if conv.anonymous:
                d = clients[sender].send_anonymous(addresses[recipient], body, conv.reply_surbs)
            else:
                d = clients[sender].send(addresses[recipient], body)

            def failed(f):
                cap.message_unsent[index] = f"{type(f.value).__name__}: {f.getErrorMessage()}"

            def left(_):
                cap.message_unsent[index] = None
            return d.addCallbacks(left, failed)

        def reply(replier, message, tag):
            r = len(cap.reply_sender)
            body = b"nym-measure reply to %d" % message
            cap.reply_sender.append(replier)
            cap.reply_recipient.append(cap.message_sender[message])
            cap.reply_to.append(message)
            cap.reply_queued.append(reactor.seconds() - start)
            cap.reply_body.append(body)
            cap.reply_unsent.append("still queued at the end")
            cap.reply_received.append(None)

            def failed(f):
                cap.reply_unsent[r] = f"{type(f.value).__name__}: {f.getErrorMessage()}"

            def left(_):
                cap.reply_unsent[r] = None
            replies.append(clients[replier].reply(tag, body).addCallbacks(left, failed))

        def received(client, message):
            # what each application does with what it gets: a message of the
            # workload that came with a sender tag is answered if drawn so;
            # a reply is noted (its builder's application has it)
            if message.sender_tag is None:
                return
            data = bytes(message.data)
            for prefix, answer in ((b"nym-measure message ", True),
                                   (b"nym-measure reply to ", False)):
                if data.startswith(prefix) and data[len(prefix):].isdigit():
                    number = int(data[len(prefix):])
                    break
            else:
                return
            if answer and number < len(cap.message_received) \
                    and cap.message_received[number] is None:
                cap.message_received[number] = reactor.seconds() - start
            if not answer:
                if number in cap.reply_to:
                    r = cap.reply_to.index(number)
                    if cap.reply_received[r] is None:
                        cap.reply_received[r] = reactor.seconds() - start
            elif number < len(answered) and answered[number] and replying[0] \
                    and cap.message_recipient[number] == client and number not in cap.reply_to:
                reply(client, number, message.sender_tag)

        if cap.anonymous:
            for i, client in enumerate(clients):
                client.on_received(lambda message, i=i: received(i, message))

        for index, (t, sender, recipient, conv) in enumerate(schedule):
            body = b"nym-measure message %d" % index
            cap.message_sender.append(sender)
            cap.message_recipient.append(recipient)
            cap.message_queued.append(t)
            cap.message_body.append(body)
            cap.message_unsent.append("still queued at the end")
            cap.message_received.append(None)
            sends.append(Deferred())
            # a DelayedCall fires the send; the Deferred says it left (or not)
            reactor.callLater(max(0.0, start + t - reactor.seconds()),
                              lambda i=index, a=sender, b=recipient, m=body, c=conv, w=sends[-1]:
                              send(i, a, b, m, c).chainDeferred(w))
        while reactor.seconds() < start + duration:
            await _sleep(reactor, min(60.0, start + duration - reactor.seconds()))
            if reactor.seconds() < start + duration:
                say(f"  {reactor.seconds() - start:.0f} s of {duration:g} s"
                    + ("" if processes else f", {len(recorder.packets)} packets tapped"))
        waiting = DeferredList(sends, consumeErrors=True)
        waiting.addTimeout(drain_timeout, reactor)
        try:
            await waiting
        except Exception:
            pass   # what is still queued is named per message
        # long enough for the last message to cross four delays and be pulled
        await _sleep(reactor, (s.layers + 1) * s.hop_delay * 5 + 3 * s.fetch_gap)
        if cap.anonymous:
            # every message to be answered that left is received (or the
            # timeout passes); then no new replies, and those queued leave,
            # cross four delays, are pulled by their builder, whose stream
            # then sends their acks
            due = reactor.seconds() + drain_timeout
            while reactor.seconds() < due and any(
                    answered[i] and cap.message_unsent[i] is None
                    and cap.message_received[i] is None for i in range(len(schedule))):
                await _sleep(reactor, 0.1)
            replying[0] = False
            waiting = DeferredList(list(replies), consumeErrors=True)
            waiting.addTimeout(drain_timeout, reactor)
            try:
                await waiting
            except Exception:
                pass
            await _sleep(reactor, 2 * (s.layers + 1) * s.hop_delay * 5 + 3 * s.fetch_gap
                         + 3 * s.send_gap)
        cap.end = reactor.seconds()
    finally:
        for client in clients:
            try:
                await client.stop()
            except Exception:
                pass
        await net.stopService()
    if processes:
        net.collect(recorder)   # the nodes have stopped: their files are whole
    say(f"recorded {len(recorder.packets)} packets and {len(recorder.pulls)} pulls"
        f" in {cap.end - start:.0f} s")
    return cap


def nodes_document(cap):
    """The nodes file a pcap of this capture's network is read with
    (:func:`nymtx.measure.pcap.load_nodes`): the public topology, the source
    address each mixnode connects from, and the clients' addresses by name."""
    doc = dict(cap.topology)
    layers = sorted(range(len(cap.mixnodes)), key=lambda j: (cap.mix_layers[j], cap.mixnodes[j]))
    address = {number: NodeAddress.from_bytes(raw) for raw, number in cap.node_address.items()}
    first_mix = len(cap.clients)
    doc["sources"] = {source_host("mixnode", j): f"{address[first_mix + j].ip}:"
                      f"{address[first_mix + j].port}" for j in layers}
    # the gateways' outgoing connections, which carry their acks into layer 1
    first_gateway = first_mix + len(cap.mixnodes)
    doc["sources"].update({source_host("gateway", k): f"{address[first_gateway + k].ip}:"
                           f"{address[first_gateway + k].port}"
                           for k in range(len(cap.gateways))})
    doc["clients"] = {source_host("client", i): name for i, name in enumerate(cap.clients)}
    return doc


# ---- the truth ------------------------------------------------------------

def _load_keys(cap):
    """Every node's and client's private key, from the files in the home."""
    node_keys = {}
    for j, name in enumerate(cap.mixnodes):
        node_keys[len(cap.clients) + j] = KeyPair.load(os.path.join(cap.home, "localnet", name))
    first_gateway = len(cap.clients) + len(cap.mixnodes)
    for k, name in enumerate(cap.gateways):
        node_keys[first_gateway + k] = KeyPair.load(os.path.join(cap.home, "localnet", name))
    client_keys = [ClientConfig.load(cap.home, c).load_keys() for c in cap.clients]
    return node_keys, client_keys


def _load_ack_keys(cap):
    """Each client's ack key (docs/surb.md §2.3), from its outbox file; None
    for a client without one (a release before acks)."""
    import sqlite3
    out = []
    for c in cap.clients:
        path = ClientConfig.load(cap.home, c).outbox_path
        key = None
        if os.path.exists(path):
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE name = 'ack_key'").fetchone()
                key = bytes(row[0]) if row else None
            except sqlite3.Error:
                key = None
            finally:
                db.close()
        out.append(key)
    return out


def surb_kind(clients, ack_keys, delivery):
    """(ACK or REPLY, client) of a :class:`~nymtx.sphinx.surb.SurbDelivery`
    at its gateway, or None when its destination is no client's (*clients*:
    public key -> client number; *ack_keys*: per client, its ack key).

    An ack's identifier opens under its client's ack key (docs/surb.md
    §2.3); a reply block's identifier is random, and opens as an ack only
    with probability 2⁻¹⁶: a SURB packet that does not open is a reply."""
    c = clients.get(bytes(delivery.destination))
    if c is None:
        return None
    return (ACK if ack_identifier_opens(ack_keys[c], delivery.identifier) else REPLY), c


def ack_identifier_opens(ack_key, identifier):
    """Whether *identifier* is an ack identifier under *ack_key*, cover's
    (number 0) included: ``nymtx.reliable.ack.open_ack`` hides cover's."""
    if ack_key is None:
        return False
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    plain = Cipher(algorithms.AES(ack_key), modes.ECB()).decryptor().update(bytes(identifier))
    return plain[14:] == b"\x00\x00"


@attrs.frozen
class Piece:
    """One fragment of a message of several (an anonymous message, with its
    reply blocks, or a top-up of blocks): its message is known once the set
    is whole. *key* names the set: (forward or reply, client, set id)."""

    key: tuple
    index: int
    count: int
    data: bytes


class FragmentSets:
    """The pieces of multi-fragment messages, gathered until each set is whole."""

    def __init__(self):
        self._sets = {}

    def add(self, piece, packet):
        """Note *piece* of *packet*; (the set's data, its packets) when it is
        whole, else None. A piece seen twice, or of a set whose count it
        contradicts, raises ValueError (retransmissions are off: neither
        should happen)."""
        count, got = self._sets.setdefault(piece.key, (piece.count, {}))
        if piece.count != count or not 0 <= piece.index < count:
            raise ValueError(f"a fragment {piece.index} of {piece.count} in a set of {count}")
        if piece.index in got:
            raise ValueError(f"fragment {piece.index} of {count} seen twice")
        got[piece.index] = (piece.data, packet)
        if len(got) < count:
            return None
        del self._sets[piece.key]
        return (b"".join(got[i][0] for i in range(count)), [got[i][1] for i in range(count)])

    def incomplete(self):
        """(key, pieces seen, count, their packets, the data of its first
        piece or None) of each set still open."""
        return [(key, len(got), count, [p for _, p in got.values()],
                 got[0][0] if 0 in got else None)
                for key, (count, got) in self._sets.items()]


class Classifier:
    """Reads a final hop's destination and payload: (kind, recipient, message number).

    Payloads are the message layer's envelopes (:mod:`nymtx.message`),
    sealed to the recipient with a type byte inside, opened here with the
    clients' (or, for drop cover, the gateways') keys; a workload body sent
    as plaintext (a capture of the previous release) is matched as it is.
    ``None`` for a payload nothing explains. A fragment of a message of
    several gives a :class:`Piece` in place of the message number
    (:class:`FragmentSets` joins them; :meth:`resolve` reads the whole).
    """

    def __init__(self, client_keys, gateway_keys, bodies, reply_bodies=()):
        self.clients = {k.public_key: i for i, k in enumerate(client_keys)}
        self.client_keys = client_keys
        self.gateways = {k.public_key: k for k in gateway_keys}
        self.bodies = {b: i for i, b in enumerate(bodies)}
        self.reply_bodies = {b: i for i, b in enumerate(reply_bodies)}

    def classify(self, destination, payload):
        c = self.clients.get(destination)
        if c is not None:
            if payload in self.bodies:
                return REAL, c, self.bodies[payload]
            opened = self._open(self.client_keys[c], payload)
            if opened is not None:
                kind, data = opened
                if kind == REAL:
                    if data.count > 1:
                        return REAL, c, Piece(("forward", c, bytes(data.set_id)), data.index,
                                              data.count, bytes(data.data))
                    m = self.resolve(bytes(data.data))
                    return (REAL, c, m) if m is not None else None
                return kind, c, -1
        # drop cover may be sealed to the gateway that discards it
        for gateway in self.gateways.values():
            opened = self._open(gateway, payload)
            if opened is not None and opened[0] == DROP:
                return DROP, -1, -1
        return None

    def resolve(self, framed):
        """The workload message of a whole message's ``kind || data``:
        its number, PROTOCOL for a top-up of reply blocks, None if unknown."""
        m = self.bodies.get(framed[1:], self.bodies.get(framed))
        if m is not None:
            return m
        if framed[:1] in (bytes((reply_layer.REPLIABLE,)), bytes((reply_layer.TOP_UP,))):
            try:
                got = reply_layer.decode_forward(framed)
            except reply_layer.ReplyError:
                return None
            if isinstance(got, reply_layer.TopUp):
                return PROTOCOL
            return self.bodies.get(bytes(got.body))
        return None

    def resolve_reply(self, data):
        """The reply number of a whole reply's data, PROTOCOL for a request
        for more blocks, None if unknown."""
        try:
            got = reply_layer.decode_reply(data)
        except reply_layer.ReplyError:
            return None
        if isinstance(got, reply_layer.SurbRequest):
            return PROTOCOL
        return self.reply_bodies.get(bytes(got.body))

    def _open(self, keys, payload):
        layer = _message_layer
        if layer is None:
            return None
        if len(payload) == 975 and payload[0] in (4, 6):
            # a SURB-ACK (its first hop's address family first) before the
            # envelope: the gateway keeps only the 608 bytes after it (docs/surb.md §2)
            payload = payload[367:]
        try:
            value = layer.open_payload(keys.private_key, keys.public_key, payload)
        except Exception:
            return None
        if isinstance(value, layer.Fragment):
            return REAL, value
        if isinstance(value, layer.LoopCover):
            return LOOP, None
        if isinstance(value, layer.DropCover):
            return DROP, None
        return None


def open_reply(keys, block):
    """(the replier's SURB-ACK, the reply's Fragment) of a reply's 1024-byte
    *block* opened with its reply block's *keys* (SurbKeys bytes), or a
    ValueError saying why not."""
    from nymtx.message import PlaintextError
    from nymtx.message.payload import decode_reply_fragment
    try:
        opened = open_surb_delivery(SurbKeys.from_bytes(keys), block)
        their_ack, body = reply_layer.split_reply(opened)
        return their_ack, decode_reply_fragment(body)
    except (SurbError, reply_layer.ReplyError, PlaintextError, ValueError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


def observed_count(data):
    """How many messages a pull answer shows an observer who reads it, or
    None when its bytes are not plaintext frames (then only sizes show)."""
    try:
        bodies = F.FrameDecoder().feed(data)
        if len(bodies) != 1:
            return None
        value = F.parse_gateway_frame(bodies[0])
    except (F.FrameError, ValueError):
        return None
    return len(value.messages) if isinstance(value, F.Messages) else None


def counts_from_sizes(sizes):
    """What sizes alone show: with every answer one size, nothing (-1 each);
    else the number of size steps over the smallest answer (an empty one)."""
    sizes = np.asarray(sizes, dtype=float)
    if len(sizes) == 0 or np.all(sizes == sizes[0]):
        return np.full(len(sizes), -1, dtype=np.int64)
    over = sizes - sizes.min()
    step = over[over > 0].min()
    return np.rint(over / step).astype(np.int64)


def to_trace(cap):
    """The :class:`Trace` of a capture: (trace, problems, stats).

    Every recorded packet is peeled with its receiving node's key; a packet
    the truth cannot explain (a peel that fails, a hop no earlier hop
    forwarded, a payload the classifier cannot read, a sender the route
    contradicts) is a problem named in the list.
    """
    problems = list(cap.problems)
    n = len(cap.clients)
    topology = Topology(clients=list(cap.clients), mix_layers=list(cap.mix_layers),
                        gateways=list(cap.gateways), client_gateway=list(cap.client_gateway))
    first_mix, first_gateway = topology.first_mix, topology.first_gateway
    layers = max(cap.mix_layers)
    node_keys, client_keys = _load_keys(cap)
    ack_keys = _load_ack_keys(cap)
    classifier = Classifier(client_keys, [node_keys[first_gateway + k]
                                          for k in range(len(cap.gateways))], cap.message_body,
                            cap.reply_body)
    sets = FragmentSets()

    def name(node):
        return topology.node_name(node) if node >= 0 else "an unknown address"

    # packet state while chaining: per packet its hops and what it is
    p_sender, p_sent, p_delays, p_kind, p_recipient, p_message = [], [], [], [], [], []
    p_last = []                     # the node each packet was last seen at
    p_last_time = []                # and when
    hops = []                       # (time, src, dst, size, packet)
    expected = {}                   # bytes a node forwarded -> (packet, hop, next node)
    p_origin = []                   # per ack: the packet it acknowledges; else -1
    # the SURB-ACK header of every packet that reached its gateway -> (that
    # packet, its gateway, the ack's first hop, when the ack was due to leave)
    acks_due = {}
    # the same for every reply opened at its builder's gateway: the header of
    # the replier's SURB-ACK inside it, which the builder's client sends on
    # (docs/surb.md §5.4) -> (the reply, its builder, the ack's first hop)
    reply_acks_due = {}

    def take(piece, index, where, reply=False):
        """Note a fragment of a message (or reply) of several; once its set is
        whole, every packet of it names the message."""
        p_message[index] = PENDING
        try:
            whole = sets.add(piece, index)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            p_message[index] = -1
            return
        if whole is None:
            return
        data, packets = whole
        m = classifier.resolve_reply(data) if reply else classifier.resolve(data)
        if m is None:
            problems.append(f"{where}: a {'reply' if reply else 'message'} of {len(packets)}"
                            " fragment(s) that is none of the workload's")
            m = -1
        for i in packets:
            p_message[i] = m
            if m < 0:
                continue
            sender = cap.reply_sender[m] if reply else cap.message_sender[m]
            if p_sender[i] != sender:
                problems.append(f"{where}: {'reply' if reply else 'message'} {m} of"
                                f" {name(sender)} came from {name(p_sender[i])}")
            if reply and p_recipient[i] != cap.reply_recipient[m]:
                problems.append(f"{where}: reply {m} to {name(cap.reply_recipient[m])}"
                                f" came to {name(p_recipient[i])}")

    def note_reply(hop, index, c, where):
        """A reply at its builder's gateway: opened with its block's keys."""
        keys = cap.reply_keys.get(bytes(hop.identifier))
        if keys is None:
            problems.append(f"{where}: a SURB packet for {name(c)} whose identifier is neither"
                            " an ack's nor a reply block's")
            return
        try:
            their_ack, fragment = open_reply(keys, hop.block)
        except ValueError as e:
            problems.append(f"{where}: a reply that does not open with its block's keys: {e}")
            return
        first_hop = cap.node_address.get(
            bytes(their_ack[:COMPACT_ADDRESS_SIZE])
            + bytes(ADDRESS_SIZE - COMPACT_ADDRESS_SIZE), -1)
        reply_acks_due[bytes(their_ack[COMPACT_ADDRESS_SIZE:SURB_ACK_SIZE])] = (
            index, c, first_hop)
        take(Piece(("reply", c, bytes(fragment.set_id)), fragment.index, fragment.count,
                   bytes(fragment.data)), index, where, reply=True)

    def peel(node, packet):
        # a gateway's last hop may be a SURB's packet (an ack, a reply), which
        # only process_gateway_packet reads (docs/surb.md §1.4)
        if node >= first_gateway:
            return process_gateway_packet(node_keys[node].private_key, packet)
        return process_packet(node_keys[node].private_key, packet)

    def follow(hop, index, position, node, where, chained=True):
        """Note what *hop* (peeled at *node*) says; True if the packet goes on."""
        p_delays[index][position] = hop.delay_ns / 1e9
        if isinstance(hop, SurbDelivery):
            if position != layers:
                problems.append(f"{where}: a SURB route of {position + 1} hops, not {layers + 1}")
            surb = surb_kind(classifier.clients, ack_keys, hop)
            if surb is None:
                problems.append(f"{where}: a SURB packet for a key that is no client's")
                p_kind[index], p_recipient[index] = -1, -1
                return False
            kind, c = surb
            p_kind[index], p_recipient[index], p_message[index] = kind, c, -1
            if p_sender[index] < 0:
                p_sender[index] = c
            elif kind == ACK and c != p_sender[index]:
                problems.append(f"{where}: an ack of a packet of {name(p_sender[index])}"
                                f" came back to {name(c)}")
            if cap.client_gateway[c] != node - first_gateway:
                problems.append(f"{where}: a SURB packet of {name(c)} at another gateway")
            if kind == REPLY:
                note_reply(hop, index, c, where)
            return False
        if isinstance(hop, ForwardHop):
            nxt = cap.node_address.get(hop.next_address, -1)
            if nxt < 0:
                problems.append(f"{where}: forwarded to an address that is no node's")
                return False
            if chained:
                expected[hop.packet] = (index, position + 1, nxt)
            return True
        if node < first_gateway:
            problems.append(f"{where}: the route ends at a mixnode")
        if position != layers:
            problems.append(f"{where}: a route of {position + 1} hops, not {layers + 1}")
        kind = classifier.classify(hop.destination, hop.message)
        if kind is None:
            problems.append(f"{where}: its payload is neither a workload message nor"
                            f" cover (destination {hop.destination.hex()[:16]}…)")
            kind = (-1, -1, -1)
        if isinstance(kind[2], Piece):
            p_kind[index], p_recipient[index] = kind[:2]
            take(kind[2], index, where)
        else:
            p_kind[index], p_recipient[index], p_message[index] = kind
        sender = p_sender[index]
        if kind[0] == LOOP and kind[1] != sender:
            problems.append(f"{where}: loop cover of {name(kind[1])} came from {name(sender)}")
        if kind[0] == REAL and isinstance(kind[2], int) and kind[2] >= 0 \
                and cap.message_sender[kind[2]] != sender:
            problems.append(f"{where}: message {kind[2]} of"
                            f" {name(cap.message_sender[kind[2]])} came from {name(sender)}")
        message = hop.message
        if chained and len(message) == MAX_MESSAGE_SIZE and message[0] in (4, 6):
            # its SURB-ACK: the ack packet the gateway sends is this header
            # and a random payload, to this first hop (docs/surb.md §2.2)
            first_hop = cap.node_address.get(
                bytes(message[:COMPACT_ADDRESS_SIZE])
                + bytes(ADDRESS_SIZE - COMPACT_ADDRESS_SIZE), -1)
            acks_due[bytes(message[COMPACT_ADDRESS_SIZE:SURB_ACK_SIZE])] = (
                index, node, first_hop, p_last_time[index] + hop.delay_ns / 1e9)
        return False
    for t, dst, src, packet in sorted(cap.packets, key=lambda r: r[0]):
        where = f"a packet at {name(dst)} from {name(src)} at {t - cap.start:.3f} s"
        if src < 0:
            problems.append(f"{where}: its sender's address is no node's")
        try:
            hop = peel(dst, packet)
        except SphinxError as e:
            problems.append(f"{where} cannot be peeled: {e}")
            continue
        earlier = expected.pop(packet, None)
        origin = -1
        if earlier is None and src >= first_gateway:
            # a gateway sends only acks: the SURB-ACK of a packet that ended there
            due = acks_due.pop(bytes(packet[:HEADER_SIZE]), None)
            if due is None:
                # still followed (its later hops are explained by it, and its
                # last names the client it is for), but named here
                problems.append(f"{where}: a packet from a gateway that is the ack of no"
                                " packet that ended there")
                origin = -2
            else:
                origin, gateway, first_hop, _ = due
                if gateway != src:
                    problems.append(f"{where}: the ack of a packet that ended at {name(gateway)}")
                if first_hop != dst:
                    problems.append(f"{where}: its SURB-ACK named {name(first_hop)}")
        if earlier is None and 0 <= src < n and reply_acks_due:
            # a builder's client sends the ack of each reply it got
            due = reply_acks_due.pop(bytes(packet[:HEADER_SIZE]), None)
            if due is not None:
                origin, builder, first_hop = due
                if builder != src:
                    problems.append(f"{where}: the ack of a reply to {name(builder)}")
                if first_hop != dst:
                    problems.append(f"{where}: its reply's SURB-ACK named {name(first_hop)}")
        if earlier is None:
            if origin == -1 and not 0 <= src < n:
                problems.append(f"{where}: no earlier hop forwarded it, and it does not"
                                " come from a client")
                continue
            if not (first_mix <= dst < first_gateway and cap.mix_layers[dst - first_mix] == 1):
                problems.append(f"{where}: a first hop to {name(dst)}, not a layer-1 mixnode")
            index = len(p_sender)
            # an ack's sender is the client whose packet it acknowledges
            # (-1 until its last hop names it, for an ack of no packet seen)
            p_sender.append(src if origin == -1 else p_sender[origin] if origin >= 0 else -1)
            p_origin.append(max(origin, -1))
            p_sent.append(t)
            p_delays.append([np.nan] * 5)
            p_kind.append(-1)
            p_recipient.append(-1)
            p_message.append(-1)
            p_last.append(src)
            p_last_time.append(t)
            position = 0
        else:
            index, position, next_node = earlier
            if next_node != dst:
                problems.append(f"{where}: its route named {name(next_node)}")
            if src != p_last[index]:
                problems.append(f"{where}: the previous hop was at {name(p_last[index])}")
        if position >= 5:
            problems.append(f"{where}: more than five hops")
            continue
        p_last[index] = dst
        p_last_time[index] = t
        hops.append((t, src, dst, len(packet), index))
        follow(hop, index, position, dst, where)

    # Packets still inside a node when the recording ended: the adversary
    # saw only their first hops, but the truth knows the rest, since every
    # node's key is at hand: peel them to the end.
    for packet, (index, position, node) in list(expected.items()):
        where = f"a packet left inside {name(p_last[index])} at the end"
        due = p_last_time[index] + p_delays[index][position - 1]
        if due < cap.end - LOST_AFTER:
            problems.append(
                f"a packet {name(p_last[index])} received at {p_last_time[index] - cap.start:.3f} s"
                f" was due at {name(node)} {due - p_last_time[index]:.3f} s later, and never"
                " arrived")
        while True:
            if node not in node_keys or position >= 5:
                problems.append(f"{where}: its route goes to {name(node)}")
                break
            try:
                hop = peel(node, packet)
            except SphinxError as e:
                problems.append(f"{where} cannot be peeled: {e}")
                break
            if not follow(hop, index, position, node, where, chained=False):
                break
            packet, position, node = hop.packet, position + 1, \
                cap.node_address.get(hop.next_address, -1)

    # Sets still open: a top-up of reply blocks the client had not finished
    # sending when the network stopped (its first fragment says what it is);
    # anything else is a message the truth lost
    cut_short = 0
    for key, seen, count, packets, head in sets.incomplete():
        if key[0] == "forward" and head is not None and head[:1] == bytes((reply_layer.TOP_UP,)):
            cut_short += 1
            label = PROTOCOL
        else:
            problems.append(f"a {'reply' if key[0] == 'reply' else 'message'} of {count}"
                            f" fragments for {name(key[1])} of which only {seen} were seen")
            label = -1
        for p in packets:
            p_message[p] = label

    # ---- the capture window: packets sent in [start, end]
    p_sent = np.asarray(p_sent, dtype=float) - cap.start
    end = cap.end - cap.start
    # (packets sent before the workload began are left out whole: the model
    # too starts with empty mixes)
    keep = (p_sent >= 0) & (p_sent <= end)
    new_index = np.cumsum(keep) - 1
    h = [(t - cap.start, s, d, size, int(new_index[p])) for t, s, d, size, p in hops
         if keep[p] and t - cap.start <= end]
    h.sort(key=lambda x: x[0])
    hop_time = np.array([x[0] for x in h], dtype=float)
    hop_src = np.array([x[1] for x in h], dtype=np.int64)
    hop_dst = np.array([x[2] for x in h], dtype=np.int64)
    hop_size = np.array([x[3] for x in h], dtype=np.int64)
    hop_packet = np.array([x[4] for x in h], dtype=np.int64)

    kind = np.asarray(p_kind, dtype=np.int64)[keep]
    message = np.asarray(p_message, dtype=np.int64)[keep]
    origin = np.asarray(p_origin, dtype=np.int64)
    kept_origin = (origin >= 0) & keep[np.maximum(origin, 0)] if len(origin) else origin > 0
    origin = np.where(kept_origin, new_index[np.maximum(origin, 0)], -1)[keep] \
        if len(origin) else origin
    # packets that ended at their gateway in time for their ack to be seen,
    # and whose ack never left it
    unacked = sum(1 for index, _, _, due in acks_due.values()
                  if keep[index] and due < cap.end - LOST_AFTER)

    # ---- messages: every one that left its client must have been found
    m_count = len(cap.message_sender)
    found = np.zeros(m_count, dtype=bool)
    found[message[(kind == REAL) & (message >= 0)]] = True
    unsent = [i for i, why in enumerate(cap.message_unsent) if why is not None]
    for i in range(m_count):
        if cap.message_unsent[i] is None and not found[i]:
            problems.append(f"message {i} ({name(cap.message_sender[i])} to"
                            f" {name(cap.message_recipient[i])}) left its client but was"
                            " never seen at its gateway")
    # and every reply that left its replier, at its builder's gateway
    r_count = len(cap.reply_sender)
    r_found = np.zeros(r_count, dtype=bool)
    r_found[message[(kind == REPLY) & (message >= 0)]] = True
    for r in range(r_count):
        if cap.reply_unsent[r] is None and not r_found[r]:
            problems.append(f"reply {r} ({name(cap.reply_sender[r])} to"
                            f" {name(cap.reply_recipient[r])}, answering message"
                            f" {cap.reply_to[r]}) left its client but was never seen at its"
                            " builder's gateway")
    replies_kept = (kind == REPLY)
    reply_acks = (kind == ACK) & (origin >= 0)
    reply_acks &= replies_kept[np.maximum(origin, 0)] if len(origin) else reply_acks
    # a reply's ack leaves its builder after a pull and a slot of its stream:
    # those not sent by the end of the recording (counted, not a problem)
    reply_unacked = int(replies_kept.sum()) - len(set(origin[reply_acks].tolist()))

    # ---- pulls
    pulls = [p for p in cap.pulls if cap.start <= p[0] <= cap.end and p[1] >= 0]
    pull_time = np.array([p[0] - cap.start for p in pulls], dtype=float)
    pull_client = np.array([p[1] for p in pulls], dtype=np.int64)
    pull_true = np.array([p[3] for p in pulls], dtype=np.int64)
    read = [observed_count(p[2]) for p in pulls]
    if all(r is not None for r in read):
        pull_count = np.array(read, dtype=np.int64)
    else:
        pull_count = counts_from_sizes([len(p[2]) for p in pulls])

    trace = Trace(
        topology=topology, duration=float(end),
        hop_time=hop_time, hop_src=hop_src, hop_dst=hop_dst, hop_size=hop_size,
        hop_packet=hop_packet,
        packet_sender=np.asarray(p_sender, dtype=np.int64)[keep], packet_kind=kind,
        packet_recipient=np.asarray(p_recipient, dtype=np.int64)[keep],
        packet_message=message, packet_sent=p_sent[keep],
        packet_delays=np.asarray(p_delays, dtype=float).reshape(-1, 5)[keep],
        message_sender=np.asarray(cap.message_sender, dtype=np.int64),
        message_recipient=np.asarray(cap.message_recipient, dtype=np.int64),
        message_queued=np.asarray(cap.message_queued, dtype=float),
        pull_time=pull_time, pull_client=pull_client, pull_count=pull_count,
        pull_true_count=pull_true,
        phases=list(cap.phases), packet_origin=origin,
        **({} if not cap.anonymous else dict(
            reply_sender=np.asarray(cap.reply_sender, dtype=np.int64),
            reply_recipient=np.asarray(cap.reply_recipient, dtype=np.int64),
            reply_to=np.asarray(cap.reply_to, dtype=np.int64),
            reply_queued=np.asarray(cap.reply_queued, dtype=float))))
    stats = {"messages": m_count, "messages found": int(found.sum()),
             "messages not sent by the end": len(unsent),
             "packets tapped": len(cap.packets),
             "packets sent before the workload (left out)": int(np.sum(p_sent < 0)),
             "ack packets": int(np.sum(kind == ACK)),
             "reply packets": int(np.sum(kind == REPLY)),
             "packets that reached their gateway whose ack never left it": unacked}
    if cap.anonymous:
        stats.update({
            "replies": r_count, "replies found": int(r_found.sum()),
            "replies not sent by the end": sum(1 for why in cap.reply_unsent if why is not None),
            "replies their builder's application received": sum(
                1 for t in cap.reply_received if t is not None),
            "reply packets carrying a workload reply": int(np.sum((kind == REPLY)
                                                                  & (message >= 0))),
            "reply packets asking for more reply blocks": int(np.sum((kind == REPLY)
                                                                     & (message == PROTOCOL))),
            "acks of replies (sent by their builders' clients)": int(reply_acks.sum()),
            "replies whose builder had not sent their ack by the end": reply_unacked,
            "real packets carrying reply blocks asked for (top-ups)": int(
                np.sum((kind == REAL) & (message == PROTOCOL))),
            "top-ups cut short by the end": cut_short})
    return trace, problems, stats


# ---- what the command needs besides the trace -------------------------------

#: How fast the nodes talk to the directory during a measurement: the
#: network is ready sooner, and the directory's traffic is not measured.
QUICK_TIMING = Timing(presence_interval=0.2, metrics_interval=1.0, expiry=5.0)


def remove_home(cap):
    """Delete the capture's home (its keys and mailboxes), once peeled."""
    import shutil
    shutil.rmtree(cap.home, ignore_errors=True)


def observed_settings(settings, trace):
    """*settings* with the cover design and pull pattern the truth shows.

    The real network's design is its code's: drop cover on the sending
    stream means this release's (``loopix``), loops only the previous one's
    (``legacy``); pulls whose gaps vary like exponential ones are Poisson.
    """
    cover = "loopix" if np.any(trace.packet_kind == DROP) else "legacy"
    cvs = []
    for c in range(trace.topology.n_clients):
        gaps = np.diff(trace.pull_time[trace.pull_client == c])
        if len(gaps) > 2 and gaps.mean() > 0:
            cvs.append(gaps.std() / gaps.mean())
    pulls = "poisson" if cvs and np.median(cvs) > 0.5 else "grid"
    drops = trace.packet_kind == DROP
    drop_to = "client" if np.any(trace.packet_recipient[drops] >= 0) else "gateway"
    return attrs.evolve(settings, cover=cover, pulls=pulls, drop_to=drop_to)


def _summary(x):
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return {"n": 0}
    return {"n": int(len(x)), "mean": float(x.mean()), "median": float(np.median(x)),
            "p99": float(np.percentile(x, 99)), "min": float(x.min()), "max": float(x.max())}


def link_checks(cap, trace):
    """What only a real network shows.

    - ``lateness``: per hop, the time between a packet's arrival at a node
      and at the next, less the delay its sender chose there (the nodes'
      processing, the reactor's scheduling, loopback): the delays the nodes
      really apply;
    - ``gateway_link``: the sizes of the client–gateway chunks each way and
      of the pull answers, against the number of messages each held.
    """
    out = {"lateness": []}
    order = np.lexsort((trace.hop_time, trace.hop_packet))
    packet, time = trace.hop_packet[order], trace.hop_time[order]
    same = packet[1:] == packet[:-1]
    position = np.zeros(len(packet), dtype=np.int64)
    for i in range(1, len(packet)):
        position[i] = position[i - 1] + 1 if same[i - 1] else 0
    for hop in range(int(position.max()) if len(position) else 0):
        at = np.nonzero(same & (position[:-1] == hop))[0]
        chosen = trace.packet_delays[packet[at], hop]
        out["lateness"].append(dict(_summary(time[at + 1] - time[at] - chosen), hop=hop + 1))
    up = [c[3] for c in cap.chunks if c[2] == UP and c[1] >= 0]
    down = [c[3] for c in cap.chunks if c[2] == DOWN and c[1] >= 0]
    answers = [len(p[2]) for p in cap.pulls]
    true = [p[3] for p in cap.pulls]
    by_count = collections.defaultdict(set)
    for size, count in zip(answers, true):
        by_count[count].add(size)
    out["gateway_link"] = {
        "chunks up": len(up), "distinct sizes up": len(set(up)),
        "chunks down": len(down), "distinct sizes down": len(set(down)),
        "pull answers": len(answers), "distinct answer sizes": len(set(answers)),
        "answer size grows with the messages it holds": bool(
            len(set(answers)) > 1 and np.corrcoef(answers, true)[0, 1] > 0.5)
        if len(answers) > 2 and np.std(true) > 0 and np.std(answers) > 0 else False,
        "answer sizes by messages held": {str(k): sorted(v)[:5] for k, v in
                                          sorted(by_count.items())[:10]}}
    return out
