"""The private client–gateway channel: Noise IK, then AEAD transport frames.

``docs/gateway-channel.md`` specifies it byte by byte. :class:`Channel` is
sans-IO: bytes in, plaintext frames out, plaintext in, bytes out, with no
sockets and no reactor, so every rule is testable on its own.
:class:`ChannelProtocol` is the thin Twisted glue: it runs a Channel on a
transport and, once the peer's static key is proven, hands the connection
to an inner protocol built for that key. The inner protocol sees an
ordinary transport: each ``write`` becomes one transport frame, each frame
received is one ``dataReceived``.

The gateway's static key is its Sphinx X25519 key (the one the topology
lists); the client's static key is its client key. Nothing else identifies
either side, so no bearer secret ever crosses the wire.
"""

import struct
import warnings

from cryptography.exceptions import InvalidTag
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError, NoiseInvalidMessage, NoiseMaxNonceError, NoiseValueError)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import directlyProvides, providedBy

from nymtx.addressing import encode_client_address
from nymtx.noisebackend import BACKEND as _BACKEND, KeyPair as _KeyPair
from nymtx.wire import no_delay

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_SHA256"
#: Mixed into the handshake hash: a peer speaking another version (or
#: another protocol) fails the first handshake message instead of being
#: misread.
PROLOGUE = b"nymtx gateway channel v2"
KEY_SIZE = 32
TAG_SIZE = 16
LENGTH_SIZE = 2
#: e (32) · encrypted s (32 + 16) · encrypted empty payload (16)
MESSAGE1_SIZE = KEY_SIZE + KEY_SIZE + TAG_SIZE + TAG_SIZE
#: e (32) · encrypted empty payload (16)
MESSAGE2_SIZE = KEY_SIZE + TAG_SIZE
#: The flags byte in front of every transport plaintext.
FLAGS_SIZE = 1
FLAG_REKEY = 0x01
#: The Noise limit on one message, length prefix aside.
MAX_MESSAGE = 65535
MAX_PLAINTEXT = MAX_MESSAGE - TAG_SIZE - FLAGS_SIZE
#: A sender rekeys its direction after this many frames under one key, or ...
REKEY_MESSAGES = 1000
#: ... on the first frame it sends this many seconds after the last rekey.
REKEY_SECONDS = 60.0
#: Seconds from the TCP connection to a proven peer (both handshake messages
#: and, at the gateway, the client's first transport frame).
HANDSHAKE_TIMEOUT = 10.0

HANDSHAKE, OPEN, CLOSED = "handshake", "open", "closed"


class ChannelError(Exception):
    """The peer broke the channel's rules; the message says how. The
    connection cannot go on: the stream or the cipher state is lost."""


class Refused(Exception):
    """Raised by an ``accept`` callback: this peer key may not use the channel."""


def frame_size(plaintext_size):
    """Bytes on the wire for an inner frame of *plaintext_size* bytes."""
    return LENGTH_SIZE + FLAGS_SIZE + plaintext_size + TAG_SIZE




def _noise_static(keys):
    # noiseprotocol's own setter derives the public half, a scalar
    # multiplication per handshake; nymtx's KeyPair already holds it.
    return _KeyPair(private=keys.private_key, public=keys.public_key,
                    public_bytes=keys.public_key)


class Channel:
    """One side of one connection: the handshake, then transport frames.

    *keys* is this side's static :class:`nymtx.keys.KeyPair`; an initiator
    (the client) also needs *remote_key*, the gateway's public key.
    *clock* gives ``seconds()`` for the rekey schedule. *receive_sizes*, if
    given, is the set of inner frame sizes the peer may send: a length
    prefix announcing anything else is refused before its body is read.
    *send_sizes* likewise refuses to send a frame of another size, so a bug
    above cannot put a telling size on the wire. *ephemeral* fixes the
    ephemeral private key: for test vectors only.
    """

    def __init__(self, initiator, keys, clock, remote_key=None, prologue=PROLOGUE,
                 receive_sizes=None, send_sizes=None, ephemeral=None,
                 rekey_messages=REKEY_MESSAGES, rekey_seconds=REKEY_SECONDS):
        if initiator and (remote_key is None or len(remote_key) != KEY_SIZE):
            raise ValueError("an initiator needs the responder's 32-byte public key")
        if rekey_messages < 1 or rekey_seconds <= 0:
            raise ValueError("rekey_messages and rekey_seconds must be positive")
        self.initiator = initiator
        self.clock = clock
        self.rekey_messages = rekey_messages
        self.rekey_seconds = rekey_seconds
        self.receive_sizes = None if receive_sizes is None else frozenset(receive_sizes)
        self.send_sizes = None if send_sizes is None else frozenset(send_sizes)
        for size in (self.receive_sizes or frozenset()) | (self.send_sizes or frozenset()):
            if not 0 <= size <= MAX_PLAINTEXT:
                raise ValueError(f"frame size {size} is not in 0-{MAX_PLAINTEXT}")
        self.state = HANDSHAKE
        #: the peer's static public key: known (responder) once message 1 is read
        self.remote_key = bytes(remote_key) if remote_key is not None else None
        #: whether the peer has shown it holds the keys of *this* handshake:
        #: the gateway by message 2, the client by its first transport frame
        self.peer_proven = False
        self.handshake_hash = None
        self._started = False
        self._buffer = bytearray()
        self._output = bytearray()
        self._sent = self._received = 0        # frames under the current key
        self._sent_rekeyed_at = None
        self.frames_sent = self.frames_received = 0
        noise = NoiseConnection.from_name(PROTOCOL_NAME, backend=_BACKEND)
        noise.set_prologue(prologue)
        # (noiseprotocol has no public setter for a key pair already made)
        noise.noise_protocol.keypairs["s"] = _noise_static(keys)
        if initiator:
            noise.set_as_initiator()
            noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.remote_key)
        else:
            noise.set_as_responder()
        if ephemeral is None:
            noise.start_handshake()
        else:
            with warnings.catch_warnings():
                # noiseprotocol warns on a fixed ephemeral; vectors need one
                warnings.simplefilter("ignore")
                noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
                noise.start_handshake()
        self._noise = noise

    @classmethod
    def client(cls, keys, gateway_key, clock, **kwargs):
        return cls(True, keys, clock, remote_key=gateway_key, **kwargs)

    @classmethod
    def gateway(cls, keys, clock, **kwargs):
        return cls(False, keys, clock, **kwargs)

    # ---- output ---------------------------------------------------------

    def start(self):
        """The initiator's first bytes (message 1); nothing for a responder."""
        if not self.initiator:
            return b""
        if self._started:
            raise ChannelError("the handshake has already started")
        self._started = True
        return self._wire(bytes(self._noise.write_message(b"")))

    def take_output(self):
        """Bytes the channel itself must send (the responder's message 2)."""
        out, self._output = bytes(self._output), bytearray()
        return out

    def send(self, plaintext):
        """The wire bytes of one transport frame carrying *plaintext*."""
        if self.state != OPEN:
            raise ChannelError(f"cannot send: the channel is {self.state}")
        plaintext = bytes(plaintext)
        if self.send_sizes is not None and len(plaintext) not in self.send_sizes:
            raise ValueError(
                f"a frame of {len(plaintext)} bytes is not one of the sizes"
                f" {sorted(self.send_sizes)} this channel sends")
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError(f"a frame of {len(plaintext)} bytes is over {MAX_PLAINTEXT}")
        now = self.clock.seconds()
        rekey = (self._sent + 1 >= self.rekey_messages
                 or now - self._sent_rekeyed_at >= self.rekey_seconds)
        flags = FLAG_REKEY if rekey else 0
        try:
            wire = self._wire(self._noise.encrypt(bytes([flags]) + plaintext))
        except NoiseMaxNonceError:
            raise ChannelError("2**64 frames under one key: reconnect")
        self.frames_sent += 1
        if rekey:
            self._noise.rekey_outbound_cipher()
            self._sent, self._sent_rekeyed_at = 0, now
        else:
            self._sent += 1
        return wire

    @staticmethod
    def _wire(message):
        return struct.pack(">H", len(message)) + message

    # ---- input ----------------------------------------------------------

    def receive(self, data):
        """The transport plaintexts completed by *data*; ChannelError if the
        peer broke a rule (the channel is then closed for good)."""
        if self.state == CLOSED:
            raise ChannelError("the channel is closed")
        try:
            return self._receive(data)
        except ChannelError:
            self.close()
            raise

    def _receive(self, data):
        buf = self._buffer
        buf += data
        frames = []
        while len(buf) >= LENGTH_SIZE:
            (length,) = struct.unpack_from(">H", buf)
            self._check_length(length)
            if len(buf) < LENGTH_SIZE + length:
                break
            message = bytes(buf[LENGTH_SIZE:LENGTH_SIZE + length])
            del buf[:LENGTH_SIZE + length]
            if self.state == HANDSHAKE:
                self._handshake(message)
            else:
                frames.append(self._transport(message))
        return frames

    def _check_length(self, length):
        # Checked on the prefix alone: an announced body that cannot be
        # right is never waited for, so a peer cannot make us buffer it.
        if self.state == HANDSHAKE:
            expected = MESSAGE2_SIZE if self.initiator else MESSAGE1_SIZE
            if length != expected:
                raise ChannelError(
                    f"handshake message {1 + self.initiator} announced as {length} bytes,"
                    f" expected {expected}")
            return
        size = length - TAG_SIZE - FLAGS_SIZE
        if self.receive_sizes is not None:
            if size not in self.receive_sizes:
                raise ChannelError(
                    f"frame announced as {length} bytes: not one of the sizes"
                    f" {sorted(frame_size(s) - LENGTH_SIZE for s in self.receive_sizes)}")
        elif size < 0:
            raise ChannelError(f"frame announced as {length} bytes, shorter than its tag")

    def _handshake(self, message):
        which = "2" if self.initiator else "1"
        try:
            payload = self._noise.read_message(message)
            if not self.initiator:
                # The client's key is in hand, but an IK message 1 can be a
                # replay: only a frame under the keys of this handshake (which
                # mix in our fresh ephemeral) proves the client is live.
                self.remote_key = bytes(
                    self._noise.noise_protocol.handshake_state.rs.public_bytes)
                self._output += self._wire(bytes(self._noise.write_message(b"")))
        except (InvalidTag, NoiseInvalidMessage):
            raise ChannelError(
                f"handshake message {which} does not decrypt: the peer does not hold"
                f" the keys it claims (wrong gateway key, or a forged or altered message)")
        except (ValueError, NoiseValueError, NoiseHandshakeError) as e:
            # cryptography refuses a low-order point (an all-zero DH result)
            raise ChannelError(f"handshake message {which} is unusable: {e}")
        if payload:
            raise ChannelError(f"handshake message {which} carries a payload; it must be empty")
        if not self._noise.handshake_finished:
            raise ChannelError("the handshake did not finish")  # cannot happen with IK
        self.handshake_hash = bytes(self._noise.get_handshake_hash())
        self._sent_rekeyed_at = self.clock.seconds()
        self.state = OPEN
        if self.initiator:
            # message 2 decrypted: only the holder of the gateway's private
            # key could have made it, for our ephemeral alone
            self.peer_proven = True

    def _transport(self, message):
        try:
            plaintext = self._noise.decrypt(message)
        except NoiseInvalidMessage:
            raise ChannelError(
                f"frame {self.frames_received} does not decrypt: altered, replayed,"
                f" reordered or from another session")
        except NoiseMaxNonceError:
            raise ChannelError("2**64 frames under one key: reconnect")
        flags = plaintext[0]
        if flags & ~FLAG_REKEY:
            raise ChannelError(f"frame {self.frames_received} has unknown flags 0x{flags:02x}")
        self.frames_received += 1
        self.peer_proven = True
        if flags & FLAG_REKEY:
            self._noise.rekey_inbound_cipher()
            self._received = 0
        else:
            self._received += 1
            if self._received >= self.rekey_messages:
                raise ChannelError(
                    f"the peer sent {self._received} frames without rekeying"
                    f" (at most {self.rekey_messages} under one key)")
        return plaintext[FLAGS_SIZE:]

    @property
    def pending(self):
        """Bytes received and not yet part of a whole message."""
        return len(self._buffer)

    def close(self):
        self.state = CLOSED
        self._buffer = bytearray()
        self._noise = None


def describe_key(key):
    return encode_client_address(key) if key is not None else "(key not yet known)"


class ChannelProtocol(Protocol, TimeoutMixin):
    """Runs a :class:`Channel` on a transport, and an inner protocol inside it.

    *accept(remote_key)* is called once the peer is proven to hold
    *remote_key* for this very connection; it returns the inner protocol, or
    raises :class:`Refused` to close the connection. At the gateway that is
    after the client's first transport frame, so an unknown key, a
    registered one and a replayed handshake look the same to anyone who
    cannot finish the handshake. That first frame is then delivered to the
    inner protocol. Until then nothing from the peer reaches the layer
    above, and a handshake not finished in *handshake_timeout* seconds (on
    *clock*) closes the connection.

    To the inner protocol this object is the transport: ``write(data)``
    sends *data* as one frame.
    """

    log = Logger()

    def __init__(self, channel, accept, clock, handshake_timeout=HANDSHAKE_TIMEOUT):
        self.channel = channel
        self.accept = accept
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.inner = None
        #: why the connection was closed from this side, if it was
        self.close_reason = None

    # ---- the outer protocol ---------------------------------------------

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self):
        no_delay(self.transport)
        self.callLater = self.clock.callLater
        self.setTimeout(self.handshake_timeout)
        first = self.channel.start()
        if first:
            self.transport.write(first)

    def dataReceived(self, data):
        if self.channel.state == CLOSED:
            return
        try:
            frames = self.channel.receive(data)
        except ChannelError as e:
            self._fail(str(e))
            return
        out = self.channel.take_output()
        if out:
            self.transport.write(out)
        if self.inner is None and self.channel.peer_proven:
            self.setTimeout(None)
            try:
                inner = self.accept(self.channel.remote_key)
            except Refused as e:
                self._fail(f"refused key {describe_key(self.channel.remote_key)}: {e}")
                return
            self.inner = inner
            self.proven()
            inner.makeConnection(self)
        for plaintext in frames:
            if self.channel.state != OPEN or self.transport.disconnecting:
                return
            self.inner.dataReceived(plaintext)

    # The transport's interfaces are copied onto this object for the inner
    # protocol; a wrapping transport may bring IHalfCloseableProtocol along.
    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def proven(self):
        """The peer's key is proven and accepted: a hook for subclasses."""

    def timeoutConnection(self):
        self._fail(f"handshake not finished within {self.handshake_timeout:g} s")

    def _fail(self, reason):
        self.close_reason = reason
        self.log.info("gateway channel with {peer} closed: {reason}",
                      peer=_peer(self.transport), reason=reason)
        self.channel.close()
        # abort, not close: a peer that broke the rules gets no graceful
        # drain of our send buffer, and may be one that never reads
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.setTimeout(None)
        self.channel.close()
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner.connectionLost(reason)

    # ---- the transport the inner protocol sees ---------------------------

    def write(self, data):
        if self.channel.state != OPEN:
            return
        self.transport.write(self.channel.send(data))

    def writeSequence(self, data):
        for chunk in data:
            self.write(chunk)

    def loseConnection(self):
        self.transport.loseConnection()

    def abortConnection(self):
        self.transport.abortConnection()

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def registerProducer(self, producer, streaming):
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.transport.unregisterProducer()

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        self.transport.stopProducing()

    @property
    def disconnecting(self):
        return self.transport.disconnecting


def _peer(transport):
    try:
        return str(transport.getPeer())
    except Exception:
        return "(unknown peer)"


class ChannelFactory(Factory):
    """Builds a :class:`ChannelProtocol` per connection.

    *make_channel()* returns a fresh :class:`Channel` (gateway or client
    side); *accept* and *handshake_timeout* are as for ChannelProtocol.
    """

    noisy = False

    def __init__(self, make_channel, accept, clock, handshake_timeout=HANDSHAKE_TIMEOUT):
        self.make_channel = make_channel
        self.accept = accept
        self.clock = clock
        self.handshake_timeout = handshake_timeout

    def buildProtocol(self, addr):
        p = ChannelProtocol(self.make_channel(), self.accept, self.clock,
                            self.handshake_timeout)
        p.factory = self
        return p
