"""What is left of the plaintext link's frames: the shared codes, and nothing more."""

import os

from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import frames as F


class Shared(SynchronousTestCase):
    def test_every_code_has_one_name(self):
        codes = [v for k, v in vars(F).items() if k.startswith("E_")]
        self.assertEqual(sorted(codes), sorted(F.ERROR_NAMES))
        self.assertEqual(len(set(F.ERROR_NAMES.values())), len(codes))

    def test_frame_error_carries_its_code(self):
        e = F.FrameError(F.E_RATE_LIMITED, "slow down")
        self.assertEqual((e.code, str(e)), (F.E_RATE_LIMITED, "slow down"))
        self.assertEqual(F.ERROR_NAMES[e.code], "rate-limited")

    def test_no_plaintext_codec_in_the_package(self):
        # The old link sent a token at login and every message in the clear;
        # nothing in nymtx can speak it now (benchmarks/legacy_plaintext.py
        # keeps it as the benchmark's baseline only).
        for name in ("Authenticate", "Hello", "encode", "FrameDecoder", "registration_proof"):
            self.assertFalse(hasattr(F, name), name)
        root = os.path.join(os.path.dirname(__file__), os.pardir, "nymtx")
        for folder, _, files in os.walk(root):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        self.assertNotIn("import legacy_plaintext", f.read(), name)
        self.assertFalse(os.path.exists(os.path.join(root, "gateway", "server.py")))
