"""fer_jax.models.initializers draws, bit for bit, what jax's own initialisers draw, and compiles one program per
size class instead of one per shape."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.models import initializers

BOUND = 0.125
# (ours, jax's): every random initialiser fer-jax's networks use
PAIRS = {
    "normal": (initializers.normal(0.02), jax.nn.initializers.normal(0.02)),
    "truncated_normal": (initializers.truncated_normal(0.02, -100.0, 100.0),
                         jax.nn.initializers.truncated_normal(0.02, lower=-100.0, upper=100.0)),
    "truncated_normal_2": (initializers.truncated_normal(0.5), jax.nn.initializers.truncated_normal(0.5)),
    "uniform": (initializers.uniform(-BOUND, BOUND),
                lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -BOUND, BOUND)),
    "kaiming_normal_fan_out": (initializers.kaiming_normal_fan_out,
                               jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")),
}
# around the size classes' edges (1024, 2048) and kernel layouts: HWIO convolutions, [in, out] dense
SHAPES = [(1, 1), (32, 32), (1025, 1), (3, 3, 64, 64), (512, 7), (0, 8)]


def assert_bitwise(ours: jax.Array, theirs: jax.Array) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), np.max(np.abs(ours - theirs))


@pytest.mark.parametrize("name", list(PAIRS))
def test_draws_what_jax_draws(name):
    ours, theirs = PAIRS[name]
    for shape in SHAPES:
        if name == "kaiming_normal_fan_out" and 0 in shape:
            continue  # jax's variance_scaling divides by the zero fan
        assert_bitwise(ours(jax.random.key(3), shape, jnp.float32), theirs(jax.random.key(3), shape, jnp.float32))
    # a raw uint32[2] key (jax.random.PRNGKey) as well as a typed one
    assert_bitwise(ours(jax.random.PRNGKey(3), (3, 3, 64, 64), jnp.float32),
                   theirs(jax.random.PRNGKey(3), (3, 3, 64, 64), jnp.float32))


@pytest.mark.parametrize("name", ["uniform", "kaiming_normal_fan_out"])  # unscaled and scaled draws
def test_traced_and_non_partitionable_draws_are_jaxs(name):
    """Traced (a jitted init) the draw is jax's at the parameter's shape, and so it is with the threefry PRNG's
    older, non-partitionable form, where a shorter draw is not the start of a longer one."""
    ours, theirs = PAIRS[name]
    shape = (3, 3, 16, 8)
    assert_bitwise(jax.jit(lambda k: ours(k, shape, jnp.float32))(jax.random.key(5)),
                   jax.jit(lambda k: theirs(k, shape, jnp.float32))(jax.random.key(5)))
    with jax.threefry_partitionable(False):
        assert not initializers._shape_free(jax.random.key(5))
        assert_bitwise(ours(jax.random.key(5), shape, jnp.float32), theirs(jax.random.key(5), shape, jnp.float32))


def test_one_compilation_per_size_class(caplog):
    """Three kernel shapes of one size class (2^21 values) compile `random.normal` at most once (not at all if
    this process drew that class before); jax's initialiser compiles each new shape."""
    shapes = [(1111, 1001), (3, 3, 397, 401), (1234567,)]

    def compilations(init) -> int:
        caplog.clear()
        with caplog.at_level(logging.WARNING), jax.log_compiles(True):
            for shape in shapes:
                init(jax.random.key(1), shape, jnp.float32)
        return sum("Compiling jit(_normal)" in r.getMessage() for r in caplog.records)

    assert compilations(initializers.normal(1.0)) <= 1
    assert compilations(jax.nn.initializers.normal(1.0)) == len(shapes)
