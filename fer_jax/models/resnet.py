"""torchvision ResNet (BasicBlock variants), the layout of the MS-Celeb ResNet18 checkpoint.

Re-expresses `torchvision.models.resnet.ResNet` with `BasicBlock` (resnet18: [2, 2, 2, 2],
resnet34: [3, 4, 6, 3]); see shared/reference/backbones.md section 1. Submodule names equal the torch
attribute names, so `layer2.0.downsample.0.weight` lives at `layer2/0/downsample/0/kernel`.

The same module serves as a backbone inside other networks: with `num_classes=None` it returns the
layer4 feature map (before the average pool), and `child_names="sequential"` names its children by their
index in `nn.Sequential(*list(resnet.children())[:-2])`, which is how DAN stores it (`features.0` =
conv1, `features.1` = bn1, `features.4..7` = layer1..4).

Block outputs are tapped by torch module path with `apply(..., capture_intermediates=True)`
(`intermediates/layer2/__call__`): a `sow` under the same name would collide with the submodule. The layer4
map is sown as `feature_map` for class-activation maps.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models.convolution import Conv
from fer_jax.models.layers import BatchNorm, Dense, kaiming_normal_fan_out, max_pool_torch, torch_linear_init

# The order of torchvision ResNet's children; a Sequential over them names each by its index here.
TORCHVISION_CHILDREN = (
    "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc",
)

STAGE_SIZES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def child_name(torchvision_name: str, style: Literal["torchvision", "sequential"]) -> str:
    """Name of a ResNet child as torchvision calls it, or as its index in a Sequential of the children."""
    if style == "torchvision":
        return torchvision_name
    return str(TORCHVISION_CHILDREN.index(torchvision_name))


class Downsample(nn.Module):
    """`downsample = Sequential(conv1x1(stride), BatchNorm2d)` on the shortcut."""

    planes: int
    stride: int
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = Conv(self.planes, (1, 1), strides=self.stride, padding=((0, 0), (0, 0)), use_bias=False,
                 kernel_init=kaiming_normal_fan_out, dtype=self.dtype, name="0")(x)
        return BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="1")(x, train=train)


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN -> + shortcut -> ReLU."""

    planes: int
    stride: int = 1
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(Conv, self.planes, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                                 kernel_init=kaiming_normal_fan_out, dtype=self.dtype)
        bn = functools.partial(BatchNorm, axis_name=self.axis_name, dtype=self.dtype)
        y = conv(strides=self.stride, name="conv1")(x)
        y = nn.relu(bn(name="bn1")(y, train=train))
        y = bn(name="bn2")(conv(name="conv2")(y), train=train)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = Downsample(self.planes, self.stride, self.axis_name, self.dtype,
                                  name="downsample")(x, train=train)
        return nn.relu(y + shortcut)


class ResLayer(nn.Module):
    """`layerK`: a Sequential of residual blocks named "0", "1", ...; the first carries the stride.

    Attributes:
      block: the block module, built as `block(planes, stride, axis_name, dtype)` (BasicBlock; FERAtt's
        PreActResNet18 passes its PreActBlock).
    """

    planes: int
    blocks: int
    stride: int
    axis_name: str | None = None
    dtype: Any = None
    block: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        block = self.block or BasicBlock
        for i in range(self.blocks):
            x = block(self.planes, self.stride if i == 0 else 1, self.axis_name, self.dtype,
                      name=str(i))(x, train=train)
        return x


class ResNet(nn.Module):
    """torchvision ResNet with BasicBlocks (He et al., 2016), NHWC.

    Re-expresses `torchvision.models.resnet.ResNet` as used by DAN (yaoing/DAN:networks/dan.py) and the
    MS-Celeb checkpoint `resnet18_msceleb.pth`.

    Attributes:
      stage_sizes: blocks per layer; (2, 2, 2, 2) is resnet18.
      num_classes: size of `fc`; None returns the layer4 map [B, H/32, W/32, 512] (backbone form).
      child_names: "torchvision" (`conv1`, `layer1`, ...) or "sequential" (`0`, `4`, ..., DAN's `features`).
      axis_name: pmap axis for cross-replica BatchNorm.
      dtype: computation dtype (None: that of the inputs and parameters).
    """

    stage_sizes: Sequence[int] = STAGE_SIZES["resnet18"]
    num_classes: int | None = 1000
    child_names: Literal["torchvision", "sequential"] = "torchvision"
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.num_classes is not None and self.child_names != "torchvision":
            raise ValueError("a ResNet named as a Sequential of children has no fc; use num_classes=None")
        name = functools.partial(child_name, style=self.child_names)
        x = Conv(64, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                 kernel_init=kaiming_normal_fan_out, dtype=self.dtype, name=name("conv1"))(x)
        x = BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name=name("bn1"))(x, train=train)
        x = max_pool_torch(nn.relu(x), window=3, stride=2, padding=1)
        for k, (planes, blocks) in enumerate(zip((64, 128, 256, 512), self.stage_sizes), start=1):
            x = ResLayer(planes, blocks, 1 if k == 1 else 2, self.axis_name, self.dtype,
                         name=name(f"layer{k}"))(x, train=train)
        # The map class-activation maps use (ModelSpec.cam_layer): layer4's output, before pooling.
        self.sow("intermediates", "feature_map", x)
        if self.num_classes is None:
            return x
        pooled = jnp.mean(x, axis=(1, 2))
        init = torch_linear_init(pooled.shape[-1])
        return Dense(self.num_classes, kernel_init=init, bias_init=init, dtype=self.dtype,
                     name="fc")(pooled)
