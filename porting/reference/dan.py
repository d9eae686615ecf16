"""DAN (yaoing/DAN:networks/dan.py) and its two auxiliary losses (yaoing/DAN:rafdb.py) in plain torch.

Facts: shared/reference/dan.md. Written from those facts; keys and shapes equal keys_dan.txt.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from porting.reference.resnet import resnet18


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int]) -> nn.Sequential:
    pad = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad), nn.BatchNorm2d(cout))


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1x1 = _conv_bn(512, 256, (1, 1))
        self.conv_3x3 = _conv_bn(256, 512, (3, 3))
        self.conv_1x3 = _conv_bn(256, 512, (1, 3))
        self.conv_3x1 = _conv_bn(256, 512, (3, 1))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1x1(x)
        y = self.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y))
        return x * y.sum(dim=1, keepdim=True)


class ChannelAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.attention = nn.Sequential(nn.Linear(512, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                                       nn.Linear(32, 512), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        v = self.gap(x).flatten(1)
        return v * self.attention(v)


class CrossAttentionHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.sa = SpatialAttention()
        self.ca = ChannelAttention()

    def forward(self, x: Tensor) -> Tensor:
        return self.ca(self.sa(x))


class DAN(nn.Module):
    def __init__(self, num_class: int = 7, num_head: int = 4):
        super().__init__()
        self.features = nn.Sequential(*list(resnet18().children())[:-2])
        self.num_head = num_head
        for i in range(num_head):
            setattr(self, f"cat_head{i}", CrossAttentionHead())
        self.sig = nn.Sigmoid()
        self.fc = nn.Linear(512, num_class)
        self.bn = nn.BatchNorm1d(num_class)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.features(x)
        heads = torch.stack([getattr(self, f"cat_head{i}")(x) for i in range(self.num_head)], dim=1)
        if heads.size(1) > 1:
            heads = F.log_softmax(heads, dim=1)
        out = self.bn(self.fc(heads.sum(dim=1)))
        return out, x, heads


class AffinityLoss(nn.Module):
    """Distance of each pooled feature to its class center, over the summed variance of the centers."""

    def __init__(self, num_class: int = 8, feat_dim: int = 512):
        super().__init__()
        self.num_class = num_class
        self.centers = nn.Parameter(torch.randn(num_class, feat_dim))

    def forward(self, feat: Tensor, labels: Tensor) -> Tensor:
        f = feat.mean(dim=(2, 3))
        b = f.size(0)
        dist = (f.pow(2).sum(1, keepdim=True).expand(b, self.num_class)
                + self.centers.pow(2).sum(1, keepdim=True).expand(self.num_class, b).t())
        dist = torch.addmm(dist, f, self.centers.t(), beta=1, alpha=-2)
        mask = labels.unsqueeze(1) == torch.arange(self.num_class, device=labels.device).unsqueeze(0)
        dist = dist * mask.to(dist.dtype) / self.centers.var(dim=0).sum()
        return dist.clamp(min=1e-12, max=1e12).sum() / b


class PartitionLoss(nn.Module):
    def forward(self, heads: Tensor) -> Tensor:
        num_head = heads.size(1)
        if num_head == 1:
            return heads.new_zeros(())
        var = heads.var(dim=1).mean()
        return torch.log(1 + num_head / (var + sys.float_info.epsilon))
