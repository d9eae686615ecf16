"""Shared pytest set-up: offline, CPU, fixed seeds, and one XLA compilation cache per test worker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Tests run on the CPU; simulated multi-device tests set their own XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Many tests compile the same programs (the DAN smoke recipe trains in a dozen tests, in-process and as
# `scripts/train.py` subprocesses, which inherit this environment). XLA's persistent cache compiles each
# once per worker; a cached executable is the one the compiler produced for the same program and options,
# so results are unchanged. Set before jax is imported (it reads these at import); removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix=f"fer_jax_xla_cache_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
