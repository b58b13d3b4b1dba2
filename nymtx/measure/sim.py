"""A discrete-event model of the nymtx protocol, for networks this machine cannot run.

Same rates, delays, cover streams, layers and pulls as the real code (the
defaults are the client's), no crypto and no sockets: every packet is drawn
with its route and its per-hop exponential delays, and what a global
passive observer would see is written into a :class:`~nymtx.measure.trace.Trace`
together with the truth. Mixnodes have no capacity limit here (the real
ones process thousands of packets a second; the model is for anonymity, not
load), so packets do not interact and can be drawn independently.

Two cover designs:

- ``"loopix"`` (this release): the sending stream sends a real packet when
  one is queued and *drop* cover otherwise; loop cover has its own stream.
  Pull answers do not show how many messages they hold.
- ``"legacy"`` (the release before): the sending stream falls back to
  *loop* cover, so a sender receives less while it sends; pulls run on a
  fixed grid and their size gives the number of messages away.
"""

import attrs
import numpy as np

from nymtx.measure.trace import DROP, LOOP, REAL, Topology, Trace

PACKET_SIZE = 1372


@attrs.frozen
class Conversation:
    sender: int
    recipient: int
    rate: float            # messages per second handed to the sender's client
    #: "poisson" (a conversation) or "flood" (the queue never runs dry)
    pattern: str = "poisson"
    #: sent with ``sendAnonymous`` (reply blocks and the sender's tag, not its
    #: address) instead of ``send``: the real network only (the model has
    #: no fragments, reply blocks or acks; docs/anonymity.md "Anonymous replies")
    anonymous: bool = False
    #: with *anonymous*: the reply blocks each message carries (1 to 500)
    reply_surbs: int = 5
    #: with *anonymous*: the share of its messages (0 to 1) the recipient
    #: answers, each with one ``reply`` by the sender tag, when it receives it
    replies: float = 0.0


@attrs.frozen
class Phase:
    start: float
    end: float
    label: str
    conversations: tuple = ()


@attrs.frozen
class Settings:
    clients: int = 5
    mixnodes_per_layer: int = 1
    gateways: int = 1
    send_gap: float = 0.5          # message_sending_average_delay, s
    loop_gap: float = 1.0          # loop_cover_traffic_average_delay, s
    hop_delay: float = 0.2         # average_packet_delay, s (every hop, the gateway's too)
    fetch_gap: float = 1.0         # fetch_message_delay, s
    cover: str = "loopix"          # or "legacy"
    pulls: str = "poisson"         # or "grid"
    #: where drop cover ends: "gateway" (a random gateway discards it) or
    #: "client" (stored for a random client, which discards it)
    drop_to: str = "gateway"
    layers: int = 3

    def __attrs_post_init__(self):
        if self.cover not in ("loopix", "legacy"):
            raise ValueError(f"cover must be 'loopix' or 'legacy', not {self.cover!r}")
        if self.pulls not in ("poisson", "grid"):
            raise ValueError(f"pulls must be 'poisson' or 'grid', not {self.pulls!r}")
        if self.drop_to not in ("gateway", "client"):
            raise ValueError(f"drop_to must be 'gateway' or 'client', not {self.drop_to!r}")
        for name in ("send_gap", "loop_gap", "hop_delay", "fetch_gap"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.clients < 2 or self.mixnodes_per_layer < 1 or self.gateways < 1:
            raise ValueError("at least 2 clients, 1 mixnode per layer and 1 gateway")


def default_workload(clients, minutes):
    """The measurement's usual script: idle, a conversation, a flood, bursts, idle.

    Conversations run between chosen pairs (0→1, 2→3, …); a flood has one
    client send as fast as its stream allows.
    """
    d = minutes * 60.0
    pairs = tuple(Conversation(i, (i + 1) % clients, 0.2) for i in range(0, clients - 1, 2))
    cuts = [0.0, 0.15 * d, 0.45 * d, 0.65 * d, 0.85 * d, d]
    return [
        Phase(cuts[0], cuts[1], "idle"),
        Phase(cuts[1], cuts[2], "conversations", pairs),
        Phase(cuts[2], cuts[3], "flood", (Conversation(0, 1, 0.0, "flood"),)),
        Phase(cuts[3], cuts[4], "bursts",
              tuple(Conversation(i, (i + 2) % clients, 0.6) for i in range(1, clients, 2))),
        Phase(cuts[4], cuts[5], "idle"),
    ]


def replies_workload(clients, minutes):
    """The ``replies`` preset: anonymous conversations, first unanswered,
    then answered.

    Idle, then 0→1 and 2→3 (…) with ``sendAnonymous`` (5 reply blocks each)
    and no replies, then the same with every message answered by ``reply``,
    then idle: the builders (senders) receive replies only in the third
    phase, and the repliers get the same messages in the second and third,
    so each compares like with like.
    """
    d = minutes * 60.0

    def pairs(replies):
        return tuple(Conversation(i, (i + 1) % clients, 0.2, anonymous=True, reply_surbs=5,
                                  replies=replies) for i in range(0, clients - 1, 2))
    cuts = [0.0, 0.15 * d, 0.45 * d, 0.75 * d, d]
    return [
        Phase(cuts[0], cuts[1], "idle"),
        Phase(cuts[1], cuts[2], "anonymous", pairs(0.0)),
        Phase(cuts[2], cuts[3], "replies", pairs(1.0)),
        Phase(cuts[3], cuts[4], "idle"),
    ]


#: workloads by name (``nym-measure --workload NAME``); a file of that name
#: is read instead when there is one
PRESETS = {"default": default_workload, "replies": replies_workload}


def has_anonymous(phases):
    """Whether any conversation of *phases* uses ``sendAnonymous``."""
    return any(c.anonymous for p in phases for c in p.conversations)


def _poisson_times(rng, gap, start, end):
    """Times of a Poisson process of mean gap *gap* on [start, end)."""
    n = rng.poisson((end - start) / gap * 1.2 + 20)
    times = start + np.cumsum(rng.exponential(gap, n))
    while len(times) and times[-1] < end:
        more = times[-1] + np.cumsum(rng.exponential(gap, n))
        times = np.concatenate([times, more])
    return times[times < end]


def simulate(settings, phases, duration, seed=0):
    """Run the model; returns a :class:`Trace`."""
    s = settings
    if has_anonymous(phases):
        # honest or nothing: an anonymous message is several fragments (its
        # reply blocks take 420 bytes each), every packet has an ack, and a
        # reply waits for its builder's pull; the model has none of these
        raise ValueError("the model has no reply blocks, fragments or acks: a workload with"
                         " anonymous conversations runs on the real network only")
    rng = np.random.default_rng(seed)
    n = s.clients
    layers = [layer for layer in range(1, s.layers + 1) for _ in range(s.mixnodes_per_layer)]
    topology = Topology(
        clients=[f"c{i}" for i in range(n)], mix_layers=layers,
        gateways=[f"g{j}" for j in range(s.gateways)],
        client_gateway=[i % s.gateways for i in range(n)])

    # ---- real messages: what each application hands its client, and when
    msg_sender, msg_recipient, msg_queued = [], [], []
    for phase in phases:
        for conv in phase.conversations:
            if not (0 <= conv.sender < n and 0 <= conv.recipient < n):
                raise ValueError(f"conversation {conv} names a client outside 0..{n - 1}")
            if conv.pattern == "flood":
                # a little more than the stream takes, so it never runs dry
                # in the phase and drains soon after it
                times = np.linspace(phase.start, phase.end,
                                    int((phase.end - phase.start) / s.send_gap * 1.1) + 1,
                                    endpoint=False)
            else:
                times = _poisson_times(rng, 1.0 / conv.rate, phase.start, phase.end)
            msg_sender.append(np.full(len(times), conv.sender))
            msg_recipient.append(np.full(len(times), conv.recipient))
            msg_queued.append(times)
    if msg_sender:
        msg_sender = np.concatenate(msg_sender)
        msg_recipient = np.concatenate(msg_recipient)
        msg_queued = np.concatenate(msg_queued)
        order = np.argsort(msg_queued, kind="stable")
        msg_sender, msg_recipient, msg_queued = (
            msg_sender[order], msg_recipient[order], msg_queued[order])
    else:
        msg_sender = msg_recipient = np.zeros(0, dtype=np.int64)
        msg_queued = np.zeros(0)

    # ---- packets, client by client
    p_sender, p_kind, p_recipient, p_message, p_sent = [], [], [], [], []
    for c in range(n):
        ticks = _poisson_times(rng, s.send_gap, 0.0, duration)
        kinds = np.full(len(ticks), LOOP if s.cover == "legacy" else DROP)
        recips = np.full(len(ticks), c if s.cover == "legacy" else -1)
        messages = np.full(len(ticks), -1)
        mine = np.nonzero(msg_sender == c)[0]
        # FIFO: each queued message leaves at the first free tick after it
        # was handed over; what the phase leaves queued at the end stays.
        t_index = np.searchsorted(ticks, msg_queued[mine])
        nxt = 0
        for m, ti in zip(mine, t_index):
            ti = max(ti, nxt)
            if ti >= len(ticks):
                break
            kinds[ti], recips[ti], messages[ti] = REAL, msg_recipient[m], m
            nxt = ti + 1
        loops = _poisson_times(rng, s.loop_gap, 0.0, duration)
        p_sent += [ticks, loops]
        p_kind += [kinds, np.full(len(loops), LOOP)]
        p_recipient += [recips, np.full(len(loops), c)]
        p_message += [messages, np.full(len(loops), -1)]
        p_sender += [np.full(len(ticks) + len(loops), c)]
    sent = np.concatenate(p_sent)
    order = np.argsort(sent, kind="stable")
    sent = sent[order]
    kind = np.concatenate(p_kind)[order]
    recipient = np.concatenate(p_recipient)[order]
    message = np.concatenate(p_message)[order]
    sender = np.concatenate(p_sender)[order]
    if s.drop_to == "client":
        drops = kind == DROP
        recipient[drops] = rng.integers(0, n, drops.sum())
    count = len(sent)

    # ---- routes and delays: one mixnode per layer, then a gateway
    hops = s.layers + 1
    delays = rng.exponential(s.hop_delay, (count, hops))
    route = np.empty((count, hops + 1), dtype=np.int64)
    route[:, 0] = sender
    for layer in range(s.layers):
        route[:, layer + 1] = (topology.first_mix + layer * s.mixnodes_per_layer
                               + rng.integers(0, s.mixnodes_per_layer, count))
    cg = np.asarray(topology.client_gateway)
    dest_gateway = np.where(recipient >= 0, cg[np.maximum(recipient, 0)],
                            rng.integers(0, s.gateways, count))
    route[:, hops] = topology.first_gateway + dest_gateway
    # a hop's transmission leaves its source when the packet's delay there ends
    leave = np.empty((count, hops))
    leave[:, 0] = sent
    leave[:, 1:] = sent[:, None] + np.cumsum(delays[:, :hops - 1], axis=1)
    stored = leave[:, -1] + delays[:, -1]

    hop_time = leave.reshape(-1)
    hop_src = route[:, :-1].reshape(-1)
    hop_dst = route[:, 1:].reshape(-1)
    hop_packet = np.repeat(np.arange(count), hops)
    keep = hop_time < duration
    order = np.argsort(hop_time[keep], kind="stable")
    hop_time, hop_src, hop_dst, hop_packet = (
        a[keep][order] for a in (hop_time, hop_src, hop_dst, hop_packet))

    # ---- pulls: each takes everything stored for its client since the last
    pull_time, pull_client, pull_true = [], [], []
    delivered = (recipient >= 0) & (stored < duration)
    for c in range(n):
        if s.pulls == "grid":
            times = np.arange(rng.uniform(0, s.fetch_gap), duration, s.fetch_gap)
        else:
            times = _poisson_times(rng, s.fetch_gap, 0.0, duration)
        arrivals = np.sort(stored[delivered & (recipient == c)])
        upto = np.searchsorted(arrivals, times, side="right")
        counts = np.diff(np.concatenate([[0], upto]))
        pull_time.append(times)
        pull_client.append(np.full(len(times), c))
        pull_true.append(counts)
    pull_time = np.concatenate(pull_time)
    order = np.argsort(pull_time, kind="stable")
    pull_time = pull_time[order]
    pull_client = np.concatenate(pull_client)[order]
    pull_true = np.concatenate(pull_true)[order]
    visible = pull_true if s.cover == "legacy" else np.full(len(pull_true), -1)

    full_delays = np.full((count, 5), np.nan)
    full_delays[:, :hops] = delays
    return Trace(
        topology=topology, duration=duration,
        hop_time=hop_time, hop_src=hop_src, hop_dst=hop_dst,
        hop_size=np.full(len(hop_time), PACKET_SIZE), hop_packet=hop_packet,
        packet_sender=sender, packet_kind=kind, packet_recipient=recipient,
        packet_message=message, packet_sent=sent, packet_delays=full_delays,
        message_sender=msg_sender, message_recipient=msg_recipient,
        message_queued=msg_queued,
        pull_time=pull_time, pull_client=pull_client, pull_count=visible,
        pull_true_count=pull_true,
        phases=[(p.start, p.end, p.label) for p in phases])
