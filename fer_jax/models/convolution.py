"""Convolutions with XLA's numbers, computed otherwise where its CPU backend is slow.

`Conv` is Flax's `nn.Conv` (same parameters, same names) whose convolution avoids four slow cases of XLA's
CPU backend (measured in `conv_general_dilated`'s docstring):

- an output map smaller than the kernel (layer4 of a ResNet at 64 px, 3x3 over 2x2) takes neither of its
  convolution libraries; the same sum as one matrix product of the input patches is ~40x faster
  (`patch_conv`);
- depthwise convolutions (ConvNeXt's 7x7, MFTN-FER's positional 3x3) run 20-80x slower than torch's; a sum
  of shifted copies of the input times the kernel's taps, with its own gradient (`depthwise_conv`), is
  ~30x faster forward and ~4-10x with the backward pass;
- the input gradient of a grouped convolution (FAER's CC attention: 7x7 in 4 groups) goes to a slow YNNPACK
  fusion; the gradients of one dense convolution per group (`grouped_conv`) are 4x faster and make FAER's
  train step 14 % faster;
- XLA's kernel gradient of a dense convolution transposes the input in a loop that recomputes it from the
  layers before (BatchNorm, residual sum, ReLU); under differentiation the input is computed into one buffer
  first (`kernel_gradient_operand`), and the transpose is a plain copy: ResNet train steps ~10 % faster.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from fer_jax import xla
from fer_jax.models.layers import at_least_float32, window_taps


NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def patch_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
               precision: Any = None) -> jax.Array:
    """A 2-D convolution (NHWC input, HWIO kernel, explicit non-negative padding, no dilation or groups) as one
    matrix product of the input's kh x kw patches with the kernel: the same terms, summed in another order."""
    kh, kw, cin, cout = kernel.shape
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    patches = jnp.concatenate([lax.slice(x, *bounds) for _, bounds, _ in window_taps(x.shape, (kh, kw), strides)],
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
                                                 strides, padding, dimension_numbers=NHWC, precision=precision,
                                                 own_buffer=False)
                            for k in range(groups)], axis=-1)


def _grouped_fwd(x, kernel, strides, padding, groups, precision):
    return grouped_conv(x, kernel, strides, padding, groups, precision), (x, kernel)


def _grouped_bwd(strides, padding, groups, precision, residuals, g):
    _, vjp = jax.vjp(lambda x, k: _per_group_conv(x, k, strides, padding, groups, precision), *residuals)
    return vjp(g)


grouped_conv.defvjp(_grouped_fwd, _grouped_bwd)


def _materialized(x: jax.Array) -> jax.Array:
    """`x` itself, written to its own buffer by a conditional that XLA cannot look through: both branches
    return `x` (the second as `reduce_precision` to x's own format, an identity that keeps XLA from merging
    two equal branches; it runs only if x's first element is NaN). XLA's CPU pipeline drops
    `lax.optimization_barrier` before fusion, so a conditional is what keeps the computation of `x` out of the
    loops that read it."""
    first = x.reshape(-1)[0]
    info = jnp.finfo(x.dtype)
    return lax.cond(first == first, lambda y: y,
                    lambda y: lax.reduce_precision(y, exponent_bits=info.nexp, mantissa_bits=info.nmant), x)


def _shifted_sum(x: jax.Array, taps: jax.Array, padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """sum_ij pad(x)[:, i:i+H', j:j+W', :] * taps[i, j]: a stride-1 depthwise correlation, taps [kh, kw, C],
    written to its own buffer (`_materialized`).

    The buffer is what keeps the sum computed once. As a plain expression, XLA's CPU fusion copies the 49-term
    sum into every loop that reads it: in ConvNeXt's train step, the LayerNorm's centring and output, the
    dwconv's bias, and six loops of the backward pass each recomputed it from the padded input (nine copies of
    the sum per block); a float32 sum ending in `reduce_precision` (the identity) only kept it out of the
    YNNPACK fusion of the LayerNorm's reduction. Interleaved A/B, batch 8 (2026-12-06), train step / evaluation:
    ConvNeXt-base 4941 -> 4517 / 1109 -> 963 ms, FAER 5159 -> 4708 / 1177 -> 1018 ms, MFTN-FER 11642 -> 10333 /
    1353 -> 1165 ms.
    """
    kh, kw = taps.shape[:2]
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            term = x[:, i:i + oh, j:j + ow, :] * taps[i, j]
            out = term if out is None else out + term
    return _materialized(out)


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


@jax.custom_vjp
def kernel_gradient_operand(x: jax.Array) -> jax.Array:
    """The input of a dense convolution, the identity; under differentiation, computed once into its own buffer
    (`_materialized`), so that XLA transposes it for the kernel gradient as a plain copy.

    XLA computes a convolution's kernel gradient with the batch as the features, so it writes the input
    transposed to [C, H, W, N] first. Without the buffer, its CPU fusion recomputes the input there (a
    ResNet block's BatchNorm, residual sum and ReLU, for two blocks where one block's output feeds the next)
    in a loop that reads every operand across its channels; a plain transposing copy goes to XLA's tiled
    emitter instead. A transpose of a BatchNorm-ReLU output, 8 x 56x56 x 64: 6.7 -> 1.5 ms; train steps at
    batch 8 (2026-12-06, interleaved A/B): DAN 721 -> 650 ms, ResNet34 1147 -> 1017 ms (docs/speed.md).
    The values, and so every result, are the same. Not differentiated (evaluation), nothing changes: the
    primal is `x` itself.
    """
    return x


def _operand_fwd(x):
    return _materialized(x), None


def _operand_bwd(_, g):
    return (g,)


kernel_gradient_operand.defvjp(_operand_fwd, _operand_bwd)


def _explicit_padding(spatial: tuple[int, int], window: tuple[int, int], strides: Any, padding: Any) -> Any:
    """"VALID" / "SAME" / "SAME_LOWER" as the explicit pairs XLA would use (ConvNeXt's stem and downsampling pass
    "VALID"), so that such convolutions take the CPU paths too; explicit padding is returned as it is."""
    if isinstance(padding, str) and padding.upper() in ("VALID", "SAME", "SAME_LOWER"):
        return tuple(lax.padtype_to_pads(spatial, window, tuple(strides), padding.upper()))
    return padding


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, lhs_dilation: Any = None,
                         rhs_dilation: Any = None, dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, *, own_buffer: bool = True, **kwargs: Any) -> jax.Array:
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

    From 4x4 outputs on, XLA's own dense convolution is as fast as or faster than patches x kernel. There, the
    input goes through `kernel_gradient_operand` unless `own_buffer` is False (the per-group convolutions of
    `grouped_conv`'s gradient, whose inputs are slices of one buffer already: 183 against 177 ms with it).
    Padding given as "VALID" or "SAME" (ConvNeXt's stem and downsampling) takes these paths as the explicit
    pairs XLA would use.
    """
    kh, kw = rhs.shape[:2] if rhs.ndim == 4 else (1, 1)
    simple = (lhs.ndim == 4 and dimension_numbers == NHWC and not kwargs and jax.default_backend() == "cpu"
              and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
    if simple:
        padding = _explicit_padding(lhs.shape[1:3], (kh, kw), window_strides, padding)
        simple = not isinstance(padding, str) and all(lo >= 0 and hi >= 0 for lo, hi in padding)
    if simple:
        padding = tuple(map(tuple, padding))
        (sh, sw), ((pt, pb), (pl, pr)) = window_strides, padding
        depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1
        # bfloat16 / float16 inputs are summed in float32 and rounded once, as XLA's own convolution does;
        # float32 and float64 take the paths unchanged (the casts are no operations there: the same HLO).
        wide = at_least_float32
        if depthwise and (sh, sw) == (1, 1) and max(pt, pb) < kh and max(pl, pr) < kw:
            return depthwise_conv(wide(lhs), wide(rhs[:, :, 0, :]), padding).astype(lhs.dtype)
        if feature_group_count > 1 and not depthwise:
            return grouped_conv(wide(lhs), wide(rhs), tuple(window_strides), padding, feature_group_count,
                                precision).astype(lhs.dtype)
        oh, ow = (lhs.shape[1] + pt + pb - kh) // sh + 1, (lhs.shape[2] + pl + pr - kw) // sw + 1
        if feature_group_count == 1 and (oh < kh or ow < kw):
            return patch_conv(wide(lhs), wide(rhs), tuple(window_strides), padding, precision).astype(lhs.dtype)
        if feature_group_count == 1 and own_buffer:
            lhs = kernel_gradient_operand(lhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)


class Conv(nn.Conv):
    """`nn.Conv` computed by `conv_general_dilated` above (parameters and names unchanged)."""

    conv_general_dilated: Any = conv_general_dilated
