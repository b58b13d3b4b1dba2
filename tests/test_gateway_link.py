from hypothesis import given, strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.gateway import frames as F
from nymtx.gateway.link import GatewayLink, GatewayLinkError, _LinkProtocol
from nymtx.keys import KeyPair

ADDRESS = NodeAddress.parse("127.0.0.1:9000")


def connected(gateway_key=None):
    proto = _LinkProtocol(ADDRESS, gateway_key)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


class LinkProtocol(SynchronousTestCase):
    def test_answers_matched_in_order(self):
        proto, transport = connected()
        proto.dataReceived(F.encode(F.Hello(1, b"g" * 32, b"n" * 32)))
        self.assertEqual(self.successResultOf(proto.hello).nonce, b"n" * 32)
        first, second = proto.request(F.Pull(1)), proto.request(F.Ack((1,)))
        self.assertEqual(transport.value(), F.encode(F.Pull(1)) + F.encode(F.Ack((1,))))
        proto.dataReceived(F.encode(F.Messages(())) + F.encode(F.Error(F.E_BAD_TOKEN, "no")))
        self.assertEqual(self.successResultOf(first), F.Messages(()))
        e = self.failureResultOf(second, GatewayLinkError).value
        self.assertIn("bad-token", str(e))

    def test_wrong_gateway_key(self):
        proto, transport = connected(gateway_key=b"x" * 32)
        proto.dataReceived(F.encode(F.Hello(1, b"g" * 32, b"n" * 32)))
        self.assertIn("public key", str(self.failureResultOf(proto.hello).value))
        self.assertTrue(transport.disconnected)

    def test_wrong_version(self):
        proto, _ = connected()
        proto.dataReceived(F.encode(F.Hello(9, b"g" * 32, b"n" * 32)))
        self.assertIn("version 9", str(self.failureResultOf(proto.hello).value))

    def test_garbage_instead_of_hello(self):
        proto, transport = connected()
        proto.dataReceived(b"\x00\x00\x00\x01\x42")
        self.failureResultOf(proto.hello, GatewayLinkError)
        self.assertTrue(transport.disconnected)

    def test_oversized(self):
        proto, transport = connected()
        proto.dataReceived(b"\xff\xff\xff\xff")
        self.assertIn("maximum", str(self.failureResultOf(proto.hello).value))

    @given(st.binary(max_size=200))
    def test_fuzz(self, data):
        proto, _ = connected()
        pending = proto.request(F.Pull(1))
        proto.dataReceived(data)
        proto.connectionLost(_Reason())
        self.assertTrue(proto.hello.called)
        self.assertTrue(pending.called)
        pending.addErrback(lambda f: f.trap(GatewayLinkError))
        proto.hello.addErrback(lambda f: f.trap(GatewayLinkError))


class _Reason:
    def getErrorMessage(self):
        return "test"


class Link(SynchronousTestCase):
    def test_not_connected(self):
        link = GatewayLink(None, ADDRESS, KeyPair.generate(), b"t" * 32)
        e = self.failureResultOf(link.pull(), GatewayLinkError).value
        self.assertIn("not connected to gateway 127.0.0.1:9000", str(e))
        self.failureResultOf(link.ack([1]), GatewayLinkError)
        self.assertEqual(self.successResultOf(link.ack([])), 0)
        self.assertIsNone(self.successResultOf(link.stop()))
