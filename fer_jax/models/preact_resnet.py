"""PreActResNet18 as FERAtt defines it: the FERAtt classifier and the paper's classification baseline.

Re-expresses pedrodiamel/ferattention:torchlib/models/preactresnet.py `PreActResNet(PreActBlock, [2,2,2,2])`
(`preactresnet18`) and, with `dim` set, `PreActResEmbExNet(PreActBlock, [2,2,2,2])` (`preactresembnetex18`,
FERAtt+Rep+Cls's classifier); facts in shared/reference/backbones.md section 3. Submodule names equal the torch
attributes (`conv1`, `layerK.B.{bn1,conv1,bn2,conv2,shortcut.0}`, `linear`, `classification`).

Two details differ from the common PreActResNet and are kept:
- the projection shortcut (first block of layers 2-4) takes the *pre-activated* tensor relu(bn1(x)), while
  the identity shortcut takes the raw x;
- there is no final BatchNorm + ReLU: layer4's output goes straight to the global average pool.

The layer4 map is sown as `intermediates/feature_map` for class-activation maps.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models.convolution import Conv
from fer_jax.models.layers import BatchNorm, Dense, torch_linear_init
from fer_jax.models.resnet import ResLayer

# Blocks per layer of preactresnet18 (the only depth FERAtt builds).
STAGE_SIZES = (2, 2, 2, 2)


def torch_conv(features: int, kernel: int, in_features: int, *, stride: int = 1, padding: int = 0,
               use_bias: bool = True, dtype: Any = None, name: str | None = None) -> Conv:
    """torch.nn.Conv2d with explicit symmetric padding and torch's default init (U(+-1/sqrt(fan_in)))."""
    init = torch_linear_init(in_features * kernel * kernel)
    return Conv(features, (kernel, kernel), strides=stride, padding=((padding, padding), (padding, padding)),
                use_bias=use_bias, kernel_init=init, bias_init=init, dtype=dtype, name=name)


def torch_dense(features: int, in_features: int, dtype: Any = None, name: str | None = None) -> Dense:
    """torch.nn.Linear with its default init."""
    init = torch_linear_init(in_features)
    return Dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name)


class Shortcut(nn.Module):
    """`shortcut = Sequential(Conv2d(1x1, stride, bias=False))`: child "0"."""

    planes: int
    stride: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return torch_conv(self.planes, 1, x.shape[-1], stride=self.stride, use_bias=False, dtype=self.dtype,
                          name="0")(x)


class PreActBlock(nn.Module):
    """a = relu(bn1(x)); out = conv2(relu(bn2(conv1(a)))) + (shortcut(a) if projecting else x)."""

    planes: int
    stride: int = 1
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        bn = functools.partial(BatchNorm, axis_name=self.axis_name, dtype=self.dtype)
        conv = functools.partial(torch_conv, self.planes, 3, padding=1, use_bias=False, dtype=self.dtype)
        a = nn.relu(bn(name="bn1")(x, train=train))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            # upstream quirk: the projection reads the pre-activated a, the identity the raw x.
            shortcut = Shortcut(self.planes, self.stride, self.dtype, name="shortcut")(a)
        out = conv(x.shape[-1], stride=self.stride, name="conv1")(a)
        out = nn.relu(bn(name="bn2")(out, train=train))
        return conv(self.planes, name="conv2")(out) + shortcut


class PreActResNet18(nn.Module):
    """Pre-activation ResNet18 (He et al., 2016) in FERAtt's variant, NHWC.

    Re-expresses pedrodiamel/ferattention:torchlib/models/preactresnet.py `preactresnet18` (dim=None) and
    `preactresembnetex18` (dim set). Designed for 32x32 inputs (layer4 is then 4x4); the pool is global, so
    any size works. The input channel count (upstream's `num_channels`) is that of the image.

    Attributes:
      num_classes: classes of the logits (upstream's `num_classes`; FERAtt's recipes use 8 or 7).
      dim: None for `PreActResNet` (returns logits); an int for `PreActResEmbExNet`: `linear` maps the pooled
        512 features to an embedding z of size `dim` and `classification` maps z to the logits, returning
        `(z, y)` as upstream.
      initial_channels: width of conv1 and layer1 (upstream's `initial_channels`, 64); layers 2-4 double it.
      axis_name: pmap axis for cross-replica BatchNorm.
      dtype: computation dtype (None: that of the inputs and parameters).
    """

    num_classes: int = 8
    dim: int | None = None
    initial_channels: int = 64
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
        c = self.initial_channels
        x = torch_conv(c, 3, x.shape[-1], padding=1, use_bias=False, dtype=self.dtype, name="conv1")(x)
        for k, blocks in enumerate(STAGE_SIZES, start=1):
            x = ResLayer(c * 2 ** (k - 1), blocks, 1 if k == 1 else 2, self.axis_name, self.dtype, PreActBlock,
                         name=f"layer{k}")(x, train=train)
        # The map class-activation maps use: layer4's output, right before the pool (no final BN / ReLU).
        self.sow("intermediates", "feature_map", x)
        pooled = jnp.mean(x, axis=(1, 2))
        if self.dim is None:
            return torch_dense(self.num_classes, pooled.shape[-1], self.dtype, name="linear")(pooled)
        z = torch_dense(self.dim, pooled.shape[-1], self.dtype, name="linear")(pooled)
        return z, torch_dense(self.num_classes, self.dim, self.dtype, name="classification")(z)
