"""Emotion-FAN's `ResNet_AT` (Open-Debin/Emotion-FAN:basic_code/networks.py) in plain torch.

Facts: shared/reference/emotion_fan.md. Written from those facts; keys, order, shapes and dtypes equal
keys_emotion_fan.txt. `forward` keeps upstream's string-switched calling convention, so a test can call
it exactly as the upstream scripts do (`fan_afew_traintest.py`: `val`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from porting.reference.resnet import BasicBlock

AT_TYPES = ("self", "relation")  # upstream 'self-attention', 'self_relation-attention'
NUM_FRAMES = 3  # upstream's training forward reads exactly three frames (num_pair = 3)


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(inplanes, planes, stride),
                         *(BasicBlock(planes, planes) for _ in range(blocks - 1)))


class ResNetAT(nn.Module):
    """`resnet18_at(at_type=...)`: ResNet18 backbone, frame attention `alpha`, relation attention `beta`."""

    def __init__(self, num_class: int = 7, at_type: str = "relation"):
        super().__init__()
        if at_type not in AT_TYPES:
            raise ValueError(f"at_type must be one of {AT_TYPES}, got {at_type!r}")
        self.at_type = at_type
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = _layer(64, 64, 2, 1)
        self.layer2 = _layer(64, 128, 2, 2)
        self.layer3 = _layer(128, 256, 2, 2)
        self.layer4 = _layer(256, 512, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.dropout2 = nn.Dropout(0.6)
        self.alpha = nn.Sequential(nn.Linear(512, 1), nn.Sigmoid())
        self.beta = nn.Sequential(nn.Linear(1024, 1), nn.Sigmoid())
        self.pred_fc1 = nn.Linear(512, num_class)
        self.pred_fc2 = nn.Linear(1024, num_class)

    def backbone(self, x: Tensor) -> Tensor:
        """conv1 .. layer4 and the global average pool: [N, 3, H, W] -> [N, 512]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor | str = "", phrase: str = "train", AT_level: str = "first_level",  # noqa: N803
                vectors: Tensor | str = "", vm: Tensor | str = "", alphas_from1: Tensor | str = "",
                index_matrix: Tensor | str = "") -> Tensor | tuple[Tensor, Tensor]:
        if phrase == "train":
            return self._train_forward(x)
        if phrase != "eval":
            raise ValueError(f"phrase must be 'train' or 'eval', got {phrase!r}")
        if AT_level == "first_level":
            f = self.backbone(x)
            return f, self.alpha(self.dropout(f))
        if AT_level == "pred":
            assert self.at_type == "self"
            return self.pred_fc1(self.dropout(vm))
        if AT_level == "second_level":
            assert self.at_type == "relation"
            return self._second_level(vectors, vm, alphas_from1, index_matrix)
        raise ValueError(f"AT_level must be 'first_level', 'second_level' or 'pred', got {AT_level!r}")

    def _train_forward(self, x: Tensor) -> Tensor:
        """x [B, 3, H, W, T] (frame axis last): one backbone pass per frame, then attention."""
        fs = [self.backbone(x[..., i]) for i in range(NUM_FRAMES)]
        alphas = [self.alpha(self.dropout(f)) for f in fs]
        f_stack, a_stack = torch.stack(fs, dim=2), torch.stack(alphas, dim=2)  # [B,512,T], [B,1,T]
        vm = f_stack.mul(a_stack).sum(2).div(a_stack.sum(2))
        if self.at_type == "self":
            return self.pred_fc1(self.dropout(vm))
        gs = [torch.cat([f, vm], dim=1) for f in fs]
        betas = [self.beta(self.dropout(g)) for g in gs]
        g_stack, ab = torch.stack(gs, dim=2), torch.stack(betas, dim=2) * a_stack
        out = g_stack.mul(ab).sum(2).div(ab.sum(2))
        return self.pred_fc2(self.dropout2(out))

    def _second_level(self, vectors: Tensor, vm: Tensor, alphas: Tensor, index_matrix: Tensor) -> Tensor:
        """Relation attention over all videos: index_matrix [V, N] is 0/1, row v marks video v's frames."""
        g = torch.cat([vectors, index_matrix.t().mm(vm)], dim=1)
        betas = self.beta(self.dropout(g))
        # Eval formula as upstream: α-only numerator, α·β denominator.
        numerator = index_matrix.mm(g.mul(alphas))
        return self.pred_fc2(self.dropout2(numerator.div(index_matrix.mm(alphas.mul(betas)))))
