import base64
import os
import stat

import base58
from hypothesis import given, strategies as st
from nacl.bindings import crypto_scalarmult
from twisted.trial.unittest import SynchronousTestCase

from nymtx.keys import (
    PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, KeyFormatError, KeyPair, decode_key, encode_key)

keys32 = st.binary(min_size=32, max_size=32)


class KeyPairTests(SynchronousTestCase):
    def test_generate_is_a_working_x25519_pair(self):
        alice, bob = KeyPair.generate(), KeyPair.generate()
        self.assertNotEqual(alice.private_key, bob.private_key)
        self.assertEqual(len(alice.public_key), 32)
        self.assertEqual(crypto_scalarmult(alice.private_key, bob.public_key),
                         crypto_scalarmult(bob.private_key, alice.public_key))

    def test_generate_uses_injected_randomness(self):
        pair = KeyPair.generate(randbytes=lambda n: b"\x07" * n)
        self.assertEqual(pair, KeyPair.from_private(b"\x07" * 32))

    def test_text_form_is_base58(self):
        pair = KeyPair.from_private(bytes(range(32)))
        self.assertEqual(pair.public_text, base58.b58encode(pair.public_key).decode())

    def test_repr_hides_private_key(self):
        pair = KeyPair.generate()
        self.assertNotIn(encode_key(pair.private_key), repr(pair))
        self.assertNotIn(repr(pair.private_key), repr(pair))
        self.assertIn(pair.public_text, repr(pair))

    def test_from_private_wrong_size(self):
        with self.assertRaises(KeyFormatError):
            KeyPair.from_private(bytes(31))


class KeyFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()

    def test_round_trip(self):
        pair = KeyPair.generate()
        pair.save(self.dir)
        self.assertEqual(KeyPair.load(self.dir), pair)
        self.assertEqual(sorted(os.listdir(self.dir)), [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE])

    def test_private_key_is_owner_only(self):
        KeyPair.generate().save(self.dir)
        mode = stat.S_IMODE(os.stat(os.path.join(self.dir, PRIVATE_KEY_FILE)).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode) & 0o077, 0)

    def test_private_key_owner_only_despite_umask_and_leftovers(self):
        os.makedirs(self.dir)
        leftover = os.path.join(self.dir, PRIVATE_KEY_FILE + ".tmp")
        with open(leftover, "w") as f:
            f.write("half a key")
        os.chmod(leftover, 0o666)
        old = os.umask(0)
        try:
            KeyPair.generate().save(self.dir)
        finally:
            os.umask(old)
        mode = stat.S_IMODE(os.stat(os.path.join(self.dir, PRIVATE_KEY_FILE)).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertFalse(os.path.exists(leftover))

    def test_custom_names(self):
        pair = KeyPair.generate()
        pair.save(self.dir, "a.key", "a.pub")
        self.assertEqual(KeyPair.load(self.dir, "a.key", "a.pub"), pair)

    def test_public_file_optional(self):
        pair = KeyPair.generate()
        pair.save(self.dir)
        os.remove(os.path.join(self.dir, PUBLIC_KEY_FILE))
        self.assertEqual(KeyPair.load(self.dir), pair)

    def write(self, name, data):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(data)

    def assertLoadRefused(self, fragment):
        with self.assertRaises(KeyFormatError) as caught:
            KeyPair.load(self.dir)
        self.assertIn(fragment, str(caught.exception))

    def test_missing(self):
        self.assertLoadRefused("cannot read private key file")

    def test_empty(self):
        self.write(PRIVATE_KEY_FILE, b"\n")
        self.assertLoadRefused("is empty")

    def test_not_base58(self):
        self.write(PRIVATE_KEY_FILE, b"0OIl not a key")
        self.assertLoadRefused("does not hold a base58 key")

    def test_binary_garbage(self):
        self.write(PRIVATE_KEY_FILE, bytes(range(256)))
        self.assertLoadRefused("is not base58 text")

    def test_wrong_length(self):
        self.write(PRIVATE_KEY_FILE, base58.b58encode(bytes(16)))
        self.assertLoadRefused("holds 16 bytes, not 32")

    def test_mismatched_public_key(self):
        KeyPair.generate().save(self.dir)
        self.write(PUBLIC_KEY_FILE, KeyPair.generate().public_text.encode())
        self.assertLoadRefused("does not match the private key")

    def test_binary_public_key(self):
        KeyPair.generate().save(self.dir)
        self.write(PUBLIC_KEY_FILE, b"\xff\xfe")
        self.assertLoadRefused("public key file")

    def test_directory_instead_of_file(self):
        os.makedirs(os.path.join(self.dir, PRIVATE_KEY_FILE))
        self.assertLoadRefused("cannot read private key file")

    @given(st.binary(max_size=200))
    def test_fuzz_private_file(self, data):
        self.write(PRIVATE_KEY_FILE, data)
        try:
            pair = KeyPair.load(self.dir)
        except KeyFormatError:
            return
        self.assertEqual(len(pair.public_key), 32)


class DecodeKeyTests(SynchronousTestCase):
    @given(keys32)
    def test_base58(self, raw):
        self.assertEqual(decode_key(encode_key(raw)), raw)
        self.assertEqual(decode_key(" " + encode_key(raw) + "\n"), raw)

    @given(keys32)
    def test_base64url_padded(self, raw):
        text = base64.urlsafe_b64encode(raw).decode()
        self.assertEqual(decode_key(text), raw)

    def test_seed_keys(self):
        # From the seed's sample topology: base64url with '=' padding.
        for text in ["_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c=",
                     "dMtoH6vWDBfwjrU0EzPd-fhZDOGJazELsTp2qLyt72U=",
                     "03FFZ5RgfeBPmVVERenJOCLb-yXlOUtstc6izYc-wFs="]:
            self.assertEqual(decode_key(text), base64.urlsafe_b64decode(text))

    def test_base64url_unpadded(self):
        text = "_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c"
        self.assertEqual(decode_key(text), base64.urlsafe_b64decode(text + "="))

    def assertRefused(self, value, fragment):
        with self.assertRaises(KeyFormatError) as caught:
            decode_key(value)
        self.assertIn(fragment, str(caught.exception))

    def test_malformed(self):
        self.assertRefused("", "empty")
        self.assertRefused("   ", "empty")
        self.assertRefused(None, "must be text, not NoneType")
        self.assertRefused(bytes(32), "must be text, not bytes")
        self.assertRefused("abc", "neither base58 nor base64url of 32 bytes")
        self.assertRefused("A" * 1000, "1000 characters long")

    def test_base64_junk_is_not_skipped(self):
        # b64decode without validation drops characters outside its
        # alphabet, so this used to decode as the seed key it hides.
        text = "_ObRUsYnHDJOPDHXyfq5bnIoSbdn3BsSRcrLl-FCY1c=".replace("Y", "Y!", 1)
        self.assertRefused(text, "neither base58 nor base64url")

    @given(st.text(max_size=80))
    def test_fuzz_text(self, text):
        try:
            raw = decode_key(text)
        except KeyFormatError:
            return
        self.assertEqual(len(raw), 32)

    @given(st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789Il+/-_=",
                   min_size=40, max_size=48))
    def test_fuzz_near_keys(self, text):
        try:
            raw = decode_key(text)
        except KeyFormatError:
            return
        self.assertEqual(len(raw), 32)
