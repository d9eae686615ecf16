"""Shared pytest set-up: offline, CPU, fixed seeds."""

from __future__ import annotations

import os

import pytest

# Tests run on the CPU; simulated multi-device tests set their own XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch's OpenMP threads wait for the next parallel region by spinning (GNU OpenMP's default), and with two
# xdist workers on two cores each worker's spinning takes CPU from the other's work: four parity and
# conversion files took 180-182 s with passive waiting against 201-212 s without, in two A/B runs. How
# threads wait changes no result (the thread count, and so every reduction's split, is the same). It takes
# effect where torch loads its OpenMP runtime after this line (no test module imports torch before it);
# subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The order in which the two xdist workers take the test files. `--dist loadfile` hands a worker whole files
# in collection order (`--no-loadscope-reorder` keeps that order instead of xdist's most-tests-first one,
# which started the long one- and two-test files last: a worker then idled ~100 s at the end). So the
# longest files go first (durations from a full run on this 2-core machine, longest first), the two
# multi-process files (parallel, multihost) apart so that they never run at the same time; files not listed
# follow in collection order (they are short).
LONGEST_FIRST = (
    "test_parity_models.py",  # ~210 s
    "train/test_recipes_feratt.py",
    "train/test_quickstart.py",
    "test_bad_inputs.py",
    "train/test_parallel.py",  # multi-process
    "train/test_recipes_faer.py",
    "train/test_recipes.py",
    "train/test_resume.py",
    "test_convert_faer.py",
    "train/test_multihost.py",  # multi-process
    "test_parity_dan.py",
    "train/test_train_cli.py",
    "test_convert_feratt.py",
    "test_parity_convnext.py",
    "test_convert_cli.py",
    "test_parity_emotion_fan.py",
    "test_parity_feratt.py",
    "test_parity_faer.py",  # ~60 s
)


def pytest_collection_modifyitems(config, items):
    tests = os.path.dirname(os.path.abspath(__file__))
    missing = [name for name in LONGEST_FIRST if not os.path.isfile(os.path.join(tests, name))]
    assert not missing, f"LONGEST_FIRST names files that do not exist: {missing}"
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.relpath(item.path, tests).replace(os.sep, "/"), len(rank)))


def _seed_torch() -> None:
    """Every test, and every module's fixtures, start from the same torch global RNG state: reference models
    draw their default initialisation from it, and `torch_helpers.randomize` keeps that scale, so without this
    a test's weights would differ from run to run and with the order xdist hands out the files."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _seed_torch_for_module_fixtures():
    _seed_torch()  # autouse fixtures come first within their scope: before the module's own fixtures


@pytest.fixture(autouse=True)
def _seed_torch_for_each_test():
    _seed_torch()
