"""MFTN-FER: a multi-stage transformer (MsTN) over ConvNeXt-base's stage maps, NHWC.

Re-expresses XuJ1E/MFTN-FER:models/model.py `Model` and models/mstn.py; facts in
shared/reference/mftn_fer.md sections 1-2. Submodule paths equal the torch keys:

| torch                       | here                                                                     |
|-----------------------------|--------------------------------------------------------------------------|
| `backbone.*`                | `ConvNeXt("base")` (facebookresearch layout) under `backbone`            |
| `mstn.branches.S.B`         | transformer block B of the branch over stage S + 2's tokens              |
| `mstn.branch.B`             | three blocks at 1024 channels upstream builds and never calls: they exist |
|                             | as parameters (created by `initialize`) so every key has a home          |
| `mstn.fuse_layers.S`        | bias-free Dense to 512                                                   |
| `mstn.head`                 | the MsTN classifier                                                      |

Returns `(out1, out2)`: out1 = the ConvNeXt head on the stage-4 map, out2 = the MsTN head; the prediction is
out1 + out2. Drop-path rates of every MsTN branch are torch's linspace(1.0, drop_path_rate, depth): the first
block of each branch is dropped for every sample in training (its output and gradient exactly zero) and fully
active in evaluation, as upstream.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models import initializers
from fer_jax.models.convnext import ConvNeXt, DropPath, torch_linspace, variant_config
from fer_jax.models.convolution import Conv
from fer_jax.models.layers import Dense, gelu, softmax, torch_linear_init

MSTN_DEPTHS = (3, 2, 1)  # blocks over the stage-2, -3 and -4 tokens
FUSE_DIM = 512
UNUSED_DEPTH = 3  # `mstn.branch`
MSTN_LN_EPS = 1e-5  # torch's LayerNorm default, unlike ConvNeXt's 1e-6
# Never called in the forward: no gradient upstream, so its optimizer never touches them.
UNUSED = ("mstn.branch",)

# torch.nn defaults: Linear / Conv2d weights and biases U(+-1/sqrt(fan_in)); LayerNorm ones and zeros.
head_init = initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)  # trunc_normal_(std=.02)


def _dense(features: int, fan_in: int, *, use_bias: bool = True, dtype: Any = None, name: str | None = None,
           kernel_init=None) -> Dense:
    init = torch_linear_init(fan_in)
    return Dense(features, use_bias=use_bias, kernel_init=kernel_init or init, bias_init=init, dtype=dtype,
                 name=name)


class Query(nn.Module):
    """`attn.query`: Sequential(Linear(D, h, bias=False) "0", GELU, Linear(h, D, bias=False) "2")."""

    dim: int
    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        y = gelu(_dense(self.hidden, self.dim, use_bias=False, dtype=self.dtype, name="0")(y))
        return _dense(self.dim, self.hidden, use_bias=False, dtype=self.dtype, name="2")(y)


class SePeAttention(nn.Module):
    """No heads: a = softmax over the tokens of q * k (per channel), out = proj(a * v + pos), with
    [k | v] = kv(y) and pos a depthwise 3x3 convolution of y as its (h, w) map."""

    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, y: jax.Array, size: tuple[int, int]) -> jax.Array:
        b, n, d = y.shape
        fan_pos = 9  # depthwise: one input channel x 3 x 3
        pos_init = torch_linear_init(fan_pos)
        pos = Conv(d, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=d, kernel_init=pos_init,
                   bias_init=pos_init, dtype=self.dtype, name="position")(y.reshape(b, *size, d))
        kv = _dense(2 * d, d, use_bias=False, dtype=self.dtype, name="kv")(y)
        k, v = kv[..., :d], kv[..., d:]
        q = Query(d, max(d // 16, 32), self.dtype, name="query")(y)
        a = softmax(q * k, axis=1)
        return _dense(d, d, dtype=self.dtype, name="proj")(a * v + pos.reshape(b, n, d))


class Mlp(nn.Module):
    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = gelu(_dense(4 * self.dim, self.dim, dtype=self.dtype, name="fc1")(x))
        return _dense(self.dim, 4 * self.dim, dtype=self.dtype, name="fc2")(x)


class TransformerBlock(nn.Module):
    """x + DropPath(SePe(LN1(x))), then x + DropPath(MLP(LN2(x))); one DropPath, two independent draws."""

    dim: int
    drop_path: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, size: tuple[int, int], *, train: bool) -> jax.Array:
        norm = functools.partial(nn.LayerNorm, epsilon=MSTN_LN_EPS, use_fast_variance=False, dtype=self.dtype)
        drop = DropPath(self.drop_path, name="drop_path")
        x = x + drop(SePeAttention(self.dim, self.dtype, name="attn")(norm(name="norm1")(x), size), train=train)
        return x + drop(Mlp(self.dim, self.dtype, name="mlp")(norm(name="norm2")(x)), train=train)


class Branch(nn.Module):
    """`mstn.branches.S` (or `mstn.branch`): blocks "0", "1", ... with rates linspace(1.0, rate, depth)."""

    dim: int
    depth: int
    drop_path_rate: float
    dtype: Any = None

    @nn.compact
    def __call__(self, tokens: jax.Array, size: tuple[int, int], *, train: bool) -> jax.Array:
        for i, rate in enumerate(torch_linspace(1.0, self.drop_path_rate, self.depth)):
            tokens = TransformerBlock(self.dim, rate, self.dtype, name=str(i))(tokens, size, train=train)
        return tokens


class Branches(nn.Module):
    """torch's `mstn.branches` ModuleList; `__call__(tokens, size, i)` runs branch "i"."""

    dims: tuple[int, ...]
    drop_path_rate: float
    dtype: Any = None

    @nn.compact
    def __call__(self, tokens: jax.Array, size: tuple[int, int], i: int, *, train: bool) -> jax.Array:
        return Branch(self.dims[i], MSTN_DEPTHS[i], self.drop_path_rate, self.dtype, name=str(i))(
            tokens, size, train=train)


class FuseLayers(nn.Module):
    """torch's `mstn.fuse_layers` ModuleList of bias-free Linear(C_i, 512); `__call__(x, i)` runs "i"."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, i: int) -> jax.Array:
        return _dense(FUSE_DIM, x.shape[-1], use_bias=False, dtype=self.dtype, name=str(i))(x)


class MsTN(nn.Module):
    """Per stage map: row-major tokens -> its branch -> fuse to 512 -> mean over tokens; the sum over the
    stages -> head."""

    num_classes: int
    dims: tuple[int, ...]
    drop_path_rate: float
    dtype: Any = None

    def setup(self):
        self.branch = Branch(self.dims[-1], UNUSED_DEPTH, self.drop_path_rate, self.dtype)
        self.branches = Branches(self.dims, self.drop_path_rate, self.dtype)
        self.fuse_layers = FuseLayers(self.dtype)
        self.head = _dense(self.num_classes, FUSE_DIM, dtype=self.dtype, kernel_init=head_init)

    def __call__(self, maps: list[jax.Array], *, train: bool) -> jax.Array:
        total = 0.0
        for i, x in enumerate(maps):
            b, h, w, c = x.shape
            tokens = self.branches(x.reshape(b, h * w, c), (h, w), i, train=train)
            total = total + jnp.mean(self.fuse_layers(tokens, i), axis=1)
        return self.head(total)

    def create_unused(self, dtype: Any) -> None:
        """Creates `mstn.branch` (never called in the forward) at init."""
        self.branch(jnp.zeros((1, 1, self.dims[-1]), dtype), (1, 1), train=False)


class MFTN(nn.Module):
    """MFTN-FER (XuJ1E/MFTN-FER:models/model.py `Model(num_classes, drop_path_rate=0.25)`), NHWC.

    Attributes:
      num_classes: 7 (RAF-DB, AffectNet-7, ExpW) or 8 (AffectNet-8).
      drop_path_rate: the backbone's linspace(0, rate) and the end of every MsTN branch's linspace(1.0, rate).
      variant: the ConvNeXt variant ("base" upstream; "atto" for CPU-sized recipes and tests).
      dtype: computation dtype (None: that of the inputs and parameters).
      axis_name: unused (no BatchNorm); the training loop passes it to every network.
    """

    num_classes: int = 7
    drop_path_rate: float = 0.25
    variant: str = "base"
    dtype: Any = None
    axis_name: str | None = None

    def setup(self):
        self.backbone = ConvNeXt(self.variant, self.num_classes, self.drop_path_rate, dtype=self.dtype)
        dims = variant_config(self.variant)[1]
        self.mstn = MsTN(self.num_classes, dims[1:], self.drop_path_rate, self.dtype)

    def __call__(self, image: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """(out1 [B, num_classes] the ConvNeXt head, out2 [B, num_classes] the MsTN head)."""
        _, x2, x3, x4 = self.backbone.stages_out(image, train=train)
        _, out1 = self.backbone.forward_head(x4)
        return out1, self.mstn([x2, x3, x4], train=train)

    def initialize(self, image: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Init entry point: the forward, and `mstn.branch`, which the forward never calls."""
        out = self(image, train=train)
        self.mstn.create_unused(out[0].dtype)
        return out

