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

# The longest test files first. `--dist loadfile` hands each xdist worker whole files in collection order
# (`--no-loadscope-reorder` keeps that order instead of the most-tests-first default), so a long file that
# starts last leaves the other worker idle at the end. Measured per file with the shared cache above (two
# workers, this 2-core machine); a file not listed runs after these, in collection order.
LONGEST_FIRST = (
    "train/test_parallel.py",
    "train/test_recipes_feratt.py",
    "train/test_quickstart.py",
    "train/test_recipes_faer.py",
    "train/test_multihost.py",
    "test_bad_inputs.py",
    "test_convert_faer.py",
    "test_parity_models.py",
    "test_parity_dan.py",
    "train/test_resume.py",
    "train/test_recipes.py",
    "test_convert_feratt.py",
    "train/test_train_cli.py",
    "test_parity_feratt.py",
    "test_parity_emotion_fan.py",
    "test_parity_faer.py",
    "test_convert_cli.py",
    "test_parity_convnext.py",
    "train/test_feratt_training.py",
    "test_convert_emotion_fan.py",
    "train/test_predict.py",
    "test_parity_resnet.py",
)


def pytest_collection_modifyitems(config, items):
    tests = os.path.dirname(os.path.abspath(__file__))
    missing = [name for name in LONGEST_FIRST if not os.path.isfile(os.path.join(tests, name))]
    assert not missing, f"LONGEST_FIRST names files that do not exist: {missing}"
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.relpath(item.path, tests).replace(os.sep, "/"), len(rank)))
