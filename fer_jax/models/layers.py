"""Layers with PyTorch numerics, shared by every network.

Flax's own `nn.BatchNorm` normalises like torch but updates the running variance with the *biased* batch
variance, while torch uses the unbiased one (n / (n - 1)); that makes the running statistics of a
train-mode step drift from torch (3.6e-4 at n = 324, see shared/reference/jax_platform.md). `BatchNorm`
below follows torch exactly and keeps Flax's variable names (`scale`, `bias` in params; `mean`, `var`
in batch_stats), so the porting rule does not change.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm{1,2}d over the last axis (NHWC or NC).

    Attributes:
      momentum: Flax convention (weight of the old running value): torch 0.1 == 0.9 here.
      epsilon: added to the variance, torch default 1e-5.
      axis_name: pmap axis over which batch statistics are averaged (cross-replica BN).
      dtype: computation dtype of the output; statistics are always computed in at least float32.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    axis_name: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), self.param_dtype))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), self.param_dtype))

        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(stat_dtype)
        if train:
            mean, var, count = self._batch_moments(xs)
            if not self.is_initializing():
                m = self.momentum
                unbiased = var * (count / jnp.maximum(count - 1, 1))
                ra_mean.value = (m * ra_mean.value + (1 - m) * mean).astype(ra_mean.value.dtype)
                ra_var.value = (m * ra_var.value + (1 - m) * unbiased).astype(ra_var.value.dtype)
        else:
            mean, var = ra_mean.value.astype(stat_dtype), ra_var.value.astype(stat_dtype)

        y = (xs - mean) * jax.lax.rsqrt(var + self.epsilon)
        y = y * scale.astype(stat_dtype) + bias.astype(stat_dtype)
        return y.astype(self.dtype or x.dtype)

    def _batch_moments(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | int]:
        """Mean and biased variance over every axis but the last, across `axis_name` replicas."""
        axes = tuple(range(x.ndim - 1))
        count = math.prod(x.shape[:-1])
        mean = jnp.mean(x, axis=axes)
        if self.axis_name is not None and not self.is_initializing():
            mean = jax.lax.pmean(mean, self.axis_name)
            count = count * jax.lax.psum(1, self.axis_name)
        # Two-pass variance (what torch computes), not E[x^2] - E[x]^2.
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        if self.axis_name is not None and not self.is_initializing():
            var = jax.lax.pmean(var, self.axis_name)
        return mean, var, count


def torch_linear_init(fan_in: int):
    """torch.nn.Linear / Conv default init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# Kaiming normal, fan_out, ReLU gain (torchvision ResNet convs, DAN head convs): std = sqrt(2 / fan_out).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def max_pool_torch(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
    """torch.nn.MaxPool2d(window, stride, padding): symmetric padding with -inf."""
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pad)
