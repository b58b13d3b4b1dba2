"""Any bytes or values where trustwire reads outside input: a replay log
left on disk, pinned keys and directory lists from config.toml or flags.
Each is taken or refused with its own error, never a crash."""

import os
import tempfile

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.config import ConfigError
from nymtx.trust.replaylog import MAGIC, TAG_SIZE, PersistentReplayCache, ReplayLogError
from nymtx.trust.wiring import (directory_keys, directory_list, directory_threshold,
                                 pinned_keys)

toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=5), max_leaves=10)


class FuzzTests(SynchronousTestCase):

    @given(st.binary(max_size=400), st.booleans())
    def test_any_replay_log(self, data, with_magic):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "replay_tags.bin")
        with open(path, "wb") as f:
            f.write((MAGIC if with_magic else b"") + data)
        try:
            cache = PersistentReplayCache(path, capacity=8)
        except ReplayLogError as e:
            self.assertIn(path, str(e))
            with open(path, "rb") as f:  # left as it was
                self.assertEqual(f.read(), (MAGIC if with_magic else b"") + data)
        else:
            self.assertTrue(with_magic or data.startswith(MAGIC))
            self.assertTrue(cache.insert(b"\xff" * TAG_SIZE) or len(cache) > 0)
            cache.close()
            self.assertEqual((os.path.getsize(path) - len(MAGIC)) % TAG_SIZE, 0)
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)

    @given(toml_values)
    def test_any_config_value(self, value):
        for check in (directory_keys, directory_list, directory_threshold):
            try:
                check(value, "[x] y")
            except ConfigError as e:
                self.assertIn("[x] y", str(e))


class PinnedKeysFlagFuzz(SynchronousTestCase):
    """``--directory-keys`` text (nym-mixnode / nym-gateway init): pins or a
    ConfigError, nothing else."""

    @given(st.text(max_size=300) | st.lists(st.sampled_from(
        ["5Hd9wdUptAsXDSBdXVVUVmhpg6VTqh6vC2sydrQM5Xbp", "nope", "", " ", ","]),
        max_size=12).map(",".join))
    def test_any_text(self, text):
        try:
            keys = pinned_keys(text, "--directory-keys")
        except ConfigError as e:
            self.assertIn("--directory-keys", str(e))
        else:
            self.assertEqual(keys, directory_keys(list(keys), "k"))
