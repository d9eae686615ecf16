"""Shared pytest set-up: offline, CPU, fixed seeds."""

from __future__ import annotations

import os

# Tests run on the CPU; simulated multi-device tests set their own XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
