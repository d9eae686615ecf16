"""Plain-torch reference models whose `state_dict()` keys and shapes equal the upstream ones.

torchvision cannot be installed beside the pinned torch build, so these re-express the upstream modules
with torch.nn only. They exist to prove parity and to verify conversions; they are not training code.
"""

from porting.reference.convnext import ConvNeXt, TimmConvNeXt
from porting.reference.dan import DAN, AffinityLoss, PartitionLoss
from porting.reference.emotion_fan import ResNetAT
from porting.reference.faer import FAER, CCAttention
from porting.reference.mftn import MFTN
from porting.reference.feratt import FERAttentionNet, ferattention, ferattentiongmm
from porting.reference.preact_resnet import PreActResNet, preactresembnetex18, preactresnet18
from porting.reference.resnet import ResNet, resnet18, resnet34

__all__ = ["AffinityLoss", "CCAttention", "ConvNeXt", "DAN", "FAER", "FERAttentionNet", "MFTN", "PartitionLoss",
           "PreActResNet", "ResNet", "ResNetAT", "TimmConvNeXt", "ferattention", "ferattentiongmm",
           "preactresembnetex18", "preactresnet18", "resnet18", "resnet34"]
