"""Plain-torch reference models whose `state_dict()` keys and shapes equal the upstream ones.

torchvision cannot be installed beside the pinned torch build, so these re-express the upstream modules
with torch.nn only. They exist to prove parity and to verify conversions; they are not training code.
"""

from porting.reference.dan import DAN, AffinityLoss, PartitionLoss
from porting.reference.emotion_fan import ResNetAT
from porting.reference.resnet import ResNet, resnet18, resnet34

__all__ = ["DAN", "AffinityLoss", "PartitionLoss", "ResNet", "ResNetAT", "resnet18", "resnet34"]
