"""FERAtt (pedrodiamel/ferattention:torchlib/models/ferattentionnet.py) in plain torch.

`FERAttentionNet` (`ferattention`) and `FERAttentionGMMNet` (`ferattentiongmm`) with the `preactresnet`
backbone. Facts: shared/reference/feratt.md. Written from those facts; keys, order, shapes and dtypes equal
keys_feratt.txt, keys_feratt_c7.txt and keys_feratt_gmm_c8.txt, aliases included: as upstream, the attention
encoder's modules are registered twice (`attention_map.encoder.*` and `attention_map.conv1..conv5.*`), so the
state_dict holds 216 entries that share their tensor with another. The encoder is torchvision's ResNet34
built with random weights (upstream loads ImageNet weights in the constructor; nothing can be downloaded here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from porting.reference.preact_resnet import PreActResNet
from porting.reference.resnet import resnet34

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class ConvRelu(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, padding=1)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.conv(x))


class DecoderBlockV2(nn.Module):
    """Bilinear x2 upsampling (align_corners=False), then two ConvRelus."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int):
        super().__init__()
        self.cr1 = ConvRelu(in_channels, middle_channels)
        self.cr2 = ConvRelu(middle_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.cr2(self.cr1(x))


class AttentionResNet(nn.Module):
    """U-Net on a ResNet34 whose stem max-pool is 2x2/2; the encoder's modules are registered twice."""

    def __init__(self, out_channels: int, num_filters: int = 32):
        super().__init__()
        self.encoder = resnet34(1000)
        bottom = 512
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Sequential(self.encoder.conv1, self.encoder.bn1, self.encoder.relu, self.pool)
        self.conv2 = self.encoder.layer1
        self.conv3 = self.encoder.layer2
        self.conv4 = self.encoder.layer3
        self.conv5 = self.encoder.layer4
        nf = num_filters
        self.center = DecoderBlockV2(bottom, nf * 8 * 2, nf * 8)
        self.dec5 = DecoderBlockV2(bottom + nf * 8, nf * 8 * 2, nf * 8)
        self.dec4 = DecoderBlockV2(bottom // 2 + nf * 8, nf * 8 * 2, nf * 8)
        self.dec3 = DecoderBlockV2(bottom // 4 + nf * 8, nf * 4 * 2, nf * 2)
        self.dec2 = DecoderBlockV2(bottom // 8 + nf * 2, nf * 2 * 2, nf * 2 * 2)
        self.dec1 = DecoderBlockV2(nf * 2 * 2, nf * 2 * 2, nf)
        self.attention_map = nn.Sequential(ConvRelu(nf, nf), nn.Conv2d(nf, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.conv1(x)
        e2 = self.conv2(e1)
        e3 = self.conv3(e2)
        e4 = self.conv4(e3)
        e5 = self.conv5(e4)
        center = self.center(self.pool(e5))
        d5 = self.dec5(torch.cat([center, e5], 1))
        d4 = self.dec4(torch.cat([d5, e4], 1))
        d3 = self.dec3(torch.cat([d4, e3], 1))
        d2 = self.dec2(torch.cat([d3, e2], 1))
        return self.attention_map(self.dec1(d2))


class ResidualBlockSR(nn.Module):
    """`_Residual_Block_SR`: conv3x3 -> LeakyReLU(0.2) -> conv3x3, plus the input."""

    def __init__(self, num_ft: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_ft, num_ft, 3, 1, padding=1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(num_ft, num_ft, 3, 1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.conv1(x))) + x


def normalize_layer(x: Tensor) -> Tensor:
    """Per channel c: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5, CIFAR-10 constants."""
    return torch.cat([x[:, c:c + 1] * (s / 0.5) + (m - 0.5) / 0.5
                      for c, (m, s) in enumerate(zip(CIFAR10_MEAN, CIFAR10_STD))], 1)


class FERAttentionNet(nn.Module):
    """`ferattention(dim, num_classes, num_channels)`; with `gmm=True`, `ferattentiongmm` (returns z first)."""

    def __init__(self, dim: int = 32, num_classes: int = 8, num_channels: int = 3, num_filters: int = 32,
                 gmm: bool = False):
        super().__init__()
        self.gmm = gmm
        self.attention_map = AttentionResNet(num_classes)
        self.conv_input = nn.Conv2d(num_channels, num_classes, 9, 1, padding=4)
        self.feature = nn.Sequential(*(ResidualBlockSR(num_classes) for _ in range(8)))
        self.conv_mid = nn.Conv2d(num_classes, num_classes, 3, 1, padding=1)
        self.reconstruction = nn.Sequential(ConvRelu(2 * num_classes + num_channels, num_filters),
                                            nn.Conv2d(num_filters, num_channels, 1))
        self.conv2_bn = nn.BatchNorm2d(num_channels)
        self.netclass = PreActResNet(num_classes, num_channels, dim=dim if gmm else None)

    def forward(self, x: Tensor, x_org: Tensor | None = None) -> tuple[Tensor, ...]:
        g_att = self.attention_map(x)
        r = self.conv_input(x)
        g_ft = self.conv_mid(self.feature(r)) + r
        fused = torch.cat((torch.sigmoid(g_att) * g_ft, x, g_att), dim=1)
        att = F.relu(self.conv2_bn(self.reconstruction(fused)))
        out = self.netclass(F.avg_pool2d(normalize_layer(att), 2))
        if self.gmm:
            z, y = out
            return z, y, att, g_att, g_ft
        return out, att, g_att, g_ft


def ferattention(dim: int = 32, num_classes: int = 8, num_channels: int = 3) -> FERAttentionNet:
    return FERAttentionNet(dim, num_classes, num_channels)


def ferattentiongmm(dim: int = 32, num_classes: int = 8, num_channels: int = 3) -> FERAttentionNet:
    return FERAttentionNet(dim, num_classes, num_channels, gmm=True)
