"""Layers with PyTorch numerics, shared by every network.

Flax's own `nn.BatchNorm` normalises like torch but updates the running variance with the *biased* batch
variance, while torch uses the unbiased one (n / (n - 1)); that makes the running statistics of a
train-mode step drift from torch (3.6e-4 at n = 324, see shared/reference/jax_platform.md). `BatchNorm`
below follows torch exactly and keeps Flax's variable names (`scale`, `bias` in params; `mean`, `var`
in batch_stats), so the porting rule does not change.

`Conv` is Flax's `nn.Conv` (same parameters, same names) whose convolution avoids three slow cases of XLA's
CPU backend (measured in `conv_general_dilated`'s docstring):

- an output map smaller than the kernel (layer4 of a ResNet at 64 px, 3x3 over 2x2) takes neither of its
  convolution libraries; the same sum as one matrix product of the input patches is ~40x faster
  (`patch_conv`);
- depthwise convolutions (ConvNeXt's 7x7, MFTN-FER's positional 3x3) run 20-80x slower than torch's; a sum
  of shifted copies of the input times the kernel's taps, with its own gradient (`depthwise_conv`), is
  ~30x faster forward and ~4-10x with the backward pass;
- the input gradient of a grouped convolution (FAER's CC attention: 7x7 in 4 groups) goes to a slow YNNPACK
  fusion; the gradients of one dense convolution per group (`grouped_conv`) are 4x faster and make FAER's
  train step 14 % faster.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from fer_jax import xla

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

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# Kaiming normal, fan_out, ReLU gain (torchvision ResNet convs, DAN head convs): std = sqrt(2 / fan_out).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


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
    """
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pad)


def _window_taps(padded: tuple[int, ...], window: tuple[int, int], strides: tuple[int, int]):
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
    for k, bounds, _ in _window_taps(xp.shape, (window, window), (stride, stride)):
        tap = lax.slice(xp, *bounds)
        if best is None:
            best, first = tap, jnp.zeros(tap.shape, jnp.int8 if window * window <= 128 else jnp.int32)
            continue
        take = (tap > best) | jnp.isnan(tap)
        best, first = jnp.where(take, tap, best), jnp.where(take, jnp.asarray(k, first.dtype), first)
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
              for k, _, back in _window_taps(padded, (window, window), (stride, stride)))
    return (dxp[:, padding:padding + h, padding:padding + w, :].astype(g.dtype),)


max_pool_torch.defvjp(_max_pool_fwd, _max_pool_bwd)


NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def patch_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
               precision: Any = None) -> jax.Array:
    """A 2-D convolution (NHWC input, HWIO kernel, explicit non-negative padding, no dilation or groups) as one
    matrix product of the input's kh x kw patches with the kernel: the same terms, summed in another order."""
    kh, kw, cin, cout = kernel.shape
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    patches = jnp.concatenate([lax.slice(x, *bounds) for _, bounds, _ in _window_taps(x.shape, (kh, kw), strides)],
                              axis=-1)  # (i, j, c) order: the kernel's HWI flattening
    return lax.dot_general(patches, kernel.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                           precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def grouped_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
                 groups: int, precision: Any = None) -> jax.Array:
    """A grouped 2-D convolution (NHWC input, HWIO kernel): XLA's own forward, and the gradients of the same
    sum as one dense convolution per group (`_per_group_conv`).

    XLA's CPU backend computes the input gradient of a grouped convolution as a grouped convolution that a
    slow YNNPACK fusion takes even where fer-jax's options leave convolutions out of YNNPACK; the dense
    convolutions' gradients are XLA's usual ones. FAER's CC attention (7x7 in 4 groups, 8 x 7x7 x 1024),
    forward and backward: 804 -> 187 ms (torch 143); the whole FAER train step 7.6 -> 6.5 s (batch 8,
    2026-12-05, interleaved); with XLA's default options (pmap), 1540 -> 617 ms. The forward stays XLA's
    grouped convolution: 49 ms against 62 ms as per-group convolutions. (Patches x kernel per group gave 262 ms
    with the backward.)
    """
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC,
                                    feature_group_count=groups, precision=precision)


def _per_group_conv(x, kernel, strides, padding, groups, precision):
    """`grouped_conv` as `groups` dense convolutions of the channel slices, concatenated."""
    cin, cout = x.shape[-1] // groups, kernel.shape[-1] // groups
    return jnp.concatenate([conv_general_dilated(x[..., k * cin:(k + 1) * cin], kernel[..., k * cout:(k + 1) * cout],
                                                 strides, padding, dimension_numbers=NHWC, precision=precision)
                            for k in range(groups)], axis=-1)


def _grouped_fwd(x, kernel, strides, padding, groups, precision):
    return grouped_conv(x, kernel, strides, padding, groups, precision), (x, kernel)


def _grouped_bwd(strides, padding, groups, precision, residuals, g):
    _, vjp = jax.vjp(lambda x, k: _per_group_conv(x, k, strides, padding, groups, precision), *residuals)
    return vjp(g)


grouped_conv.defvjp(_grouped_fwd, _grouped_bwd)


def _shifted_sum(x: jax.Array, taps: jax.Array, padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """sum_ij pad(x)[:, i:i+H', j:j+W', :] * taps[i, j]: a stride-1 depthwise correlation, taps [kh, kw, C].

    A float32 sum ends in `reduce_precision` to float32's own format, which is the identity. It is there
    because YNNPACK's fusions do not take it: with fer-jax's training options XLA otherwise pulls the adds
    into the YNNPACK fusion of the LayerNorm's reduction after them, which writes every shifted copy and every
    broadcast tap to memory first (ConvNeXt block, 8 x 56x56 x 128, forward and backward: 449 -> 345 ms; the
    whole ConvNeXt-base gradient at batch 8: 7.2 -> 6.7 s). It stays one loop fusion instead.
    """
    kh, kw = taps.shape[:2]
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            term = x[:, i:i + oh, j:j + ow, :] * taps[i, j]
            out = term if out is None else out + term
    return lax.reduce_precision(out, exponent_bits=8, mantissa_bits=23) if out.dtype == jnp.float32 else out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x: jax.Array, taps: jax.Array, padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """A stride-1 depthwise convolution (NHWC input, taps [kh, kw, C], explicit padding) as a sum of shifted
    copies; its input gradient is the same sum over the output gradient with the flipped taps, and its taps'
    gradient the correlation of the input with the output gradient, channel by channel (`_taps_grad`)."""
    return _shifted_sum(x, taps, padding)


def _depthwise_fwd(x, taps, padding):
    return _shifted_sum(x, taps, padding), (x, taps)


def _depthwise_bwd(padding, residuals, g):
    x, taps = residuals
    kh, kw = taps.shape[:2]
    (pt, pb), (pl, pr) = padding
    dx = _shifted_sum(g, taps[::-1, ::-1], ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))
    return dx, _taps_grad(jnp.pad(x, ((0, 0), *padding, (0, 0))), g).astype(taps.dtype)


def _taps_grad(xp: jax.Array, g: jax.Array) -> jax.Array:
    """dtaps[i, j, c] = sum_nhw xp[n, h + i, w + j, c] g[n, h, w, c]: the depthwise taps' gradient from the
    padded input `xp` and the output gradient `g`.

    In float32 it is one grouped convolution: the input with (channel, sample) as its features, C groups of
    B features, correlated with the output gradient as a [H', W', B, C] kernel, which sums over the samples
    within each group. XLA's CPU backend runs that 3x faster than per-tap reductions (8 x 56x56 x 128: 183 ->
    64 ms; 8 x 14x14 x 512: 46 -> 17 ms) unless YNNPACK takes the convolution (XLA's defaults, which
    `--config.parallel=pmap` keeps): there it runs ~4x slower (756 against 198 ms), so those compilations keep
    the reductions, and so does float64, where the convolution is 4-20x slower (the same sum up to summation
    order; tests/test_xla.py compares both forms in float64).
    """
    reductions = xp.dtype == jnp.float64 or xla.library_convolutions()
    return (_taps_grad_reductions if reductions else _taps_grad_convolution)(xp, g)


def _taps_grad_convolution(xp: jax.Array, g: jax.Array) -> jax.Array:
    """`_taps_grad` as one grouped convolution."""
    b, c = g.shape[0], g.shape[3]
    lhs = jnp.transpose(xp, (1, 2, 3, 0)).reshape(1, xp.shape[1], xp.shape[2], c * b)
    out = lax.conv_general_dilated(lhs, jnp.transpose(g, (1, 2, 0, 3)), (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    return out[0]


def _taps_grad_reductions(xp: jax.Array, g: jax.Array) -> jax.Array:
    """`_taps_grad` as kh x kw channel-wise dot products of each shifted input with the output gradient."""
    b, oh, ow, c = g.shape
    kh, kw = xp.shape[1] - oh + 1, xp.shape[2] - ow + 1
    gm = g.reshape(b * oh * ow, c)
    return jnp.stack([jnp.stack([jnp.einsum("nc,nc->c", xp[:, i:i + oh, j:j + ow, :].reshape(-1, c), gm)
                                 for j in range(kw)]) for i in range(kh)])


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, lhs_dilation: Any = None,
                         rhs_dilation: Any = None, dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs: Any) -> jax.Array:
    """`lax.conv_general_dilated`, computed otherwise on the CPU where XLA is slow (float64 gives the same
    numbers up to summation order; measured on 2 cores, float32, jit, median ms):

    | case | XLA forward / with backward | here forward / with backward | torch eager |
    |---|---|---|---|
    | 3x3 over 2x2, 16 x 512 -> 512 (`patch_conv`) | 131 / 273 | 3.3 / 5.6 | |
    | depthwise 7x7, 8 x 56x56 x 128 (`depthwise_conv`) | 280 / 425 | 7.1 / 96 | 3.3 / 103 |
    | depthwise 7x7, 8 x 14x14 x 512 | 93 / 271 | 3.0 / 25 | 0.9 / 21 |
    | 7x7 in 4 groups, 8 x 7x7 x 1024 -> 1024 (`grouped_conv`) | 49 / 804 | 50 / 187 | 38 / 143 |

    (The depthwise rows were measured again when the taps' gradient became a grouped convolution, 2026-12-05;
    before it, "here with backward" was 260 and 84 ms.)

    From 4x4 outputs on, XLA's own dense convolution is as fast as or faster than patches x kernel.
    """
    kh, kw = rhs.shape[:2] if rhs.ndim == 4 else (1, 1)
    simple = (lhs.ndim == 4 and dimension_numbers == NHWC and not kwargs and jax.default_backend() == "cpu"
              and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
              and not isinstance(padding, str) and all(lo >= 0 and hi >= 0 for lo, hi in padding))
    if simple:
        padding = tuple(map(tuple, padding))
        (sh, sw), ((pt, pb), (pl, pr)) = window_strides, padding
        depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1
        # bfloat16 / float16 inputs are summed in float32 and rounded once, as XLA's own convolution does;
        # float32 and float64 take the paths unchanged (the casts are no operations there: the same HLO).
        wide = at_least_float32
        if depthwise and (sh, sw) == (1, 1) and max(pt, pb) < kh and max(pl, pr) < kw:
            return depthwise_conv(wide(lhs), wide(rhs[:, :, 0, :]), padding).astype(lhs.dtype)
        oh, ow = (lhs.shape[1] + pt + pb - kh) // sh + 1, (lhs.shape[2] + pl + pr - kw) // sw + 1
        if feature_group_count > 1 and not depthwise:
            return grouped_conv(wide(lhs), wide(rhs), tuple(window_strides), padding, feature_group_count,
                                precision).astype(lhs.dtype)
        if feature_group_count == 1 and (oh < kh or ow < kw):
            return patch_conv(wide(lhs), wide(rhs), tuple(window_strides), padding, precision).astype(lhs.dtype)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)


class Conv(nn.Conv):
    """`nn.Conv` computed by `conv_general_dilated` above (parameters and names unchanged)."""

    conv_general_dilated: Any = conv_general_dilated
