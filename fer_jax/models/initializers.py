"""The random initialisers of fer-jax's networks: the values `jax.nn.initializers` draws, bit for bit, compiled
once per size class instead of once per parameter shape.

Run eagerly, as Flax's `init` and `lazy_init` run initialisers, `jax.random.normal(key, shape)` compiles one
XLA program per distinct shape (~0.3 s on the 2-core CPU; `uniform` ~0.2 s), and DAN has 17 kernel shapes. With
JAX's threefry PRNG in its partitionable form (the default), element i of a draw depends only on the key and
i, so a draw of n values is the first n values of any longer draw from the same key. The draws here are made
at the next power of two (at least 1024), then cut, shaped and scaled on the host: the same numbers, from one
program per size class (tests/test_initializers.py checks every initialiser against jax's own).

Where that does not hold the draw is made at the parameter's shape, as jax does: while traced (`jax.eval_shape`,
a jitted init), with another PRNG implementation, or with `jax_threefry_partitionable` off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]
MIN_DRAW = 1024


def _size_class(n: int) -> int:
    return max(MIN_DRAW, 1 << (n - 1).bit_length())


def _shape_free(key: jax.Array) -> bool:
    """Whether a draw from `key` of n values is the first n of a longer draw (module docstring)."""
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
        return False
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = str(jax.random.key_impl(key)) if typed else str(jax.config.jax_default_prng_impl)
    return impl == "threefry2x32"


def _draw(sample: Callable[..., jax.Array], key: jax.Array, shape: Sequence[int], dtype: Any, scale: Any = None,
          **kwargs: Any) -> jax.Array:
    """`sample(key, shape=shape, dtype=dtype, **kwargs) * scale` (scale: an array of `dtype`, or None), as the draw
    at the next size class, cut and shaped on the host."""
    shape = tuple(shape)
    n = math.prod(shape)
    if n == 0 or not _shape_free(key):
        out = sample(key, shape=shape, dtype=dtype, **kwargs)
        return out if scale is None else out * scale
    values = np.asarray(sample(key, shape=(_size_class(n),), dtype=dtype, **kwargs))[:n].reshape(shape)
    if scale is not None:  # one float multiply per element, rounded once, as jax's eager multiply
        values = values * np.asarray(scale)
    return jax.device_put(values)  # (jnp.asarray would compile a copy per shape)


def normal(stddev: float = 1e-2) -> Initializer:
    """`jax.nn.initializers.normal(stddev)`."""

    def init(key, shape, dtype=jnp.float32):
        return _draw(jax.random.normal, key, shape, dtype, jnp.array(stddev, dtype))

    return init


def truncated_normal(stddev: float = 1e-2, lower: float = -2.0, upper: float = 2.0) -> Initializer:
    """`jax.nn.initializers.truncated_normal(stddev, lower=lower, upper=upper)`."""

    def init(key, shape, dtype=jnp.float32):
        return _draw(jax.random.truncated_normal, key, shape, dtype, jnp.array(stddev, dtype), lower=lower, upper=upper)

    return init


def uniform(low: float, high: float) -> Initializer:
    """`jax.random.uniform(key, shape, dtype, low, high)` as an initialiser."""

    def init(key, shape, dtype=jnp.float32):
        return _draw(jax.random.uniform, key, shape, dtype, minval=low, maxval=high)

    return init


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32) -> jax.Array:
    """`jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")` (kernels in HWIO / [in, out] layout): the
    Kaiming normal init of torchvision's ResNet convolutions and DAN's head convolutions, std = sqrt(2 / fan_out)
    with fan_out = out channels x receptive field."""
    variance = jnp.array(2.0 / (shape[-1] * math.prod(shape[:-2])), dtype=dtype)
    return _draw(jax.random.normal, key, shape, dtype, jnp.sqrt(variance))
