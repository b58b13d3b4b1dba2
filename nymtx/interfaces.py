"""The collaborators that tests and embedders swap, as zope interfaces.

Each real class declares the interface it implements, and so does each fake
in ``nymtx.testing``; ``tests/test_interfaces.py`` runs
``zope.interface.verify.verifyObject`` on both, so a fake cannot drift from
the real thing without a test failing. The methods listed are the public
ones the code calls today (docs/internals.md gives their contracts).

This module imports nothing of nymtx: every layer may import it.
"""

from zope.interface import Attribute, Interface


class IPacketLinks(Interface):
    """Outgoing mix links, one per next hop (``nymtx.links.PacketLinks``)."""

    sent = Attribute("dict[str, int]: packets written per str(address); the owner may"
                     " read and clear it")
    dropped = Attribute("int: packets pushed out of a full queue")
    evicted = Attribute("int: packets lost with a link closed to stay within max_peers")
    retired = Attribute("int: packets lost with a link closed by retain()")
    expired = Attribute("int: packets dropped after waiting over max_wait for a peer down")

    def send(address, packet):
        """Queue *packet* (bytes) for *address* (NodeAddress), connecting if need
        be; never blocks or raises for a peer being down."""

    def retain(addresses):
        """Close the link of every peer not in *addresses* (the peers still
        wanted); packets still queued for them count in ``retired``."""

    def state(address):
        """The nymtx.links.PeerState of the link to *address* (CLOSED if none)."""

    def queued(address):
        """How many packets wait for *address* (0 for an unknown peer)."""

    def connected(address):
        """Whether the link to *address* is up."""

    def stop():
        """Close every link; Deferred that fires once every connection is gone."""


class IDirectoryClient(Interface):
    """The directory's HTTP API, as nodes and clients use it
    (``nymtx.directory.client.DirectoryClient``). Failures are DirectoryError."""

    def get_topology():
        """Deferred[Topology] of the nodes the directory lists now."""

    def announce_mixnode(presence):
        """Deferred: POST a mixnode's presence (a dict)."""

    def announce_gateway(presence):
        """Deferred: POST a gateway's presence (a dict)."""

    def report_metrics(metrics):
        """Deferred: POST a mixnode's counters since its previous report."""

    def get_metrics():
        """Deferred[list]: the latest metrics of each mixnode."""

    def close():
        """Deferred: close the connections this client opened itself (a treq
        given to it is its owner's to close)."""


class IGatewayLink(Interface):
    """A client's private link to its gateway (``nymtx.gateway.link.GatewayLink``):
    one Noise IK connection, the client's key proven in the handshake, and
    the fixed-size requests of docs/gateway-protocol.md inside it.

    The link does not decide when to pull: the client core calls ``pull``
    on its own Poisson clock (``fetch_message_delay``), the same schedule
    whatever its mail, and gives the ids it stored to ``ack``.
    """

    connected = Attribute("bool: authenticated right now (state is READY)")
    last_error = Attribute("GatewayLinkError | None: why the last attempt failed")
    state = Attribute("nymtx.gateway.link.LinkState: stopped, connecting, ready, waiting"
                      " or stopping")

    def start():
        """Connect, and reconnect after a capped, jittered backoff while started."""

    def stop():
        """Deferred that fires once the connection is closed; waiters of
        when_ready() and acks not yet carried fail with GatewayLinkError."""

    def when_ready():
        """Deferred that fires when the link is (or next becomes) authenticated;
        fails with GatewayLinkError if it is stopped first."""

    def pull(limit=10):
        """One pull request on the private link: Deferred[list[(id, bytes)]]
        of the oldest stored messages not yet sent on this connection, at
        most nymtx.gateway.padded.PULL_SIZE (10); with *limit* 0 a pull that
        takes none, the same size on the wire (a client whose inbox is full).
        It carries ids of earlier ack() calls. Fails with GatewayLinkError
        when not connected."""

    def ack(ids):
        """Have the gateway delete the messages *ids*: they ride on the next
        pulls (an ack is never a frame of its own). Deferred[int] of how many
        were deleted, once every id was carried: never before the next pull
        (do not wait for it before pulling again)."""


class IMailboxStore(Interface):
    """The gateway's ledger and per-client mailboxes (``nymtx.gateway.store.MailboxStore``).

    Synchronous: every method returns its result or raises StoreError.
    """

    clock = Attribute("the clock that times batched commits")
    max_clients = Attribute("int: registrations at most")
    stored = Attribute("int: messages committed since the store was opened")
    lost = Attribute("int: buffered messages whose commit failed")
    pending = Attribute("int: messages buffered, not committed yet")

    def register(client_key, token):
        """Record *token* for *client_key* (replacing an older one)."""

    def check_token(client_key, token):
        """Whether *token* is the current token of *client_key*."""

    def touch(client_key):
        """Record that *client_key* was seen now (it authenticated)."""

    def last_seen(client_key):
        """Clock seconds when *client_key* last registered or authenticated, or None."""

    def expire_idle(idle):
        """Remove every client not seen for *idle* seconds, with its mail; the keys removed."""

    def has_room(client_key):
        """Whether *client_key* may register (already is, or the ledger is not full)."""

    def is_registered(client_key):
        """Whether *client_key* is registered."""

    def registered_clients():
        """Sorted list of every registered client key."""

    def add(client_key, message):
        """Queue *message* for *client_key*: None if queued, else the drop reason."""

    def flush():
        """Commit every buffered message; return how many."""

    def pull(client_key, limit, after=0):
        """Up to *limit* committed messages of *client_key* with ids over
        *after*, as (id, bytes), oldest first."""

    def ack(client_key, ids):
        """Delete those of *ids* that belong to *client_key*; return how many."""

    def usage(client_key):
        """(messages, bytes) held for *client_key*, buffered ones included."""

    def close():
        """Commit what is buffered and close."""


class IInbox(Interface):
    """The client's durable inbox (``nymtx.client.inbox.Inbox``)."""

    def store(messages):
        """Commit (gateway_id | None, body) pairs in one transaction (a body: a
        nymtx.message.Message, or bytes for text; an id of None stores it
        unconditionally); return the bodies stored (a repeat of a stored but
        unacknowledged id is not)."""

    def commit(gateway_ids, messages):
        """In one transaction: remember *gateway_ids* (every id of a pull) as
        pulled but not acknowledged and store *messages* (Messages, or bytes
        for text), before the client acks them; return the Messages stored."""

    def seen(gateway_ids):
        """The ids among *gateway_ids* committed and not acknowledged yet (a set)."""

    def acked(gateway_ids):
        """The gateway deleted these ids: they may be reused from now on."""

    def unacked():
        """Gateway ids stored but not acknowledged yet, ascending."""

    def take_all():
        """Remove and return every stored message (nymtx.message.Message), oldest first."""

    def peek(max_bytes=None):
        """(id, Message) pairs, oldest first, data adding up to at most *max_bytes*;
        nothing leaves the inbox."""

    def delete(ids):
        """Remove the messages *ids* (from peek)."""

    def __len__():
        """How many messages it holds."""

    def close():
        """Close the inbox."""


class IClientCore(Interface):
    """What the socket APIs drive: a client's messaging (``nymtx.client.core.ClientCore``)."""

    address = Attribute("str: this client's base58 address")

    max_message_size = Attribute("int: the longest message it sends, in bytes")

    def send(recipient, message):
        """Queue *message* (str: text, bytes: binary, or a nymtx.message.Message)
        for *recipient* (``CLIENT`` or ``CLIENT@GATEWAY``).

        Raises SendError at once for a bad message or recipient, one over
        ``[message] maximum_message_size``, or a full send queue; returns a
        Deferred that fires when its last fragment is handed to the first
        mixnode's link (or fails with ClientStopped).
        """

    def fetch():
        """Remove and return the data of every stored message (list[bytes]),
        oldest first."""

    def peek(max_bytes=None):
        """Stored (id, nymtx.message.Message) pairs, oldest first, within
        *max_bytes*; they stay until delete(ids): the API deletes them once
        its answer (or pushed event) is sent."""

    def watch_inbox(callback):
        """Call *callback()* after each commit of new messages; returns a
        function that stops it (the API's pushed events)."""

    def delete(ids):
        """Forget the messages *ids* (from peek): the application has them."""

    def clients():
        """Every client registered at any gateway (list of base58 str);
        SendError before the first topology (not an empty list)."""


class IApiDispatcher(Interface):
    """Turns one API request into one response (``nymtx.client.api.ApiDispatcher``).

    The websocket and TCP front ends call ``answer_bytes``; none of these raises.
    """

    def answer_bytes(data, max_size=None, push=None):
        """nymtx.client.api.Answer to one request: ``data`` (its encoding, at most
        *max_size* bytes, default ``max_frame``) and ``sent()``, to call once
        the transport took it (a fetch deletes its messages then, not
        before). *push* is the connection's nymtx.client.api.Push, for
        ``subscribe`` (without one, subscribe is an error)."""

    def handle_text(text):
        """Response (a dict) to one JSON request as text, committed at once (a
        fetch deletes its messages as it answers: for callers with no transport)."""

    def handle_bytes(data):
        """As handle_text, for the request as UTF-8 bytes."""

    def handle(request):
        """As handle_text, for a decoded JSON request."""


class IMixnetClient(Interface):
    """A running client inside a Twisted program (``nymtx.client.MixnetClient``,
    and ``nymtx.client.connect.ResolvingClient``, what ``nymtx.client.connect``
    gives an application)."""

    address = Attribute("str: this client's base58 address")
    full_address = Attribute("str: CLIENT@GATEWAY")
    state = Attribute("nymtx.client.core.CoreState: new, starting, running, stopping"
                      " or stopped; a client starts once")

    def start():
        """Deferred that fires once the first topology fetch is done; raises
        ClientStateError if it was started (or stopped) before."""

    def stop():
        """Deferred: stop the client and close its links, directory pool and
        inbox (each, even if an earlier one fails); a second stop waits for the first."""

    def send(recipient, message):
        """Send *message* (bytes: binary, str: text) to *recipient* (``CLIENT``
        or ``CLIENT@GATEWAY``): Deferred that fires when its last fragment
        leaves; fails with SendError (too long, unknown recipient, a full
        send queue). ``connect``'s client waits, bounded, for a plain
        ``CLIENT`` the topology does not list yet."""

    def fetch():
        """Remove and return the messages received so far (list[bytes]; a text
        message as its UTF-8)."""

    def fetch_messages():
        """As fetch, as nymtx.message.Message (text and binary told apart)."""

    def on_message(callback):
        """Call *callback(bytes)* for each message, those the inbox holds first,
        then each as it arrives; they leave the inbox (fetch does not return them)."""

    def on_received(callback):
        """As on_message, with a nymtx.message.Message."""

    def clients():
        """Every registered client in the topology (list of base58 str)."""
