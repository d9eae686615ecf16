"""FAER (XUJ1Er/FAER:FaceAttribute/FAER/models/convnext.py) in plain torch.nn.

Facts: shared/reference/faer.md sections 1-2. Written from those facts and the upstream source; keys,
order, shapes and dtypes of `FAER("base", 40)` equal keys_faer.txt.
"""

from __future__ import annotations

from torch import Tensor, nn

from porting.reference.convnext import ConvNeXt


class CCAttention(nn.Module):
    """Contextual channel attention, upstream's order of operations (faer.md section 2)."""

    def __init__(self, dim: int, kernel_size: int = 7, groups: int = 4, reduction: int = 8):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Linear(dim, dim // reduction), nn.GELU(), nn.Linear(dim // reduction, dim))
        self.value = nn.Linear(dim, dim)
        self.depthwise = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim)  # torch default eps 1e-5
        self.softmax = nn.Softmax(dim=1)  # over the H*W tokens of [B, N, C]

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        short = x.clone()
        perm = x.permute(0, 2, 3, 1)
        value = self.value(perm).reshape(b, -1, c)
        key = (self.mlp(perm) * self.pool(x).permute(0, 2, 3, 1)).reshape(b, -1, c)
        query = self.norm(self.act(self.depthwise(x).permute(0, 2, 3, 1))).reshape(b, -1, c)
        attn = self.softmax(query + key) * value
        return attn.reshape(b, h, w, c).permute(0, 3, 1, 2) + short


class FAER(ConvNeXt):
    """`convnext_base(num_classes, drop_path_rate)` of FAER: ConvNeXt + `attention` before the pooling;
    returns `(feature, logits)`, feature = mean of the CC-attention output (before `norm`)."""

    def __init__(self, variant: str = "base", num_classes: int = 40, drop_path_rate: float = 0.25,
                 in_chans: int = 3):
        super().__init__(variant, num_classes, drop_path_rate, in_chans)

    def _neck(self, dim: int) -> None:
        self.attention = CCAttention(dim)  # initialised with the rest by ConvNeXt's init_weights

    def forward_features(self, x: Tensor) -> Tensor:
        return self.attention(super().forward_features(x))
