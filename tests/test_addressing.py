import ipaddress

import base58
from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import (
    ADDRESS_SIZE, AddressError, NodeAddress, decode_client_address,
    encode_client_address)

ipv4s = st.ip_addresses(v=4)
ipv6s = st.ip_addresses(v=6)
ports = st.integers(1, 65535)
node_addresses = st.builds(NodeAddress, st.one_of(ipv4s, ipv6s), ports)


class NodeAddressTests(SynchronousTestCase):
    def test_ipv4_layout(self):
        address = NodeAddress.parse("127.0.0.1:1789")
        self.assertEqual(
            address.to_bytes(),
            b"\x04" + (1789).to_bytes(2, "big") + bytes([127, 0, 0, 1]) + bytes(25))
        self.assertEqual(address.host, "127.0.0.1")
        self.assertEqual(address.port, 1789)
        self.assertEqual(str(address), "127.0.0.1:1789")

    def test_ipv6_layout(self):
        address = NodeAddress.parse("[2001:db8::1]:9000")
        packed = ipaddress.IPv6Address("2001:db8::1").packed
        self.assertEqual(
            address.to_bytes(), b"\x06" + (9000).to_bytes(2, "big") + packed + bytes(13))
        self.assertEqual(address.host, "2001:db8::1")
        self.assertEqual(str(address), "[2001:db8::1]:9000")

    @given(node_addresses)
    def test_bytes_round_trip(self, address):
        raw = address.to_bytes()
        self.assertEqual(len(raw), ADDRESS_SIZE)
        self.assertEqual(NodeAddress.from_bytes(raw), address)
        self.assertEqual(NodeAddress.from_bytes(bytearray(raw)), address)

    @given(node_addresses)
    def test_text_round_trip(self, address):
        self.assertEqual(NodeAddress.parse(str(address)), address)

    def test_constructor_accepts_text_ip(self):
        self.assertEqual(NodeAddress("10.0.0.1", 80), NodeAddress.parse("10.0.0.1:80"))

    def assertRefused(self, text, *fragments):
        with self.assertRaises(AddressError) as caught:
            NodeAddress.parse(text)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_malformed_text(self):
        self.assertRefused("127.0.0.1", "ip:port")
        self.assertRefused(":1789", "ip:port")
        self.assertRefused("localhost:1789", "'localhost' is not an IPv4 or IPv6 address")
        self.assertRefused("::1:1789", "[ip]:port")
        self.assertRefused("1.2.3.4:http", "port 'http' is not a number")
        self.assertRefused("1.2.3.4:0", "out of range")
        self.assertRefused("1.2.3.4:65536", "out of range")
        self.assertRefused("1.2.3.4:-1", "not a number")
        self.assertRefused("1.2.3.4: 80", "not a number")
        self.assertRefused("256.1.1.1:80", "not an IPv4 or IPv6 address")

    def test_unicode_digits_are_not_a_port(self):
        # str.isdigit() says yes to these; int() fails on the first and
        # silently reads the second as 12.
        self.assertRefused("1.2.3.4:\u00b2", "not a number")
        self.assertRefused("1.2.3.4:\u0661\u0662", "not a number")

    def test_huge_port_is_refused_before_int(self):
        self.assertRefused("1.2.3.4:" + "9" * 5000, "not a number")

    def test_ipv6_scope_is_refused(self):
        self.assertRefused("[fe80::1%eth0]:80", "scope")
        with self.assertRaises(AddressError):
            NodeAddress("fe80::1%eth0", 80)

    def test_text_of_wrong_type(self):
        for value in (None, b"1.2.3.4:80", 1789, ["1.2.3.4:80"]):
            with self.assertRaises(AddressError) as caught:
                NodeAddress.parse(value)
            self.assertIn("must be text", str(caught.exception))

    def test_constructor_validates(self):
        for ip, port in [("1.2.3.4", 0), ("1.2.3.4", 65536), ("1.2.3.4", True),
                         ("1.2.3.4", "80"), ("nope", 80), (1234, 80)]:
            with self.assertRaises(AddressError):
                NodeAddress(ip, port)

    def assertBytesRefused(self, data, fragment):
        with self.assertRaises(AddressError) as caught:
            NodeAddress.from_bytes(data)
        self.assertIn(fragment, str(caught.exception))

    def test_malformed_bytes(self):
        good = NodeAddress.parse("1.2.3.4:80").to_bytes()
        self.assertBytesRefused(good[:31], "32 bytes, not 31")
        self.assertBytesRefused(good + b"\0", "32 bytes, not 33")
        self.assertBytesRefused(b"\x05" + good[1:], "family 5")
        self.assertBytesRefused(good[:31] + b"\x01", "padding")
        self.assertBytesRefused(b"\x04\x00\x00" + good[3:], "port 0")
        self.assertBytesRefused(None, "not NoneType")
        self.assertBytesRefused("x" * 32, "not str")

    @given(st.binary(min_size=0, max_size=40))
    def test_fuzz_bytes(self, data):
        try:
            address = NodeAddress.from_bytes(data)
        except AddressError:
            return
        self.assertEqual(address.to_bytes(), data)

    @given(st.text(max_size=60))
    def test_fuzz_text(self, text):
        try:
            address = NodeAddress.parse(text)
        except AddressError:
            return
        self.assertEqual(NodeAddress.from_bytes(address.to_bytes()), address)

    @given(st.one_of(ipv4s, ipv6s).map(str), st.text(alphabet="0123456789\u00b2 -+x", max_size=8))
    def test_fuzz_near_miss(self, host, port):
        text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            address = NodeAddress.parse(text)
        except AddressError:
            return
        self.assertEqual(address.port, int(port))


class ClientAddressTests(SynchronousTestCase):
    @given(st.binary(min_size=32, max_size=32))
    def test_round_trip(self, key):
        text = encode_client_address(key)
        self.assertEqual(text, base58.b58encode(key).decode("ascii"))
        self.assertEqual(decode_client_address(text), key)

    def assertRefused(self, text, fragment):
        with self.assertRaises(AddressError) as caught:
            decode_client_address(text)
        self.assertIn(fragment, str(caught.exception))

    def test_malformed(self):
        self.assertRefused("", "empty")
        self.assertRefused(None, "not NoneType")
        self.assertRefused(b"abc", "not bytes")
        self.assertRefused("0OIl", "not base58: it contains '0IOl'")
        self.assertRefused("abc", "decodes to 3 bytes, not 32")
        self.assertRefused(encode_client_address(bytes(range(32))) + " ", "' '")
        self.assertRefused("2" * 100, "100 characters long")

    def test_encode_refuses_wrong_size(self):
        with self.assertRaises(AddressError):
            encode_client_address(bytes(31))
        with self.assertRaises(AddressError):
            encode_client_address("x" * 32)

    @given(st.text(max_size=80))
    def test_fuzz(self, text):
        try:
            raw = decode_client_address(text)
        except AddressError:
            return
        self.assertEqual(len(raw), 32)

    @given(st.text(alphabet=base58.alphabet.decode("ascii"), max_size=60))
    def test_fuzz_base58(self, text):
        try:
            raw = decode_client_address(text)
        except AddressError:
            return
        self.assertEqual(len(raw), 32)
        self.assertEqual(decode_client_address(encode_client_address(raw)), raw)
