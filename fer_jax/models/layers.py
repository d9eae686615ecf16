"""Layers with PyTorch numerics, shared by every network.

Flax's own `nn.BatchNorm` normalises like torch but updates the running variance with the *biased* batch
variance, while torch uses the unbiased one (n / (n - 1)); that makes the running statistics of a
train-mode step drift from torch (3.6e-4 at n = 324, see shared/reference/jax_platform.md). `BatchNorm`
below follows torch exactly and keeps Flax's variable names (`scale`, `bias` in params; `mean`, `var`
in batch_stats), so the porting rule does not change.

The convolution paths (`Conv`) live in fer_jax/models/convolution.py; the max-pool here shares their
window taps (`window_taps`). `Dense` is Flax's, with a product XLA's CPU backend differentiates without
transposed copies (`rows_dot_general`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from fer_jax.models import initializers


Dtype = Any


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm{1,2}d over the last axis (NHWC or NC).

    In training the normalisation takes its gradient from `batch_norm_train` (two reductions and one elementwise
    pass, as torch's own backward), not from differentiating the statistics.

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
        xs, scale, bias = (a.astype(stat_dtype) for a in (x, scale, bias))
        if not train:
            mean, var = ra_mean.value.astype(stat_dtype), ra_var.value.astype(stat_dtype)
            y = (xs - mean) * lax.rsqrt(var + self.epsilon)
            return (y * scale + bias).astype(self.dtype or x.dtype)
        # the statistics are per replica while Flax initialises (no axis is bound then)
        axis_name = None if self.is_initializing() else self.axis_name
        y, mean, var = batch_norm_train(xs, scale, bias, self.epsilon, axis_name)
        if not self.is_initializing():
            count = math.prod(x.shape[:-1]) * (1 if axis_name is None else lax.psum(1, axis_name))
            m = self.momentum
            unbiased = var * (count / jnp.maximum(count - 1, 1))
            ra_mean.value = (m * ra_mean.value + (1 - m) * mean).astype(ra_mean.value.dtype)
            ra_var.value = (m * ra_var.value + (1 - m) * unbiased).astype(ra_var.value.dtype)
        return y.astype(self.dtype or x.dtype)


def _batch_moments(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance over every axis but the last, across `axis_name` replicas; the variance in two
    passes (what torch computes), not E[x^2] - E[x]^2."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    if axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    if axis_name is not None:
        var = lax.pmean(var, axis_name)
    return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: str | None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Train-mode batch normalisation over every axis but the last: (y, batch mean, biased batch variance),
    the statistics across `axis_name` replicas (pmap) where it is given.

    Its gradient is the one differentiating the statistics gives, computed as torch's backward computes it:
    with x^ = (x - mean) / sqrt(var + eps), over the N values of a channel (every replica's),
    dx = scale / sqrt(var + eps) * (dy - sum(dy) / N - x^ * sum(dy * x^) / N), dscale = sum(dy * x^) and
    dbias = sum(dy) (this replica's: the caller averages parameter gradients), plus the terms of cotangents
    given to the statistics themselves. Autodiff of the statistics left XLA a backward of more passes over
    each activation: ResNet18's train step (224 px, batch 8, interleaved A/B) took 557 ms with it and 497 ms
    with this one (docs/speed.md).
    """
    return _batch_norm_fwd(x, scale, bias, epsilon, axis_name)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, axis_name):
    mean, var = _batch_moments(x, axis_name)
    rstd = lax.rsqrt(var + epsilon)
    y = (x - mean) * rstd * scale + bias
    return (y, mean, var), (x, scale, mean, rstd)


def _batch_norm_bwd(epsilon, axis_name, residuals, cotangents):
    del epsilon
    x, scale, mean, rstd = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    xhat = (x - mean) * rstd
    dbias, dscale = jnp.sum(dy, axis=axes), jnp.sum(dy * xhat, axis=axes)
    sum_dy, sum_dy_xhat, count = dbias, dscale, math.prod(x.shape[:-1])
    if axis_name is not None:  # the statistics are every replica's, so their cotangents are summed over all
        sum_dy, sum_dy_xhat, dmean, dvar = lax.psum((sum_dy, sum_dy_xhat, dmean, dvar), axis_name)
        count = count * lax.psum(1, axis_name)
    dx = (scale * rstd * (dy - sum_dy / count - xhat * (sum_dy_xhat / count))
          + (dmean + 2 * dvar * (x - mean)) / count)
    return dx, dscale, dbias


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def rows_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None,
                     preferred_element_type: Any = None) -> jax.Array:
    """`lax.dot_general` as `nn.Dense` calls it, with an N-d input's leading axes merged into one row axis first
    (a reshape of contiguous axes, no copy), so the product is 2-D; other products go to `lax.dot_general`
    unchanged. The forward is XLA's own program (it makes the product 2-D itself); the gradients are the same
    sums, up to summation order.

    Why: differentiated, a Dense over [B, H, W, C] (ConvNeXt's pointwise layers) has a kernel gradient that
    contracts three axes of two rank-4 arrays; XLA's CPU canonicalisation of that product transposes one of them
    into a new [C, B*H*W] buffer first (`copy_bitcast` fusions, ~0.46 s of a 5.4 s ConvNeXt-base step at
    batch 8), while the 2-D product reads its two [B*H*W, C] operands as they are. Train steps at the recipes'
    sizes, batch 8 (2026-12-06, interleaved A/B, medians): ConvNeXt-base 5361 -> 4995 ms, FAER 5557 -> 5137 ms,
    MFTN-FER 13112 -> 11802 ms.
    """
    (lhs_contract, rhs_contract), batch = dimension_numbers
    if (lhs.ndim > 2 and rhs.ndim == 2 and tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
            and not any(map(len, batch))):
        out = lax.dot_general(lhs.reshape(-1, lhs.shape[-1]), rhs, (((1,), (0,)), ((), ())), precision=precision,
                              preferred_element_type=preferred_element_type)
        return out.reshape(*lhs.shape[:-1], rhs.shape[1])
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)


class Dense(nn.Dense):
    """`nn.Dense` (same parameters and names; its numbers up to summation order) whose product is 2-D for any
    input rank (`rows_dot_general`); every network's linear layers are this one."""

    dot_general: Any = rows_dot_general


def at_least_float32(x: jax.Array) -> jax.Array:
    """`x` in float32 if it is narrower (bfloat16 compute), else unchanged (float32: no operation; float64 stays)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU() (exact, approximate="none") by torch's own formula, x / 2 * (1 + erf(x / sqrt(2))).

    The same function as Flax's `nn.gelu(x, approximate=False)`, which computes x / 2 * erfc(-x / sqrt(2)),
    but XLA's CPU code for erf is cheaper than for erfc, forward and backward: the ConvNeXt-base gradient at
    batch 8 took 6.9 s with erfc and 6.0 s with erf (one interleaved run, 2026-12-05). In float64 the two agree
    to ~1e-16 (tests/test_xla.py); in float32 this is torch's own rounding of the same formula.
    """
    return 0.5 * x * (1 + lax.erf(x * jnp.asarray(math.sqrt(0.5), x.dtype)))


def softmax(x: jax.Array, axis: int) -> jax.Array:
    """`jax.nn.softmax` in at least float32, rounded once to `x`'s dtype (float32 and float64 unchanged).

    bfloat16's own exponentials and sum miss the exact softmax of bfloat16 inputs by up to 4 % (49 tokens) and
    7 % (3136 tokens) of a weight, against 0.4 % (half a bfloat16 ulp) computed in float32 and rounded once
    (measured over N(0, 2) logits).
    """
    return jax.nn.softmax(at_least_float32(x), axis=axis).astype(x.dtype)


def torch_linear_init(fan_in: int):
    """torch.nn.Linear / Conv default init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return initializers.uniform(-bound, bound)


# Kaiming normal, fan_out, ReLU gain (torchvision ResNet convs, DAN head convs): std = sqrt(2 / fan_out).
kaiming_normal_fan_out = initializers.kaiming_normal_fan_out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_torch(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
    """torch.nn.MaxPool2d(window, stride, padding) on NHWC input: symmetric padding with -inf, and the gradient
    of each window to its first maximum in row-major order, as torch routes it (ties are common after a ReLU).

    XLA's own gradient of a max-pool (select-and-scatter) becomes index tensors and a scatter on the CPU. Here
    the forward of a training step also keeps which tap of each window was the maximum (`_max_pool_taps`), and
    the backward places the output gradient at that tap: the ResNet stem's pool (8 x 112x112 x 64) forward and
    backward 82 -> 23 ms, DAN's train step at 224 px, batch 8, 741 -> 689 ms (2026-12-05, interleaved).
    bfloat16 gradients are summed in float32 and rounded once: summed in bfloat16, the quickstart test's DAN
    reached 0.386 accuracy instead of 0.738 (tests/train/test_quickstart.py).

    Without a gradient (evaluation) each window's maximum is taken over its rows, then over its columns: the same
    maximum (a maximum of maxima; NaN wins either way), where XLA's CPU backend is slow on a 2-D window. The ResNet
    stem's pool in ResNet18's evaluation at 224 px, batch 8: 97.0 -> 87.0 ms for the whole forward (no pool at all:
    89.0; interleaved, 2026-12-07).
    """
    neg = jnp.array(-jnp.inf, x.dtype)
    pad = (padding, padding)
    rows = lax.reduce_window(x, neg, lax.max, (1, window, 1, 1), (1, stride, 1, 1), ((0, 0), pad, (0, 0), (0, 0)))
    return lax.reduce_window(rows, neg, lax.max, (1, 1, window, 1), (1, 1, stride, 1), ((0, 0), (0, 0), pad, (0, 0)))


def window_taps(padded: tuple[int, ...], window: tuple[int, int], strides: tuple[int, int]):
    """For every tap (i, j) of a window, in row-major order, over an NHWC input of shape `padded` (padding
    included): its number, the `lax.slice` bounds of that tap in every window, and the `lax.pad` padding that
    puts an output-shaped array back at that tap's positions."""
    n, hp, wp, c = padded
    (kh, kw), (sh, sw) = window, strides
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    for k, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
        end = (n, i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1, c)
        back = ((0, 0, 0), (i, hp - end[1], sh - 1), (j, wp - end[2], sw - 1), (0, 0, 0))
        yield k, ((0, i, j, 0), end, (1, sh, sw, 1)), back


def _max_pool_taps(x: jax.Array, window: int, stride: int, padding: int) -> tuple[jax.Array, jax.Array]:
    """Each window's maximum and the number of its first maximal tap, by torch's rule: a tap replaces the
    maximum so far if it is greater or NaN. The routing is decided here, by comparing the taps with each
    other: comparing the input with the pooled output later would not do, as XLA may compute a fused input
    twice with different roundings (a 3.2 relative gradient error under jit, measured)."""
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
    best = first = None
    for k, bounds, _ in window_taps(xp.shape, (window, window), (stride, stride)):
        tap = lax.slice(xp, *bounds)
        if best is None:
            best, first = tap, jnp.zeros(tap.shape, jnp.int8 if window * window <= 128 else jnp.int32)
            continue
        take = (tap > best) | jnp.isnan(tap)
        best, first = jnp.where(take, tap, best), jnp.where(take, jnp.asarray(k, first.dtype), first)
    # torch starts each window's search at -inf with its first tap inside the input, so a window whose input
    # values are all -inf sends its gradient there. Only windows at the top or left border (tap 0 in the
    # padding) differ from the search above, which starts at tap 0; fixing just those strips keeps the
    # search free of per-element index arithmetic (which cost DAN's train step 24-120 ms, measured)
    rows, cols = (np.maximum(padding - stride * np.arange(size), 0) for size in first.shape[1:3])
    inside = (rows[:, None] * window + cols[None, :]).astype(first.dtype)[None, :, :, None]
    top, left = int(np.count_nonzero(rows)), int(np.count_nonzero(cols))
    for region in ((slice(None), slice(0, top)), (slice(None), slice(top, None), slice(0, left))):
        if first[region].size:
            first = first.at[region].set(jnp.where(best[region] == -jnp.inf, inside[region], first[region]))
    return best, first


def _max_pool_fwd(x, window, stride, padding):
    y, first = _max_pool_taps(x, window, stride, padding)
    return y, (first, x.shape)


def _max_pool_bwd(window, stride, padding, residuals, g):
    first, (n, h, w, c) = residuals
    wide = at_least_float32(g)  # overlapping windows add up to 4 gradients: in float32, rounded once
    zero = jnp.zeros((), wide.dtype)
    padded = (n, h + 2 * padding, w + 2 * padding, c)
    dxp = sum(lax.pad(jnp.where(first == k, wide, zero), zero, back)
              for k, _, back in window_taps(padded, (window, window), (stride, stride)))
    return (dxp[:, padding:padding + h, padding:padding + w, :].astype(g.dtype),)


max_pool_torch.defvjp(_max_pool_fwd, _max_pool_bwd)
