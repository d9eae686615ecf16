"""ConvNeXt in the facebookresearch key layout, the backbone of FAER and MFTN-FER.

Liu et al., "A ConvNet for the 2020s", CVPR 2022. Re-expresses facebookresearch/ConvNeXt
`models/convnext.py` as copied into XUJ1Er/FAER:FaceAttribute/Baseline/models/convnext.py (FAER's ConvNeXt
baseline, whose `forward` returns `(feature, logits)`) and XuJ1E/MFTN-FER:models/convnext.py; facts in
shared/reference/backbones.md sections 4-5.

Submodule paths equal the torch keys, so `stages.2.7.pwconv1.weight` lives at `stages/2/7/pwconv1/kernel`:

| torch                          | here                                                              |
|--------------------------------|-------------------------------------------------------------------|
| `downsample_layers` ModuleList | `DownsampleLayers`, called once per stage with its index          |
| `downsample_layers.0` (stem)   | conv 4x4/4 VALID "0" -> LayerNorm "1" (channels-first = over C)   |
| `downsample_layers.i`, i > 0   | LayerNorm "0" -> conv 2x2/2 VALID "1"                             |
| `stages` ModuleList            | `Stages`, called once per stage with its index; blocks "0", ...   |
| block                          | `dwconv`, `norm`, `pwconv1`, `pwconv2`, raw `gamma`               |
| `norm`, `head`                 | final LayerNorm and classifier                                    |

Every LayerNorm here has epsilon `LN_EPS` = 1e-6 (read when the module is set up, so a test can build a
model with a wrong epsilon and show that the parity check notices). There is no BatchNorm and no buffer.

Networks built on the body reuse it without copying it:
- FAER subclasses `ConvNeXt` and overrides `forward_features` (upstream's hook of the same name) to put its
  CC attention between the last stage and the pooling; its keys stay at the root, as upstream's.
- MFTN-FER holds a `ConvNeXt` under a prefix (`backbone`) and calls `stages_out` for the four stage maps
  and `forward_head` on the last one for the ConvNeXt logits.

Stochastic depth draws from the RNG stream "drop_path" in training; evaluation draws nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from fer_jax.models import initializers
from fer_jax.models.convolution import Conv
from fer_jax.models.layers import Dense, gelu

# variant -> (blocks per stage, channels per stage); `base` is the one FAER and MFTN-FER use.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # timm's atto depths and widths with the standard block: the CPU recipes' size (not an upstream network)
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}

# The root modules of a ConvNeXt (torch names), for networks that hold one under a prefix (MFTN-FER).
TOP_MODULES = ("downsample_layers", "stages", "norm", "head")
LN_EPS = 1e-6  # every ConvNeXt LayerNorm: channels-first ones, the block norms and the final norm
LAYER_SCALE_INIT = 1e-6  # upstream's layer_scale_init_value: the initial `gamma`

# Upstream initialises every Conv2d / Linear weight with timm's trunc_normal_(std=.02), which truncates at
# +-2 in absolute value, i.e. at +-100 standard deviations: a plain normal draw is the same distribution.
weight_init = initializers.normal(stddev=0.02)


def variant_config(variant: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(depths, dims) of a ConvNeXt variant.

    Raises:
      ValueError: an unknown variant (the message lists the known ones).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ConvNeXt variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _nearest_float32(x: Fraction) -> float:
    """`x` rounded to the nearest float32, ties to even."""
    guess = np.float32(float(x))
    candidates = (np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf)))
    return float(min(candidates, key=lambda c: (abs(Fraction(float(c)) - x), int(c.view(np.uint32)) & 1)))


def torch_linspace(start: float, end: float, steps: int) -> tuple[float, ...]:
    """`[v.item() for v in torch.linspace(start, end, steps)]` (float32, CPU), bit for bit.

    torch's kernel computes step = float32(end - start) / (steps - 1) in float32 and then, rounding once,
    start + step * i for the first half (i < steps // 2) and end - step * (steps - 1 - i) for the rest.
    numpy's float64 linspace cast to float32 differs from it in the last bit for many (rate, depth) pairs
    (e.g. element 18 of linspace(0, 0.25, 36)), hence the exact replica.
    """
    s, e = np.float32(start), np.float32(end)
    if steps <= 1:
        return (float(s),) * steps
    step = Fraction(float(np.float32(e - s) / np.float32(steps - 1)))
    return tuple(_nearest_float32(Fraction(float(s)) + step * i if i < steps // 2
                                  else Fraction(float(e)) - step * (steps - 1 - i)) for i in range(steps))


def drop_path_rates(depths: Sequence[int], rate: float) -> tuple[tuple[float, ...], ...]:
    """Per-stage stochastic-depth rates: upstream's linspace(0, rate, sum(depths)) over blocks in order."""
    rates = torch_linspace(0.0, rate, sum(depths))
    bounds = np.cumsum((0, *depths))
    return tuple(rates[bounds[i]:bounds[i + 1]] for i in range(len(depths)))


def layer_norm(dtype: Any, name: str | None = None) -> nn.LayerNorm:
    """A ConvNeXt LayerNorm over the channel axis (epsilon `LN_EPS`, two-pass variance)."""
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, name=name)


class DropPath(nn.Module):
    """Stochastic depth with timm's semantics (`timm.layers.DropPath`).

    In training, each sample (leading axis) keeps the whole branch with probability 1 - rate and is then
    scaled by 1 / (1 - rate); a rate of 1.0 zeroes every sample without dividing (no 0/0: the output is
    exactly zero and so is its gradient, which MFTN-FER relies on). Evaluation, or a rate of 0, is the
    identity and draws no random numbers.

    Attributes:
      rate: the probability of dropping a sample's branch.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("drop_path"), keep, shape).astype(x.dtype)
        if keep > 0.0:
            mask = mask / jnp.asarray(keep, x.dtype)
        return x * mask


class Block(nn.Module):
    """dwconv 7x7 (groups = C) -> LayerNorm -> pwconv1 (4C) -> GELU (erf) -> pwconv2 -> x gamma -> DropPath
    -> + input."""

    dim: int
    drop_path: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dense = functools.partial(Dense, kernel_init=weight_init, dtype=self.dtype)
        y = Conv(self.dim, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=self.dim,
                 kernel_init=weight_init, dtype=self.dtype, name="dwconv")(x)
        y = layer_norm(self.dtype, "norm")(y)
        y = gelu(dense(4 * self.dim, name="pwconv1")(y))
        y = dense(self.dim, name="pwconv2")(y)
        gamma = self.param("gamma", nn.initializers.constant(LAYER_SCALE_INIT), (self.dim,))
        y = y * jnp.asarray(gamma, y.dtype)
        return x + DropPath(self.drop_path, name="drop_path")(y, train=train)


class DownsampleLayer(nn.Module):
    """`downsample_layers.i`: the stem (conv 4x4/4 "0", LayerNorm "1") for i = 0, else LayerNorm "0" and
    conv 2x2/2 "1". Both convs are stride = kernel without padding (VALID)."""

    features: int
    stem: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = 4 if self.stem else 2
        conv = Conv(self.features, (k, k), strides=k, padding="VALID", kernel_init=weight_init,
                    dtype=self.dtype, name="0" if self.stem else "1")
        if self.stem:
            return layer_norm(self.dtype, "1")(conv(x))
        return conv(layer_norm(self.dtype, "0")(x))


class DownsampleLayers(nn.Module):
    """torch's `downsample_layers` ModuleList; `__call__(x, i)` runs its child "i"."""

    dims: tuple[int, ...]
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, i: int) -> jax.Array:
        return DownsampleLayer(self.dims[i], stem=i == 0, dtype=self.dtype, name=str(i))(x)


class Stage(nn.Module):
    """`stages.s`: a Sequential of blocks "0", "1", ..., with their stochastic-depth rates."""

    dim: int
    rates: tuple[float, ...]
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for b, rate in enumerate(self.rates):
            x = Block(self.dim, rate, self.dtype, name=str(b))(x, train=train)
        return x


class Stages(nn.Module):
    """torch's `stages` ModuleList; `__call__(x, i, train=...)` runs its child "i"."""

    dims: tuple[int, ...]
    rates: tuple[tuple[float, ...], ...]
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, i: int, *, train: bool) -> jax.Array:
        return Stage(self.dims[i], self.rates[i], self.dtype, name=str(i))(x, train=train)


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al., 2022) with the facebookresearch key layout, NHWC.

    Re-expresses XUJ1Er/FAER:FaceAttribute/Baseline/models/convnext.py `ConvNeXt` (facebookresearch's
    model; `convnext_base` there is variant "base"): `__call__` returns `(feature, logits)` like that file's
    `forward`, feature first.

    Attributes:
      variant: "tiny", "small", "base" or "large" (`VARIANTS`; "atto" for CPU-sized recipes).
      num_classes: outputs of `head`.
      drop_path_rate: stochastic depth of the last block; rates rise linearly from 0 over the blocks.
      in_chans: channels of the input image.
      dtype: computation dtype (None: that of the inputs and parameters); parameters stay float32.
      axis_name: unused (no BatchNorm, no cross-replica statistics); the training loop passes it to every
        network.
    """

    variant: str = "base"
    num_classes: int = 1000
    drop_path_rate: float = 0.0
    in_chans: int = 3
    dtype: Any = None
    axis_name: str | None = None

    def setup(self):
        depths, dims = variant_config(self.variant)
        self.downsample_layers = DownsampleLayers(dims, self.dtype)
        self.stages = Stages(dims, drop_path_rates(depths, self.drop_path_rate), self.dtype)
        self.norm = layer_norm(self.dtype)
        self.head = Dense(self.num_classes, kernel_init=weight_init, dtype=self.dtype)

    def stages_out(self, image: jax.Array, *, train: bool) -> list[jax.Array]:
        """The four stage outputs (downsample i -> stage i), NHWC.

        Args:
          image: [B, H, W, in_chans].
          train: stochastic depth on (needs the "drop_path" RNG stream when drop_path_rate > 0).

        Returns:
          [B, H/4, W/4, C0], [B, H/8, W/8, C1], [B, H/16, W/16, C2], [B, H/32, W/32, C3].
        """
        if image.shape[-1] != self.in_chans:
            raise ValueError(f"ConvNeXt expects {self.in_chans} input channels (NHWC), got shape {image.shape}")
        outs, x = [], image
        for i in range(4):
            x = self.stages(self.downsample_layers(x, i), i, train=train)
            outs.append(x)
        return outs

    def forward_features(self, image: jax.Array, *, train: bool) -> jax.Array:
        """The map that the pooling averages (upstream's `forward_features`): here the last stage output;
        subclasses insert their layers after it (FAER: CC attention)."""
        return self.stages_out(image, train=train)[-1]

    def forward_head(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Pooling, final norm and classifier on the map from `forward_features`.

        Sows the map as `intermediates/feature_map` (the class-activation-map layer).

        Returns:
          (feature [B, C]: the spatial mean, before the norm; logits [B, num_classes]).
        """
        self.sow("intermediates", "feature_map", x)
        feature = jnp.mean(x, axis=(1, 2))
        return feature, self.head(self.norm(feature))

    def __call__(self, image: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """Upstream's `forward`.

        Args:
          image: [B, H, W, in_chans], ImageNet-normalised RGB (H, W multiples of 32).
          train: stochastic depth on; nothing else differs between training and evaluation.

        Returns:
          (feature [B, C_last], logits [B, num_classes]).
        """
        return self.forward_head(self.forward_features(image, train=train))
