"""The client's side of the private link: register and pull inside the channel.

:func:`connect` opens one channel connection to a gateway whose key the
client knows (from the topology) and fires with a :class:`PrivateLink`
once the gateway has proven that key. The link sends fixed-size requests
and matches the gateway's answers by position; :meth:`PrivateLink.pull`
carries the acknowledgements of earlier messages, so an ack is never a
frame of its own (``docs/gateway-channel.md``).

Reconnecting and the pull schedule belong to the caller: the client's
:class:`nymtx.gateway.link.GatewayLink`.
"""

import collections

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from nymtx.gateway import frames as F
from nymtx.gateway import padded as P
from nymtx.gateway.channel import HANDSHAKE_TIMEOUT, Channel, ChannelProtocol


class GatewayLinkError(Exception):
    """Not connected, refused, or a broken answer; the message says which."""


class PrivateLinkError(GatewayLinkError):
    """Not connected, a refusal, or a broken answer; the message says which."""


def _refusal(error):
    return PrivateLinkError(
        f"gateway refused the request ({P.error_name(error.code)}): {error.message}")


class PrivateLink(Protocol):
    """The requests of one client over one channel connection.

    Inside the channel: ``connectionMade`` means the gateway is proven, each
    ``dataReceived`` is one answer frame, each ``write`` one request frame.
    """

    log = Logger()

    def __init__(self, address=None):
        self.address = address
        self.ready = Deferred()
        #: fires (with None) once the connection is closed
        self.closed = Deferred()
        self.error = None
        self._waiting = collections.deque()
        self._lost = False

    def connectionMade(self):
        self.ready.callback(self)

    def dataReceived(self, data):
        try:
            answer = P.parse_answer(data)
        except F.FrameError as e:
            self._abort(PrivateLinkError(f"gateway {self.address} sent a broken answer: {e}"))
            return
        if not self._waiting:
            if isinstance(answer, P.Error):
                # its parting words before it closes the connection
                self.error = _refusal(answer)
                return
            self._abort(PrivateLinkError(
                f"gateway {self.address} sent an unrequested {type(answer).__name__}"))
            return
        d = self._waiting.popleft()
        if d.called:
            return  # cancelled (a handshake that timed out): its answer is dropped
        if isinstance(answer, P.Error):
            d.errback(_refusal(answer))
        else:
            d.callback(answer)

    def _abort(self, error):
        self.error = error
        self._fail_all(error)
        self.transport.abortConnection()

    def _fail_all(self, error):
        while self._waiting:
            d = self._waiting.popleft()
            if not d.called:
                d.errback(error)

    def connectionLost(self, reason):
        self._lost = True
        self.error = self.error or PrivateLinkError(
            f"connection to gateway {self.address} lost: {reason.getErrorMessage()}")
        self.closed.callback(None)
        self._fail_all(self.error)

    def _request(self, value, expected):
        if self._lost:
            return fail(PrivateLinkError(f"connection to gateway {self.address} is closed"))
        d = Deferred()
        self._waiting.append(d)
        self.transport.write(P.encode_request(value))

        def check(answer):
            if not isinstance(answer, expected):
                error = PrivateLinkError(
                    f"gateway {self.address} answered a {type(value).__name__} with"
                    f" {type(answer).__name__}")
                self._abort(error)
                raise error
            return answer
        return d.addCallback(check)

    def register(self):
        """Register the key this connection proved; fires with None."""
        return self._request(P.Register(), P.Registered).addCallback(lambda _: None)

    def pull(self, acks=(), take=True):
        """Delete *acks* (at most PULL_SIZE ids), then fetch the oldest
        messages (none if not *take*: the frame is the same size).

        Fires with a :class:`nymtx.gateway.padded.Messages`: ``messages`` as
        (id, bytes), at most PULL_SIZE, and ``acked``, how many of *acks*
        deleted a message.
        """
        acks = tuple(acks)
        if len(acks) > P.PULL_SIZE:
            return fail(ValueError(f"a pull acknowledges at most {P.PULL_SIZE} ids"))
        return self._request(P.Pull(acks, bool(take)), P.Messages)

    def close(self):
        """Close the connection; fires once it is closed."""
        if not self._lost:
            self.transport.loseConnection()
        return self.closed


class _OneShotFactory(Factory):
    noisy = False

    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol


class ClientChannel(ChannelProtocol):
    """The client's ChannelProtocol, running one :class:`PrivateLink`.

    ``established`` fires with the link once the gateway proved its key, or
    fails with PrivateLinkError if the connection ends first.
    """

    def __init__(self, keys, gateway_key, clock, link=None,
                 handshake_timeout=HANDSHAKE_TIMEOUT):
        self.link = link if link is not None else PrivateLink()
        channel = Channel.client(keys, gateway_key, clock, receive_sizes={P.ANSWER_SIZE},
                                 send_sizes={P.REQUEST_SIZE})
        super().__init__(channel, lambda key: self.link, clock, handshake_timeout)
        self.established = Deferred()
        self.link.ready.addCallback(self._ready)

    def _ready(self, link):
        if not self.established.called:
            self.established.callback(link)
        return link

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if not self.established.called:
            why = self.close_reason or reason.getErrorMessage()
            self.established.errback(PrivateLinkError(
                f"gateway {self.link.address} closed the connection during the handshake: {why}"))


def connect(endpoint, keys, gateway_key, clock, address=None,
            handshake_timeout=HANDSHAKE_TIMEOUT):
    """Connect to a gateway over *endpoint*; fires with a ready PrivateLink.

    Fails with PrivateLinkError when the connection fails, or closes before
    the gateway proves *gateway_key* (a wrong key, a handshake timeout).
    """
    outer = ClientChannel(keys, gateway_key, clock, PrivateLink(address), handshake_timeout)

    def failed(f):
        raise PrivateLinkError(f"cannot connect to gateway {address}: {f.getErrorMessage()}")

    d = endpoint.connect(_OneShotFactory(outer))
    d.addCallbacks(lambda _: outer.established, failed)
    return d
