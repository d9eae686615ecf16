"""DAN: Distract Your Attention, multi-head cross attention (Wen et al., 2023, arXiv 2109.07270).

Re-expresses yaoing/DAN:networks/dan.py (`DAN`, `CrossAttentionHead`, `SpatialAttention`,
`ChannelAttention`); facts in shared/reference/dan.md.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models import initializers
from fer_jax.models.convolution import Conv
from fer_jax.models.layers import BatchNorm, Dense, at_least_float32, kaiming_normal_fan_out, torch_linear_init
from fer_jax.models.resnet import STAGE_SIZES, ResNet, child_name

# DAN keeps torchvision's ResNet18 children up to layer4 in `features = Sequential(...)`, so the
# MS-Celeb checkpoint's `conv1`, `bn1`, `layerK` become `features.<index>` (its `fc` is dropped).
BACKBONE_RENAMES = tuple((n, f"features.{child_name(n, 'sequential')}")
                         for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"))

# Head Linears are initialised N(0, 0.001^2) with zero bias (CrossAttentionHead.init_weights).
_head_linear = functools.partial(Dense, kernel_init=initializers.normal(0.001),
                                 bias_init=nn.initializers.zeros)


class ConvBN(nn.Module):
    """`Sequential(Conv2d(bias=True), BatchNorm2d)`: children "0" and "1"."""

    features: int
    kernel: tuple[int, int]
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        pad = tuple((k // 2, k // 2) for k in self.kernel)
        x = Conv(self.features, self.kernel, padding=pad, kernel_init=kaiming_normal_fan_out,
                 bias_init=nn.initializers.zeros, dtype=self.dtype, name="0")(x)
        return BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="1")(x, train=train)


class SpatialAttention(nn.Module):
    """1x1 reduction, then 3x3 + 1x3 + 3x1 branches added and ReLU'd, channel-*summed* to one map."""

    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        branch = functools.partial(ConvBN, axis_name=self.axis_name, dtype=self.dtype)
        y = branch(256, (1, 1), name="conv1x1")(x, train=train)
        y = nn.relu(branch(512, (3, 3), name="conv_3x3")(y, train=train)
                    + branch(512, (1, 3), name="conv_1x3")(y, train=train)
                    + branch(512, (3, 1), name="conv_3x1")(y, train=train))
        # upstream quirk: a sum (not a mean) over 512 channels, so the map scales with the width.
        attention = jnp.sum(y, axis=-1, keepdims=True)
        self.sow("intermediates", "attention", attention)  # the head's spatial attention map (explain.py)
        return x * attention


class ChannelGate(nn.Module):
    """`attention = Sequential(Linear(512, 32), BatchNorm1d(32), ReLU, Linear(32, 512), Sigmoid)`."""

    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, v: jax.Array, *, train: bool) -> jax.Array:
        a = _head_linear(32, dtype=self.dtype, name="0")(v)
        a = nn.relu(BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="1")(a, train=train))
        return nn.sigmoid(_head_linear(512, dtype=self.dtype, name="3")(a))


class ChannelAttention(nn.Module):
    """Global average pool, then a sigmoid gate that multiplies the *pooled* vector (not the map).

    Computes in at least float32 (the pool, the 512 -> 32 -> 512 gate and its product: ~33k multiply-adds a head)
    and returns the head vector in at least float32, for the log-softmax across heads that follows (see DAN's
    tail). Measured: with this block in bfloat16, bfloat16 training of the 64-px quickstart stayed at chance
    (best 0.167 in 5 epochs, float32 0.543); with it in float32 it reached 0.695 (all heads in float32: 0.652).
    float32 and float64 programs are unchanged.
    """

    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        pooled = jnp.mean(at_least_float32(x), axis=(1, 2))
        return pooled * ChannelGate(self.axis_name, pooled.dtype, name="attention")(pooled, train=train)


class CrossAttentionHead(nn.Module):
    """Spatial attention followed by channel attention; returns a [B, 512] vector in at least float32."""

    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        sa = SpatialAttention(self.axis_name, self.dtype, name="sa")(x, train=train)
        return ChannelAttention(self.axis_name, self.dtype, name="ca")(sa, train=train)


class DAN(nn.Module):
    """DAN (yaoing/DAN:networks/dan.py `DAN`), NHWC.

    Returns `(out, feat, heads)` like upstream's forward: logits after BatchNorm1d [B, num_class], the
    ResNet18 layer4 map [B, 7, 7, 512] (NHWC), and the head vectors [B, num_head, 512] after the
    log-softmax over the head axis (skipped when num_head == 1); `out` and `heads` in at least float32 whatever
    `dtype` is (see the tail).
    """

    num_class: int = 7
    num_head: int = 4
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        feat = ResNet(STAGE_SIZES["resnet18"], num_classes=None, child_names="sequential",
                      axis_name=self.axis_name, dtype=self.dtype, name="features")(x, train=train)
        heads = jnp.stack([
            CrossAttentionHead(self.axis_name, self.dtype, name=f"cat_head{i}")(feat, train=train)
            for i in range(self.num_head)
        ], axis=1)
        # The head vectors arrive in at least float32 (ChannelAttention), and the tail (log-softmax, head sum, fc,
        # BatchNorm1d: 7 x 512 weights) stays there. The log-softmax across heads puts every value near
        # log(1 / num_head) and their sum near -5.5, where bfloat16's spacing (2^-7, then 2^-5) is coarser than
        # what tells the heads apart: with a bfloat16 tail, bfloat16 training of the 72-px quickstart stayed at
        # chance where float32 reached 0.59.
        if self.num_head > 1:
            # upstream quirk: log_softmax across the *head* axis, then a sum over heads (kept: the
            # partition loss is defined on these values and the released weights were trained with it).
            heads = jax.nn.log_softmax(heads, axis=1)
        self.sow("intermediates", "heads", heads)
        init = torch_linear_init(512)
        out = Dense(self.num_class, kernel_init=init, bias_init=init, name="fc")(jnp.sum(heads, axis=1))
        out = BatchNorm(axis_name=self.axis_name, name="bn")(out, train=train)
        return out, feat, heads
