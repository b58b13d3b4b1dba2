"""Authenticated mix links: Noise XK between nodes, then one fixed-size
AEAD frame per Sphinx packet (docs/mix-link.md specifies it byte by byte).

Admission by source address (nymtx.trust.admission) proves where a
connection comes from, not who holds a key. Here the sender (initiator)
knows the next hop's static key from the signed topology and proves its
own: the receiving node admits the link only if the proven key is one of
the nodes it takes packets from (the previous layer; the last layer for a
gateway).

The static key of a node is its **identity key converted** to X25519
(RFC 7748 birational map, libsodium's crypto_sign_ed25519_*_to_curve25519):
the key the signed presence already binds, that does not change when the
Sphinx key rotates, and that the directory's allow list names (argued in
docs/decisions.md, "Mix links").

:class:`MixLink` is sans-IO (bytes in, packets out; packets in, bytes out).
:class:`LinkResponder` and :class:`AuthenticatingFactory` run it on a
listener; nymtx.links runs the initiator side when a PacketLinks is given a
``secure`` (a :class:`LinkAuthority`).
"""

import warnings

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import (
    crypto_scalarmult_base, crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519)
from cryptography.exceptions import InvalidTag
from nacl.exceptions import RuntimeError as NaclRuntimeError
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseHandshakeError, NoiseInvalidMessage, NoiseValueError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from nymtx.sphinx import PACKET_SIZE
from nymtx.noisebackend import BACKEND as _BACKEND, KeyPair as _KeyPair
from nymtx.wire import no_delay

PROTOCOL_NAME = b"Noise_XK_25519_ChaChaPoly_SHA256"
#: Mixed into the handshake hash: a peer speaking another version, or the
#: gateway channel, fails message 1 instead of being misread.
PROLOGUE = b"nymtx mix link v1"
KEY_SIZE = 32
TAG_SIZE = 16
#: -> e, es: e (32), the encrypted empty payload (16)
MESSAGE1_SIZE = KEY_SIZE + TAG_SIZE
#: <- e, ee: e (32), the encrypted empty payload (16)
MESSAGE2_SIZE = KEY_SIZE + TAG_SIZE
#: -> s, se: the encrypted s (32 + 16), the encrypted empty payload (16)
MESSAGE3_SIZE = KEY_SIZE + TAG_SIZE + TAG_SIZE
#: <- the receiver's first transport message, empty: "admitted"
ADMITTED_SIZE = TAG_SIZE
#: one Sphinx packet in one transport message: no length prefix, every
#: frame is this size, so packets stay back to back inside the channel
FRAME_SIZE = PACKET_SIZE + TAG_SIZE
#: Seconds from the TCP connection to a proven peer, on either side.
HANDSHAKE_TIMEOUT = 10.0
#: Noise's nonce limit (2^64 - 1 is reserved)
MAX_NONCE = 2 ** 64 - 1

HANDSHAKE, OPEN = "handshake", "open"


class LinkError(Exception):
    """The peer broke the link's rules, or may not use it; the message says
    why, ``kind`` names the rule (refusals are counted by it). The
    connection cannot go on."""

    def __init__(self, message, kind="link"):
        super().__init__(message)
        self.kind = kind


# -- keys ------------------------------------------------------------------

def link_private_key(identity):
    """The X25519 private key of an IdentityKey (its Ed25519 seed converted)."""
    return crypto_sign_ed25519_sk_to_curve25519(identity.seed + identity.public_key)


def link_public_key(identity_public_key):
    """The X25519 public key of a 32-byte Ed25519 identity key; LinkError
    if it is not a point of the curve."""
    try:
        return crypto_sign_ed25519_pk_to_curve25519(bytes(identity_public_key))
    except (NaclRuntimeError, ValueError, TypeError) as e:
        raise LinkError(f"identity key cannot be converted to a link key: {e}")


class LinkKeys:
    """A node's static link key pair, from its identity key."""

    def __init__(self, identity):
        self.private_key = link_private_key(identity)
        self.public_key = crypto_scalarmult_base(self.private_key)

    def __repr__(self):
        return "LinkKeys(<private>)"




def _nonce(n):
    # Noise's ChaChaPoly nonce: 32 zero bits, then n as 64 bits little-endian
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class MixLink:
    """One side of one mix link.

    *initiator* is the sending node (it knows *remote_key*, the receiver's
    static link key from the signed topology); the responder learns the
    initiator's key from message 3 and calls *admit(key)*, which returns
    None to admit it or the reason to refuse it. *ephemeral* fixes the
    ephemeral private key, for test vectors only.

    ``receive(data)`` returns the packets the data completed and raises
    LinkError on any broken rule; ``take_output()`` the handshake bytes to
    send; ``seal(packet)`` one frame (initiator, once open).
    """

    def __init__(self, initiator, keys, remote_key=None, admit=None, ephemeral=None):
        if initiator and (remote_key is None or len(remote_key) != KEY_SIZE):
            raise ValueError("an initiator needs the responder's 32-byte link key")
        self.initiator = initiator
        self.state = HANDSHAKE
        self.remote_key = None if remote_key is None else bytes(remote_key)
        self.admit = admit
        self.handshake_hash = None
        self.frames_received = 0
        self._buffer = bytearray()
        self._output = bytearray()
        self._step = 0            # handshake messages done
        noise = NoiseConnection.from_name(PROTOCOL_NAME, backend=_BACKEND)
        noise.set_prologue(PROLOGUE)
        noise.noise_protocol.keypairs["s"] = _KeyPair(
            private=keys.private_key, public=keys.public_key, public_bytes=keys.public_key)
        if ephemeral is not None:
            noise.noise_protocol.keypairs["e"] = _KeyPair.from_private_bytes(ephemeral)
        if initiator:
            noise.set_as_initiator()
            noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.remote_key)
        else:
            noise.set_as_responder()
        with warnings.catch_warnings():
            # (a fixed ephemeral key: the vectors' only; noiseprotocol warns)
            warnings.simplefilter("ignore", UserWarning)
            noise.start_handshake()
        self._noise = noise
        if initiator:
            self._output += noise.write_message()

    @property
    def is_open(self):
        return self.state == OPEN

    def take_output(self):
        out = bytes(self._output)
        self._output.clear()
        return out

    def receive(self, data):
        buf = self._buffer
        buf += data
        if self.state == HANDSHAKE:
            self._handshake()
            if self.state == HANDSHAKE:
                return []
        if self.initiator:
            if buf:
                raise LinkError(f"the receiving node sent {len(buf)} bytes after its"
                                " handshake; it sends nothing on a mix link")
            return []
        whole = len(buf) - len(buf) % FRAME_SIZE
        if not whole:
            return []
        chunk = bytes(buf[:whole])
        del buf[:whole]
        packets = []
        decrypt, n = self._recv_cipher.decrypt, self._recv_n
        for start in range(0, whole, FRAME_SIZE):
            if n >= MAX_NONCE:
                raise LinkError("the link's nonces are spent; it must be opened afresh")
            try:
                packets.append(decrypt(_nonce(n), chunk[start:start + FRAME_SIZE], None))
            except InvalidTag:
                self._recv_n = n
                raise LinkError(f"frame {self.frames_received + len(packets)} does not"
                                " authenticate (altered, cut, reordered or replayed)",
                                "bad frame")
            n += 1
        self._recv_n = n
        self.frames_received += len(packets)
        return packets

    def _handshake(self):
        buf = self._buffer
        noise = self._noise
        if self.initiator:
            if self._step == 0:
                if len(buf) < MESSAGE2_SIZE:
                    return
                message = bytes(buf[:MESSAGE2_SIZE])
                del buf[:MESSAGE2_SIZE]
                self._read(message, 2, "the receiving node does not hold the link key the"
                           " signed topology gives it")
                self._output += noise.write_message()
                self._keys(noise.noise_protocol)
                self._step = 1
            if len(buf) < ADMITTED_SIZE:
                return
            message = bytes(buf[:ADMITTED_SIZE])
            del buf[:ADMITTED_SIZE]
            try:
                self._recv_cipher.decrypt(_nonce(0), message, None)
            except InvalidTag:
                raise LinkError("the receiving node's admission message does not"
                                " authenticate")
            self._recv_cipher = None
        else:
            if self._step == 0:
                if len(buf) < MESSAGE1_SIZE:
                    return
                message = bytes(buf[:MESSAGE1_SIZE])
                del buf[:MESSAGE1_SIZE]
                self._read(message, 1, "not a mix link handshake for this node's key")
                self._step = 1
                self._output += noise.write_message()
            if len(buf) < MESSAGE3_SIZE:
                return
            message = bytes(buf[:MESSAGE3_SIZE])
            del buf[:MESSAGE3_SIZE]
            # (noiseprotocol forgets its handshake state once done)
            state = noise.noise_protocol.handshake_state
            self._read(message, 3, "a replayed or forged handshake")
            self.remote_key = bytes(state.rs.public_bytes)
            if self.admit is not None:
                why = self.admit(self.remote_key)
                if why is not None:
                    raise LinkError(why, "not admitted")
            self._keys(noise.noise_protocol)
            # the sender holds its packets until it reads this: a node
            # refused (say, one the receiver's topology does not list yet)
            # keeps them queued for its next try instead of losing them
            self._output += self._send_cipher.encrypt(_nonce(0), b"", None)
            self._send_cipher = None
        self._noise = None
        self.state = OPEN

    def _read(self, message, number, meaning):
        try:
            self._noise.read_message(message)
        except (InvalidTag, NoiseInvalidMessage, NoiseHandshakeError, NoiseValueError) as e:
            raise LinkError(f"handshake message {number} does not decrypt ({meaning})"
                            + (f": {e}" if str(e) else ""), f"bad message {number}")

    def _keys(self, protocol):
        self.handshake_hash = protocol.handshake_hash
        # the transport keys leave noiseprotocol: one call a frame instead
        # of four Python layers, to a cipher keyed once (cryptography's, a
        # quarter of PyNaCl's per-call cost on 1388 bytes: docs/performance.md)
        self._send_cipher = ChaCha20Poly1305(bytes(protocol.cipher_state_encrypt.k))
        self._recv_cipher = ChaCha20Poly1305(bytes(protocol.cipher_state_decrypt.k))
        # nonce 0 of the receiver's direction is the admission message;
        # the frames count from 0 in the sender's
        self._send_n = self._recv_n = 0

    def seal(self, packet):
        """The frame carrying one *packet* (PACKET_SIZE bytes)."""
        if not (self.initiator and self.state == OPEN):
            raise LinkError("only an open link's sender seals frames")
        if len(packet) != PACKET_SIZE:
            raise ValueError(f"a mix link carries {PACKET_SIZE}-byte packets,"
                             f" not {len(packet)}")
        n = self._send_n
        if n >= MAX_NONCE:
            raise LinkError("the link's nonces are spent; it must be opened afresh")
        self._send_n = n + 1
        return self._send_cipher.encrypt(_nonce(n), bytes(packet), None)

    def seal_all(self, packets):
        return b"".join(map(self.seal, packets))


# -- the responder on a listener ---------------------------------------------

class LinkResponder(Protocol):
    """One incoming mix link: the handshake, then each frame's packet to an
    inner protocol (the listener's own, built once the peer is admitted,
    on the same transport: it reads plaintext packets back to back)."""

    #: whole packets count as activity (the inner protocol says so)
    reports_activity = True

    def __init__(self, factory, addr):
        self.factory = factory
        self.addr = addr
        self.link = MixLink(False, factory.authority.keys, admit=factory.authority.admit)
        self.inner = None
        self._timer = None

    def connectionMade(self):
        no_delay(self.transport)
        self._timer = self.factory.clock.callLater(
            HANDSHAKE_TIMEOUT, self._refuse,
            f"no handshake within {HANDSHAKE_TIMEOUT:g} s", "timeout", True)

    def dataReceived(self, data):
        if self.transport is None or self.transport.disconnecting:
            return
        try:
            packets = self.link.receive(data)
        except LinkError as e:
            self._refuse(str(e), e.kind)
            return
        out = self.link.take_output()
        if out:
            self.transport.write(out)
        if self.inner is None and self.link.is_open:
            self._cancel()
            from nymtx.listening import handshake_done
            handshake_done(self.transport)
            self.inner = self.factory.wrapped.buildProtocol(self.addr)
            if self.inner is None:
                self.transport.loseConnection()
                return
            self.inner.makeConnection(self.transport)
        if packets:
            # one call for the chunk: the inner receiver cuts packets itself
            # (and a call per packet cost a few µs each: docs/performance.md)
            self.inner.dataReceived(b"".join(packets))

    def _refuse(self, why, kind, abort=False):
        self._timer = None if abort else self._timer
        self._cancel()
        self.factory.refused_link(getattr(self.addr, "host", "?"), why, kind)
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _cancel(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason):
        self._cancel()
        if self.inner is not None:
            self.inner.connectionLost(reason)


class AuthenticatingFactory:
    """Wraps a listener's inner factory: each connection must open a mix
    link that *authority* admits (with *authenticate*; else the wrapped
    protocol reads plain packets, as a layer-1 node does from clients).
    The authority runs while the port listens."""

    log = Logger()

    def __init__(self, wrapped, authority, clock, authenticate=True, run_authority=True):
        self.wrapped = wrapped
        self.authority = authority
        self.run_authority = run_authority
        self.clock = clock
        self.authenticate = authenticate
        #: refusals by reason (the first of each kind a minute is logged)
        self.refused = {}
        from nymtx.links import LogThrottle
        self._quiet = LogThrottle(clock)

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def doStart(self):
        if self.run_authority and not self.authority.running:
            self.authority.startService()
        self.wrapped.doStart()

    def doStop(self):
        if self.run_authority and self.authority.running:
            self.authority.stopService()
        self.wrapped.doStop()

    def buildProtocol(self, addr):
        if not self.authenticate:
            return self.wrapped.buildProtocol(addr)
        return LinkResponder(self, addr)

    def refused_link(self, host, why, kind):
        self.refused[kind] = self.refused.get(kind, 0) + 1
        count = self._quiet.allow(kind)
        if count:
            self.log.warn("mix link from {host} refused: {why} ({count} such since the"
                          " last such line)", host=host, why=why, count=count)
