"""A client keeps the serial of the last topology it accepted from each
directory in a file (nymtx.trust.serials), so a replayed older topology is
refused after a restart too; real files, and the format's vector."""

import os

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.keys import KeyPair
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.document import DocumentError, sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.presence import make_presence
from nymtx.trust.serials import MAGIC, SerialFile, SerialsError, decode, encode

NS = 10 ** 9
T0 = 1_700_000_000 * NS


def document(directory, serial, issued):
    mixnodes = [make_presence(IdentityKey.generate(), 1, KeyPair.generate().public_key,
                              f"127.0.0.1:{2000 + layer}", issued, "0.5.0", layer=layer)
                for layer in (1, 2, 3)]
    return sign_topology(directory, serial, issued, mixnodes, []).to_json()


class SerialsTests(SynchronousTestCase):

    def setUp(self):
        self.path = os.path.join(self.mktemp())
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.directory = IdentityKey.generate()

    def trust(self):
        return TrustedDirectories([self.directory.public_key], 1,
                                  store=SerialFile(self.path))

    def test_an_older_topology_is_refused_after_a_restart(self):
        old = document(self.directory, T0, T0)
        new = document(self.directory, T0 + NS, T0 + NS)
        first = self.trust()
        first.offer(old, T0 + 2 * NS)
        first.offer(new, T0 + 2 * NS)
        with open(self.path, "rb") as f:
            self.assertEqual(decode(f.read()), {self.directory.public_key: T0 + NS})
        # the restart: in memory, nothing is held; the file remembers
        again = self.trust()
        e = self.assertRaises(DocumentError, again.offer, old, T0 + 3 * NS)
        self.assertIn("older than the one held before the restart", str(e))
        self.assertEqual(again.current(T0 + 3 * NS), [])
        # the same document, or a newer one, is taken
        again.offer(new, T0 + 3 * NS)
        again.offer(document(self.directory, T0 + 5 * NS, T0 + 5 * NS), T0 + 6 * NS)
        self.assertEqual(len(again.current(T0 + 6 * NS)), 1)
        # without the file, the old document would have been taken (the gap closed)
        plain = TrustedDirectories([self.directory.public_key], 1)
        plain.offer(old, T0 + 3 * NS)

    def test_a_damaged_file_is_ignored_and_rewritten(self):
        with open(self.path, "wb") as f:
            f.write(b"not a serials file")
        trust = self.trust()
        trust.offer(document(self.directory, T0, T0), T0 + NS)
        with open(self.path, "rb") as f:
            self.assertEqual(decode(f.read()), {self.directory.public_key: T0})

    def test_keys_no_longer_pinned_are_forgotten(self):
        other = IdentityKey.generate()
        with open(self.path, "wb") as f:
            f.write(encode({other.public_key: 99, self.directory.public_key: 5}))
        trust = self.trust()
        trust.offer(document(self.directory, 7, T0), T0 + NS)
        with open(self.path, "rb") as f:
            self.assertEqual(decode(f.read()), {self.directory.public_key: 7})

    def test_the_vector_in_docs_trust_md(self):
        data = encode({bytes([2]) * 32: 1_700_000_002_000_000_000, bytes([1]) * 32: 7})
        self.assertEqual(data.hex(), MAGIC.hex() + "01" * 32 + "0000000000000007"
                         + "02" * 32 + "17979cfead5f9400")
        with open(os.path.join(os.path.dirname(__file__), os.pardir, "docs", "trust.md"),
                  encoding="utf-8") as f:
            doc = f.read()
        self.assertIn(MAGIC.hex(), doc.replace("\n", "").replace(" ", ""))
        self.assertIn("17979cfead5f9400", doc)

    @given(st.binary(max_size=300))
    def test_any_bytes_are_serials_or_a_serials_error(self, data):
        try:
            serials = decode(data)
        except SerialsError:
            return
        self.assertEqual(decode(encode(serials)), serials)

    @given(st.binary(max_size=300))
    def test_any_file_loads_or_is_ignored(self, data):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        serials = SerialFile(path).load()
        self.assertIsInstance(serials, dict)


class WiringTests(SynchronousTestCase):

    def test_a_client_keeps_its_serials_in_its_data_folder(self):
        from twisted.internet.task import Clock
        from nymtx.client.config import ClientConfig
        from nymtx.client.embed import _default_directory
        key = IdentityKey.generate()
        config = ClientConfig.new(self.mktemp(), "Alice", directory_keys=(key.public_text,))
        directory = _default_directory(config, Clock())
        self.addCleanup(directory.close)
        self.assertEqual(directory.trust.store.path,
                         os.path.join(str(config.data_dir), "directory_serials.bin"))
        self.assertEqual(directory.trust.threshold, 1)
