"""FERAtt: facial expression recognition with an attention net (Fernandez et al., CVPRW 2019, arXiv 1810.12121).

Re-expresses pedrodiamel/ferattention:torchlib/models/ferattentionnet.py: `FERAttentionNet` (`ferattention`,
FERAtt+Cls) and `FERAttentionGMMNet` (`ferattentiongmm`, FERAtt+Rep+Cls), with the `preactresnet` backbone
(the only one the recipes use) and their `AttentionResNet` U-Net on a torchvision ResNet34; facts in
shared/reference/feratt.md and backbones.md sections 2-3.

Data flow (64x64 input): the attention U-Net gives g_att (num_classes channels); the feature module gives
g_ft = conv_mid(8 residual blocks(conv_input(x))) + conv_input(x); the reconstruction of
cat[sigmoid(g_att) * g_ft, x, g_att] through a ConvRelu, a 1x1 conv, BatchNorm and ReLU is the attention
image `att`; `att` re-normalised with CIFAR-10 constants and 2x2 average-pooled to 32x32 feeds PreActResNet18.

Upstream registers the encoder twice (`attention_map.encoder.*` and, through `nn.Sequential`s over the same
modules, `attention_map.conv1..conv5.*`): 216 state_dict entries are aliases. Here the encoder exists once, at
`attention_map/encoder`; `ENCODER_ALIASES` maps each alias prefix to it. The encoder's `fc` is never used in
the forward but exists (created at init only) so that every upstream key has a variable.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models.contract import FacePreprocess, InitRule, View
from fer_jax.models.convolution import Conv
from fer_jax.models.layers import BatchNorm, Dense, kaiming_normal_fan_out, max_pool_torch, torch_linear_init
from fer_jax.models.preact_resnet import PreActResNet18, torch_conv
from fer_jax.models.resnet import STAGE_SIZES, ResLayer

# torch key prefixes registered twice upstream: (alias, the canonical prefix that our variables follow).
# `AttentionResNet.conv1 = Sequential(encoder.conv1, encoder.bn1, encoder.relu, pool)`, conv2..conv5 =
# encoder.layer1..layer4. 1 + 5 + 36 + 54 + 78 + 42 = 216 aliased entries (num_batches_tracked included).
ENCODER_ALIASES = (
    ("attention_map.conv1.0", "attention_map.encoder.conv1"),
    ("attention_map.conv1.1", "attention_map.encoder.bn1"),
    ("attention_map.conv2", "attention_map.encoder.layer1"),
    ("attention_map.conv3", "attention_map.encoder.layer2"),
    ("attention_map.conv4", "attention_map.encoder.layer3"),
    ("attention_map.conv5", "attention_map.encoder.layer4"),
)

# Parameters the forward never reads (torchvision ResNet34's classifier inside the encoder): they get no
# gradient upstream, so torch's Adam keeps no state for them and never changes them.
UNUSED = ("attention_map.encoder.fc",)

# Upstream's start: `AttentionResNet` always builds its encoder with torchvision's ImageNet ResNet34 weights
# (feratt.md section 2). A converted torchvision ResNet34 loads whole into the encoder (its fc included,
# as upstream's encoder holds it); every other module keeps its initialisation.
RESNET34_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")
ENCODER_INIT = InitRule(
    renames=tuple((m, f"attention_map.encoder.{m}") for m in RESNET34_MODULES),
    init=("attention_map.center", "attention_map.dec*", "attention_map.attention_map", "conv_input", "conv_mid",
          "conv2_bn", "feature", "reconstruction", "netclass"))

# normalize_layer: att_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5 with CIFAR-10's mean and std.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# the same as a preprocessing step (pytorch-classification's misc.py; the PreActResNet18 baseline's input)
CIFAR10_NORMALIZE = "normalize((0.4914,0.4822,0.4465),(0.2023,0.1994,0.2010))"

# A face in a photograph as upstream's real-face evaluation feeds it (eval.py: squash to 64 px, gray as RGB, [0, 1]).
FACE = FacePreprocess("cv_resize({h},{w})|gray|to_float")

# What explain.py draws: the reconstructed attention image and the explained class's attention map.
VIEWS = (View("attention image", "output:att", "image"), View("attention map", "output:g_att", "class_heatmap"))

# AttentionResNet's own num_filters: FERAttentionNet does not pass its num_filters on, so this stays 32.
UNET_FILTERS = 32
NUM_RESIDUAL_BLOCKS = 8


def upsample_bilinear_2x(x: jax.Array) -> jax.Array:
    """F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False) for NHWC x.

    With half-pixel centres, output 2i reads source i - 1/4 and output 2i+1 reads i + 1/4, so each is a
    0.25 / 0.75 blend of two neighbours; at the borders torch clamps the source index, i.e. repeats the edge
    (outputs 0 and 2n-1 equal inputs 0 and n-1). Written as this fixed stencil (no resize matrices, no
    matmul precision to depend on); tests compare it with torch at every pixel, borders and 1x1 maps included.
    """
    for axis in (1, 2):
        n = x.shape[axis]
        first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
        last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
        prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
        nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis)
        even, odd = 0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt
        x = jnp.stack([even, odd], axis=axis + 1)
        x = x.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 2:])
    return x


class ConvRelu(nn.Module):
    """3x3 conv (pad 1, with bias) as child `conv`, then ReLU."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(torch_conv(self.features, 3, x.shape[-1], padding=1, dtype=self.dtype, name="conv")(x))


class DecoderBlockV2(nn.Module):
    """Bilinear x2 upsampling (align_corners=False), then ConvRelu `cr1` and ConvRelu `cr2`."""

    middle_channels: int
    out_channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = upsample_bilinear_2x(x)
        x = ConvRelu(self.middle_channels, self.dtype, name="cr1")(x)
        return ConvRelu(self.out_channels, self.dtype, name="cr2")(x)


class Encoder(nn.Module):
    """torchvision ResNet34 (`attention_map.encoder`) with FERAtt's stem: conv1 -> bn1 -> ReLU -> 2x2/2 max-pool.

    Returns every stage's output (conv1..conv5 in upstream's names): 64@H/4, 64@H/4, 128@H/8, 256@H/16,
    512@H/32. The encoder's own 3x3 max-pool, average pool and `fc` are never called; `fc` [512 -> 1000] is
    created at init so that the upstream key has a home.
    """

    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, ...]:
        x = Conv(64, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                 kernel_init=kaiming_normal_fan_out, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="bn1")(x, train=train))
        # upstream quirk: a 2x2 stride-2 max-pool replaces ResNet's 3x3 stride-2 padded one.
        stages = [max_pool_torch(x, window=2, stride=2, padding=0)]
        for k, (planes, blocks) in enumerate(zip((64, 128, 256, 512), STAGE_SIZES["resnet34"]), start=1):
            stages.append(ResLayer(planes, blocks, 1 if k == 1 else 2, self.axis_name, self.dtype,
                                   name=f"layer{k}")(stages[-1], train=train))
        if self.is_initializing():
            init = torch_linear_init(512)
            Dense(1000, kernel_init=init, bias_init=init, dtype=self.dtype, name="fc")(
                jnp.zeros((1, 512), stages[-1].dtype))
        return tuple(stages)


class AttentionHead(nn.Module):
    """`attention_map = Sequential(ConvRelu(32, 32), Conv2d(32, out_channels, 1))`: children "0", "1"."""

    out_channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ConvRelu(x.shape[-1], self.dtype, name="0")(x)
        return torch_conv(self.out_channels, 1, x.shape[-1], dtype=self.dtype, name="1")(x)


class AttentionResNet(nn.Module):
    """The attention U-Net (`attention_map`): ResNet34 encoder, DecoderBlockV2 decoder, g_att logits.

    Every concatenation is (decoder, skip), as upstream: dec5(cat[center, e5]), dec4(cat[dec5, e4]),
    dec3(cat[dec4, e3]), dec2(cat[dec3, e2]); dec1 has no skip.
    """

    out_channels: int
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        nf = UNET_FILTERS
        block = functools.partial(DecoderBlockV2, dtype=self.dtype)
        _, e2, e3, e4, e5 = Encoder(self.axis_name, self.dtype, name="encoder")(x, train=train)
        d = block(nf * 8 * 2, nf * 8, name="center")(max_pool_torch(e5, window=2, stride=2, padding=0))
        d = block(nf * 8 * 2, nf * 8, name="dec5")(jnp.concatenate([d, e5], axis=-1))
        d = block(nf * 8 * 2, nf * 8, name="dec4")(jnp.concatenate([d, e4], axis=-1))
        d = block(nf * 4 * 2, nf * 2, name="dec3")(jnp.concatenate([d, e3], axis=-1))
        d = block(nf * 2 * 2, nf * 2 * 2, name="dec2")(jnp.concatenate([d, e2], axis=-1))
        d = block(nf * 2 * 2, nf, name="dec1")(d)
        return AttentionHead(self.out_channels, self.dtype, name="attention_map")(d)


class ResidualBlockSR(nn.Module):
    """`_Residual_Block_SR`: conv3x3 -> LeakyReLU(0.2) -> conv3x3, plus the input (convs with bias)."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(torch_conv, x.shape[-1], 3, x.shape[-1], padding=1, dtype=self.dtype)
        return conv(name="conv2")(nn.leaky_relu(conv(name="conv1")(x), 0.2)) + x


class ResidualStack(nn.Module):
    """`feature = Sequential(8 x _Residual_Block_SR)`: children "0".."7"."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(NUM_RESIDUAL_BLOCKS):
            x = ResidualBlockSR(self.dtype, name=str(i))(x)
        return x


class Reconstruction(nn.Module):
    """`reconstruction = Sequential(ConvRelu(2*nc + C, num_filters), Conv2d(num_filters, C, 1))`."""

    num_filters: int
    out_channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ConvRelu(self.num_filters, self.dtype, name="0")(x)
        return torch_conv(self.out_channels, 1, x.shape[-1], dtype=self.dtype, name="1")(x)


class FERAttention(nn.Module):
    """FERAtt+Cls (pedrodiamel/ferattention:torchlib/models/ferattentionnet.py `FERAttentionNet`), NHWC.

    Input: [B, 64, 64, 3] in [0, 1] (upstream: a grayscale face replicated to 3 channels, divided by 255, no
    mean/std). Upstream's `num_channels` is the image's channel count, and must be 3: the re-normalisation
    hard-codes three channels. Upstream's `dim` is accepted by its constructor but unused, so absent here.

    Returns `(y, att, g_att, g_ft)` like upstream's forward (4-D ones NHWC):
      y [B, num_classes] logits; att [B, H, W, 3] the attention image (>= 0, before re-normalisation);
      g_att [B, H, W, num_classes] attention logits (before the sigmoid); g_ft [B, H, W, num_classes] features.

    The classifier's layer4 map is sown at `intermediates/netclass/feature_map` (the output of cam_layer
    "netclass.layer4").

    Attributes:
      num_classes: classes; also the channel count of g_att and g_ft (upstream's `num_classes`, 8 for CK+,
        7 for BU-3DFE).
      num_filters: width of the reconstruction ConvRelu (upstream FERAttentionNet's `num_filters`, 32); the
        U-Net's own width is AttentionResNet's default 32 (`UNET_FILTERS`), which upstream never overrides.
      axis_name: pmap axis for cross-replica BatchNorm.
      dtype: computation dtype (None: that of the inputs and parameters).
    """

    num_classes: int = 8
    num_filters: int = 32
    axis_name: str | None = None
    dtype: Any = None

    def _embedding_dim(self) -> int | None:
        """Size of the classifier's embedding (None: a plain PreActResNet18 classifier)."""
        return None

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool) -> tuple[jax.Array, ...]:
        channels = image.shape[-1]
        if channels != len(CIFAR10_MEAN):
            raise ValueError(f"FERAtt takes 3-channel images (gray replicated), got {channels} channels")
        nc = self.num_classes
        g_att = AttentionResNet(nc, self.axis_name, self.dtype, name="attention_map")(image, train=train)

        conv = functools.partial(torch_conv, dtype=self.dtype)
        r = conv(nc, 9, channels, padding=4, name="conv_input")(image)
        h = ResidualStack(self.dtype, name="feature")(r)
        g_ft = conv(nc, 3, nc, padding=1, name="conv_mid")(h) + r

        # Fusion: the reconstruction reads cat[sigmoid(g_att) * g_ft, x, g_att], in this channel order.
        fused = jnp.concatenate([nn.sigmoid(g_att) * g_ft, image.astype(g_ft.dtype), g_att], axis=-1)
        att = Reconstruction(self.num_filters, channels, self.dtype, name="reconstruction")(fused)
        att = nn.relu(BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="conv2_bn")(att, train=train))

        mean = jnp.asarray(CIFAR10_MEAN, att.dtype)
        std = jnp.asarray(CIFAR10_STD, att.dtype)
        att_out = att * (std / 0.5) + (mean - 0.5) / 0.5
        att_pool = nn.avg_pool(att_out, (2, 2), strides=(2, 2), padding="VALID")
        out = PreActResNet18(nc, dim=self._embedding_dim(), axis_name=self.axis_name, dtype=self.dtype,
                             name="netclass")(att_pool, train=train)
        return self._outputs(out, att, g_att, g_ft)

    def _outputs(self, out: Any, att: jax.Array, g_att: jax.Array, g_ft: jax.Array) -> tuple[jax.Array, ...]:
        return out, att, g_att, g_ft


class FERAttentionGMM(FERAttention):
    """FERAtt+Rep+Cls (pedrodiamel/ferattention:torchlib/models/ferattentionnet.py `FERAttentionGMMNet`), NHWC.

    The same network as `FERAttention` with `preactresembnetex18` as classifier: the pooled 512 features go
    through `netclass.linear` to an embedding z of size `dim` (no activation), then `netclass.classification`
    to the logits. Returns `(z, y, att, g_att, g_ft)` like upstream's forward (z [B, dim]).

    Attributes:
      dim: embedding size (upstream's `dim`, `--dim 32` in the recipes).
      (the others as `FERAttention`)
    """

    dim: int = 32

    def _embedding_dim(self) -> int | None:
        return self.dim

    def _outputs(self, out: Any, att: jax.Array, g_att: jax.Array, g_ft: jax.Array) -> tuple[jax.Array, ...]:
        z, y = out
        return z, y, att, g_att, g_ft
