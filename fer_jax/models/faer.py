"""FAER: ConvNeXt with contextual channel attention (CC Attention), for face attributes and expressions.

Xu Jie et al., Journal of Computer Applications 45(1):253-260, 2025. Re-expresses
XUJ1Er/FAER:FaceAttribute/FAER/models/convnext.py (`CCAttention`, and `ConvNeXt` built by `convnext_base`);
facts in shared/reference/faer.md sections 1-2. The paper's baseline (no CC attention) is
`fer_jax.models.convnext.ConvNeXt` with the same hyperparameters.

Keys as upstream's: the ConvNeXt body at the root (`downsample_layers.*`, `stages.*`), then `attention.*`
(`mlp.0`, `mlp.2`, `value`, `depthwise`, `norm`), `norm`, `head`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models.convnext import ConvNeXt, variant_config, weight_init
from fer_jax.models.convolution import Conv
from fer_jax.models.layers import Dense, gelu, softmax

CC_LN_EPS = 1e-5  # CC attention's nn.LayerNorm(dim) keeps torch's default epsilon (ConvNeXt's are 1e-6)


class Mlp(nn.Module):
    """`mlp = Sequential(Linear(C, C/r), GELU(), Linear(C/r, C))`: children "0" and "2"."""

    dim: int
    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = functools.partial(Dense, kernel_init=weight_init, dtype=self.dtype)
        return dense(self.dim, name="2")(gelu(dense(self.hidden, name="0")(x)))


class CCAttention(nn.Module):
    """Contextual channel attention on a map X [B, H, W, C], in upstream's order of operations:

    V = value(X); K = mlp(X) * mean_HW(X); Q = norm(GELU(depthwise(X))), where `depthwise` is a *grouped*
    7x7 conv (pad 3, `groups` groups, despite upstream's name) and `norm` a LayerNorm with epsilon 1e-5;
    A = softmax over the H*W tokens (per channel) of Q + K, times V; output A + X. Both GELUs are exact.

    Attributes:
      dim: channels C.
      groups: groups of the 7x7 conv (upstream: 4).
      reduction: hidden width of `mlp` is dim // reduction (upstream: 8).
      dtype: computation dtype (None: that of the inputs and parameters).
    """

    dim: int
    groups: int = 4
    reduction: int = 8
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        if c != self.dim:
            raise ValueError(f"CCAttention(dim={self.dim}) got {c} channels")
        value = Dense(self.dim, kernel_init=weight_init, dtype=self.dtype, name="value")(x)
        key = Mlp(self.dim, self.dim // self.reduction, self.dtype, name="mlp")(x)
        key = key * jnp.mean(x, axis=(1, 2), keepdims=True).astype(key.dtype)
        query = Conv(self.dim, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=self.groups,
                     kernel_init=weight_init, dtype=self.dtype, name="depthwise")(x)
        query = nn.LayerNorm(epsilon=CC_LN_EPS, use_fast_variance=False, dtype=self.dtype, name="norm")(
            gelu(query))
        tokens = (b, h * w, c)  # row-major (h, w) order, as torch's reshape of the NHWC permute
        attn = softmax((query + key).reshape(tokens), axis=1) * value.reshape(tokens)
        return attn.reshape(b, h, w, c) + x


class FAER(ConvNeXt):
    """FAER: ConvNeXt + CC attention before the pooling, NHWC.

    Re-expresses XUJ1Er/FAER:FaceAttribute/FAER/models/convnext.py `convnext_base(num_classes=40,
    drop_path_rate=0.25)`. Returns `(feature, logits)`: feature is the spatial mean of the CC-attention
    output (before the final norm), logits = head(norm(feature)). `intermediates/feature_map` is the
    CC-attention output. The CelebA head has 40 outputs; the expression heads 7 (or 8).

    Attributes (besides ConvNeXt's `in_chans`, `dtype`):
      variant: ConvNeXt variant ("base" upstream).
      num_classes: outputs of `head`.
      drop_path_rate: stochastic depth of the last block (CC attention and head have none).
    """

    variant: str = "base"
    num_classes: int = 40
    drop_path_rate: float = 0.25

    def setup(self):
        super().setup()
        self.attention = CCAttention(variant_config(self.variant)[1][-1], dtype=self.dtype)

    def forward_features(self, image: jax.Array, *, train: bool) -> jax.Array:
        """The last stage output through CC attention (upstream's `forward_features`)."""
        return self.attention(super().forward_features(image, train=train))
