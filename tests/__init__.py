"""nymtx's trial suite."""

import os

from hypothesis import HealthCheck, settings

# CI machines are small and shared: no per-example deadline there, fewer examples.
settings.register_profile(
    "ci", deadline=None, max_examples=150,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
