"""ConvNeXt in plain torch.nn, in two key layouts with the same arithmetic.

- `ConvNeXt`: the facebookresearch layout (`downsample_layers`, `stages.S.B.dwconv`, `pwconv1/2`, `gamma`,
  `norm`, `head`) with the forward of XUJ1Er/FAER:FaceAttribute/Baseline/models/convnext.py: it returns
  `(feature, logits)`. Keys equal keys_faer_baseline.txt for `ConvNeXt("base", 40)`.
- `TimmConvNeXt`: timm 1.0's `convnext_*` layout (`stem.0/1`, `stages.S.downsample.0/1` for S = 1..3,
  `stages.S.blocks.B.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}`, `head.norm`, `head.fc`), returning logits
  only, as timm's `ConvNeXt.forward`. This is the layout of the pretrained files FAER and MFTN-FER load
  (under a `net.` prefix) and of timm's own checkpoints.

Facts: shared/reference/backbones.md section 4, faer.md; timm's layout read from
huggingface/pytorch-image-models:timm/models/convnext.py. Stochastic depth follows timm's `DropPath`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

VARIANTS = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),  # timm's atto depths and widths, standard block (CPU recipes)
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}
EPS = 1e-6


class DropPath(nn.Module):
    """timm's DropPath: per-sample Bernoulli(1 - p) mask over the first axis, scaled by 1 / (1 - p) when
    1 - p > 0; identity in eval."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0:
            mask.div_(keep)
        return x * mask


class ChannelsFirstLayerNorm(nn.Module):
    """facebookresearch's LayerNorm(data_format="channels_first"): over C of NCHW, biased variance."""

    def __init__(self, dim: int, eps: float = EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TimmLayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: F.layer_norm over C after permuting NCHW to NHWC."""

    def __init__(self, dim: int):
        super().__init__(dim, eps=EPS)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _rates(depths, drop_path_rate: float) -> list[float]:
    return [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]


class Block(nn.Module):
    """facebookresearch block: dwconv -> LN -> pwconv1 -> GELU -> pwconv2 -> x gamma -> DropPath -> + x."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


def init_weights(module: nn.Module) -> None:
    """Upstream's `_init_weights`: trunc_normal(std .02) weights and zero biases of Conv2d / Linear."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.constant_(module.bias, 0)


class ConvNeXt(nn.Module):
    """facebookresearch ConvNeXt with FAER Baseline's forward: `(feature, logits)`.

    Subclasses add layers between the last stage and the pooling by overriding `_neck` (built, and so
    registered, between `stages` and `norm`, which keeps upstream's key order) and `forward_features`.
    """

    def __init__(self, variant: str = "base", num_classes: int = 1000, drop_path_rate: float = 0.0,
                 in_chans: int = 3):
        super().__init__()
        depths, dims = VARIANTS[variant]
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))]
            + [nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
               for i in range(3)])
        rates, cur = _rates(depths, drop_path_rate), 0
        self.stages = nn.ModuleList()
        for dim, depth in zip(dims, depths):
            self.stages.append(nn.Sequential(*(Block(dim, rates[cur + j]) for j in range(depth))))
            cur += depth
        self._neck(dims[-1])
        self.norm = nn.LayerNorm(dims[-1], eps=EPS)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(init_weights)

    def _neck(self, dim: int) -> None:
        """Registers the layers between the last stage and the pooling (none here)."""

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The four stage outputs (NCHW)."""
        outs = []
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.forward_features(x).mean([-2, -1])
        return feature, self.head(self.norm(feature))


class TimmBlock(nn.Module):
    """timm ConvNeXtBlock (conv_mlp=False): the same arithmetic under timm's names."""

    def __init__(self, dim: int, drop_path: float = 0.0):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        y = self.mlp.fc2(self.mlp.act(self.mlp.fc1(y))).permute(0, 3, 1, 2)
        y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(y) + x


class TimmConvNeXt(nn.Module):
    """timm 1.0 `convnext_<variant>` module layout; returns logits (pool -> head.norm -> head.fc).

    Stage 0 has no `downsample` (timm makes it an Identity: stride 1, same width), stages 1..3 have
    `downsample = Sequential(LayerNorm2d, Conv2d 2x2/2)`; `gamma` is a parameter of each block.
    """

    def __init__(self, variant: str = "base", num_classes: int = 1000, drop_path_rate: float = 0.0,
                 in_chans: int = 3):
        super().__init__()
        depths, dims = VARIANTS[variant]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), TimmLayerNorm2d(dims[0]))
        rates, cur = _rates(depths, drop_path_rate), 0
        self.stages = nn.Sequential()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stage = nn.Module()
            stage.downsample = (nn.Identity() if i == 0 else
                                nn.Sequential(TimmLayerNorm2d(dims[i - 1]),
                                              nn.Conv2d(dims[i - 1], dim, kernel_size=2, stride=2)))
            stage.blocks = nn.Sequential(*(TimmBlock(dim, rates[cur + j]) for j in range(depth)))
            self.stages.append(stage)
            cur += depth
        self.head = nn.Module()
        self.head.norm = TimmLayerNorm2d(dims[-1])
        self.head.fc = nn.Linear(dims[-1], num_classes)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(stage.downsample(x))
        x = self.head.norm(x.mean((2, 3), keepdim=True)).flatten(1)
        return self.head.fc(x)
