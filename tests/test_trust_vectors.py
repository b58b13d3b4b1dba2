"""docs/trust.md's test vectors are what the code produces."""

import json
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from nymtx.trust import vectors
from nymtx.trust.allowlist import AllowList
from nymtx.trust.document import parse_document
from nymtx.trust.metrics import parse_signed_metrics
from nymtx.trust.presence import parse_signed_mixnode

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "trust.md")


class VectorTests(SynchronousTestCase):
    def setUp(self):
        with open(DOC, encoding="utf-8") as f:
            self.doc = f.read()

    def test_the_page_shows_the_vectors(self):
        blocks = re.findall(r"```text\n(.*?)```", self.doc, re.S)
        self.assertEqual(blocks, [vectors.render()])

    def test_the_example_is_the_mixnodes_presence(self):
        blocks = re.findall(r"```json\n(\{\n  \"host\".*?)```", self.doc, re.S)
        self.assertEqual(blocks, [vectors.example_json()])
        signed = parse_signed_mixnode(blocks[0].encode())
        self.assertEqual(signed, vectors.signed()[0])

    def test_the_allow_list_example_parses(self):
        block = re.findall(r"```\n(# nymtx allow list.*?)```", self.doc, re.S)[0]
        allowed = AllowList.parse(block)
        self.assertEqual(set(allowed.labels.values()),
                         {"mix-1 (Alice, Neuchâtel)", "gateway-1"})
        self.assertIn(vectors.signed()[0].identity_key, allowed)

    def test_fixed_values(self):
        # independent of the code above: what the first bytes must be
        values = dict(vectors.build())
        mix = bytes.fromhex(values["mixnode presence signed bytes"])
        self.assertEqual(mix[:16], b"nymtx/presence/1")
        self.assertEqual(mix[16:18], b"\x01\x02")
        self.assertEqual(mix[82:89], b"\x04\x06\xfd\x7f\x00\x00\x01")  # 127.0.0.1:1789
        self.assertEqual(len(mix), 242 + 5 + len("Neuchâtel".encode()))
        self.assertEqual(mix[-10:].decode(), "Neuchâtel")
        gw = bytes.fromhex(values["gateway presence signed bytes"])
        self.assertEqual(gw[16:18], b"\x02\x00")
        self.assertEqual(gw[82:85], b"\x06\x06\xfe")  # [::1]:1790
        self.assertEqual(gw[234:238], b"\x00\x00\x00\x01")
        self.assertEqual(len(gw), 247)
        top = bytes.fromhex(values["topology signed bytes"])
        self.assertEqual(top[:16], b"nymtx/topology/1")
        self.assertEqual(int.from_bytes(top[48:56], "big"), 7)
        self.assertEqual(top[72:76], b"\x00\x00\x00\x01")
        self.assertEqual(int.from_bytes(top[76:80], "big"), len(mix))
        self.assertEqual(top[80:80 + len(mix)], mix)
        self.assertEqual(len(top), 76 + 4 + len(mix) + 64 + 4 + 4 + len(gw) + 64)

    def test_signatures_verify_under_another_ed25519(self):
        # OpenSSL (through cryptography), not libsodium: the vectors are
        # plain RFC 8032 signatures of the bytes shown
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from nymtx.trust.identity import decode_b58
        values = dict(vectors.build())
        keys = {name: Ed25519PublicKey.from_public_bytes(decode_b58(values[
            f"{name} identity public key"], 32, name))
            for name in ("mixnode", "gateway", "directory")}
        for message, signature, signer in [
                ("mixnode presence signed bytes", "mixnode presence signature", "mixnode"),
                ("gateway presence signed bytes", "gateway presence signature", "gateway"),
                ("topology signed bytes", "topology signature", "directory"),
                ("metrics signed bytes", "metrics signature", "mixnode")]:
            keys[signer].verify(bytes.fromhex(values[signature]),
                                bytes.fromhex(values[message]))
        # and the seeds are RFC 8032 private keys
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        derived = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key()
        self.assertEqual(derived.public_bytes(Encoding.Raw, PublicFormat.Raw),
                         decode_b58(values["mixnode identity public key"], 32, "key"))

    def test_clients_digest_by_hand(self):
        import hashlib
        from nymtx.keys import KeyPair
        client = KeyPair.from_private(b"\x07" * 32).public_key
        expected = hashlib.sha256(b"nymtx/clients/1" + b"\x00\x00\x00\x01" + client)
        self.assertEqual(dict(vectors.build())["clients digest"], expected.hexdigest())

    def test_metrics_layout(self):
        values = dict(vectors.build())
        raw = bytes.fromhex(values["metrics signed bytes"])
        self.assertEqual(raw[:15], b"nymtx/metrics/1")
        self.assertEqual(int.from_bytes(raw[87:95], "big"), 120)
        self.assertEqual(raw[103:107], b"\x00\x00\x00\x01")
        self.assertEqual(raw[107:109], b"\x00\x0a")
        self.assertEqual(raw[109:119], b"queue full")
        self.assertEqual(int.from_bytes(raw[119:], "big"), 2)
        signed = parse_signed_metrics(json.dumps(vectors.metrics().to_json()).encode())
        self.assertEqual(signed, vectors.metrics())

    def test_the_vector_document_parses_and_verifies(self):
        mixnode, gateway, document = vectors.signed()
        parsed = parse_document(json.dumps(document.to_json()))
        self.assertEqual(parsed, document)
        self.assertTrue(parsed.verify())
