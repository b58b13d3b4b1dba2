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
        """Queue *packet* (bytes) for *address* (NodeAddress); never blocks or raises
        for a peer being down."""

    def retain(addresses):
        """Close the link of every peer not in *addresses* (the peers still wanted)."""

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
        """Deferred: close the connections this client opened itself."""


class IGatewayLink(Interface):
    """A client's authenticated link to its gateway (``nymtx.gateway.link.GatewayLink``)."""

    connected = Attribute("bool: authenticated right now")
    last_error = Attribute("GatewayLinkError | None: why it is not connected")
    state = Attribute("nymtx.gateway.link.LinkState: stopped, connecting, ready, waiting"
                      " or stopping")

    def start():
        """Connect, and keep reconnecting while started."""

    def stop():
        """Deferred that fires once the connection is closed."""

    def when_ready():
        """Deferred that fires when the link is (or next becomes) authenticated."""

    def pull(limit=100):
        """Deferred[list[(id, bytes)]]: up to *limit* stored messages, oldest first."""

    def ack(ids):
        """Deferred[int]: delete the messages *ids* at the gateway; how many were."""


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
        """Commit (gateway_id | None, body) pairs at once (a body: a
        nymtx.message.Message, or bytes for text); return the bodies stored
        (a repeat of a stored but unacknowledged id is not)."""

    def commit(gateway_ids, messages):
        """In one transaction: remember *gateway_ids* as pulled but not acknowledged
        and store *messages* (Messages); return the Messages stored."""

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

        Raises SendError at once for a bad message or recipient, one too long,
        or a full send queue; returns a Deferred that fires when its last
        fragment leaves (or fails with ClientStopped).
        """

    def fetch():
        """Remove and return the messages received so far (list[bytes])."""

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
        """Every registered client (list of base58 str); SendError before a topology."""


class IApiDispatcher(Interface):
    """Turns one API request into one response (``nymtx.client.api.ApiDispatcher``).

    The websocket and TCP front ends call it; none of these raises.
    """

    def answer_bytes(data, max_size=65536):
        """nymtx.client.api.Answer to one request: ``data`` (its encoding, at most
        *max_size* bytes) and ``sent()``, to call once the transport took it (a
        fetch deletes its messages then, not before)."""

    def handle_text(text):
        """Response (a dict) to one JSON request as text."""

    def handle_bytes(data):
        """Response (a dict) to one JSON request as UTF-8 bytes."""

    def handle(request):
        """Response (a dict) to one decoded JSON request."""


class IMixnetClient(Interface):
    """A running client inside a Twisted program (``nymtx.client.MixnetClient``):
    what ``nymtx.client.connect`` gives an application."""

    address = Attribute("str: this client's base58 address")
    full_address = Attribute("str: CLIENT@GATEWAY")
    state = Attribute("nymtx.client.core.CoreState: new, starting, running, stopping"
                      " or stopped; a client starts once")

    def start():
        """Deferred that fires once the first topology fetch is done."""

    def stop():
        """Deferred: stop the client and close what it owns."""

    def send(recipient, message):
        """Deferred that fires when the packet leaves; fails with SendError."""

    def fetch():
        """Remove and return the messages received so far (list[bytes])."""

    def on_message(callback):
        """Call *callback(bytes)* for each message, those already held first."""

    def clients():
        """Every registered client in the topology (list of base58 str)."""
