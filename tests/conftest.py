"""Shared pytest set-up: offline, CPU, fixed seeds, one XLA compilation cache for the whole session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Tests run on the CPU; simulated multi-device tests set their own XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Many tests build the same programs: the smoke recipes train the same networks in separate CLI runs, every
# training initialises its model op by op (~160 small compilations), and a test file runs the step that
# another file already compiled. XLA's persistent compilation cache lets each program compile once per
# session, across the xdist workers and the CLI subprocesses they start (they inherit these variables). A
# cached executable is the one the compiler would build again, so no number changes. The size bound turns on
# the cache's file lock, so a worker never reads an entry that another one is still writing. This runs
# before jax is imported, in the controller first; the workers inherit the directory, and only the process
# that made it removes it. A cache directory the user already set is left as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="fer-jax-xla-cache-")
    os.environ.update({"JAX_COMPILATION_CACHE_DIR": _cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
                       "JAX_COMPILATION_CACHE_MAX_SIZE": str(8 << 30)})
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
