"""MFTN-FER (XuJ1E/MFTN-FER:models/model.py `Model`, models/mstn.py) in plain torch.nn.

Facts: shared/reference/mftn_fer.md sections 1-2. Written from those facts; keys, order and shapes of
`MFTN(7)` equal keys_mftn_fer.txt (`MFTN(8)`: keys_mftn_fer_c8.txt).

- `backbone`: the facebookresearch ConvNeXt-base (no CC attention); its stage-2, -3 and -4 maps feed the
  MsTN, and head(norm(mean of stage 4)) is `out1`.
- `mstn`: one branch of pre-norm transformer blocks per stage (3, 2 and 1 blocks at 256, 512 and 1024
  channels), SePe attention (no heads: a per-channel softmax over the tokens of q * k, plus a depthwise 3x3
  positional term), bias-free fuse layers to 512, mean over tokens, **sum** over stages, `head` -> `out2`.
  `mstn.branch` (3 blocks at 1024) is built but never called, as upstream.
- Drop-path rates of every branch are linspace(1.0, drop_path_rate, depth): the first block of a branch is
  dropped for every sample in training and fully active in evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from porting.reference.convnext import VARIANTS, ConvNeXt, DropPath

MSTN_DEPTHS = (3, 2, 1)
FUSE_DIM = 512


class SePeAttention(nn.Module):
    """q = MLP(y) (no biases), [k | v] = kv(y), a = softmax over tokens of q * k, out = proj(a * v + pos(y))."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = max(dim // 16, 32)
        self.query = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False))
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.position = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        b, n, d = y.shape
        pos = self.position(y.transpose(1, 2).reshape(b, d, *size)).flatten(2).transpose(1, 2)
        k, v = self.kv(y).chunk(2, dim=-1)
        a = torch.softmax(self.query(y) * k, dim=1)
        return self.proj(a * v + pos)


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """x + DropPath(SePe(LN1(x))), then x + DropPath(MLP(LN2(x))); LayerNorms with torch's eps 1e-5."""

    def __init__(self, dim: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SePeAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _branch(dim: int, depth: int, drop_path_rate: float) -> nn.ModuleList:
    rates = torch.linspace(1.0, drop_path_rate, depth, device="cpu").tolist()
    return nn.ModuleList(TransformerBlock(dim, r) for r in rates)


class MsTN(nn.Module):
    """Over the stage-2, -3 and -4 maps of widths `dims` (ConvNeXt-base: 256, 512, 1024)."""

    def __init__(self, num_classes: int, drop_path_rate: float, dims: tuple[int, ...] = (256, 512, 1024)):
        super().__init__()
        self.branch = _branch(dims[-1], 3, drop_path_rate)  # never called (upstream)
        self.branches = nn.ModuleList(_branch(d, n, drop_path_rate) for d, n in zip(dims, MSTN_DEPTHS))
        self.fuse_layers = nn.ModuleList(nn.Linear(d, FUSE_DIM, bias=False) for d in dims)
        self.head = nn.Linear(FUSE_DIM, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)

    def forward(self, maps: list[Tensor]) -> Tensor:
        total = 0
        for x, blocks, fuse in zip(maps, self.branches, self.fuse_layers):
            size = tuple(x.shape[-2:])
            t = x.flatten(2).transpose(1, 2)  # row-major tokens [B, H*W, C]
            for block in blocks:
                t = block(t, size)
            total = total + fuse(t).mean(1)
        return self.head(total)


class MFTN(nn.Module):
    """Returns `(out1, out2)`: the ConvNeXt head's and the MsTN head's logits (prediction: their sum).
    `variant` is "base" upstream; smaller ConvNeXt variants (widths scaled alike) serve CPU-sized tests."""

    def __init__(self, num_classes: int = 7, drop_path_rate: float = 0.25, variant: str = "base"):
        super().__init__()
        self.backbone = ConvNeXt(variant, num_classes, drop_path_rate)
        self.mstn = MsTN(num_classes, drop_path_rate, VARIANTS[variant][1][1:])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _, x2, x3, x4 = self.backbone.forward_stages(x)
        out1 = self.backbone.head(self.backbone.norm(x4.mean([-2, -1])))
        return out1, self.mstn([x2, x3, x4])
