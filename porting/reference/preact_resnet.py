"""FERAtt's PreActResNet18 (pedrodiamel/ferattention:torchlib/models/preactresnet.py) in plain torch.

Facts: shared/reference/backbones.md section 3. Written from those facts; keys, order, shapes and dtypes equal
keys_preactresnet18.txt (`preactresnet18`) and the `netclass.*` entries of keys_feratt_gmm_c8.txt
(`preactresembnetex18`: `PreActResEmbExNet` with an embedding `linear` and a `classification` layer).
"""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

STAGE_SIZES = (2, 2, 2, 2)


class PreActBlock(nn.Module):
    """Pre-activation BasicBlock; the projection shortcut (if any) reads relu(bn1(x)), the identity x."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """`preactresnet18(num_classes, num_channels)`; with `dim`, `preactresembnetex18(dim, ...)` -> (z, y)."""

    def __init__(self, num_classes: int = 8, num_channels: int = 3, dim: int | None = None,
                 initial_channels: int = 64):
        super().__init__()
        self.dim = dim
        self.conv1 = nn.Conv2d(num_channels, initial_channels, 3, 1, padding=1, bias=False)
        in_planes = initial_channels
        for k, blocks in enumerate(STAGE_SIZES, start=1):
            planes = initial_channels * 2 ** (k - 1)
            stride = 1 if k == 1 else 2
            mods = [PreActBlock(in_planes, planes, stride)] + [PreActBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{k}", nn.Sequential(*mods))
            in_planes = planes
        if dim is None:
            self.linear = nn.Linear(in_planes, num_classes)
        else:
            self.linear = nn.Linear(in_planes, dim)
            self.classification = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))  # no final BN + ReLU
        if self.dim is None:
            return out
        return out, self.classification(out)


def preactresnet18(num_classes: int = 8, num_channels: int = 3) -> PreActResNet:
    return PreActResNet(num_classes, num_channels)


def preactresembnetex18(dim: int = 32, num_classes: int = 8, num_channels: int = 3) -> PreActResNet:
    return PreActResNet(num_classes, num_channels, dim=dim)
