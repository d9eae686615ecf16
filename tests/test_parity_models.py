"""Forward parity of every registered network against its plain-torch reference, driven by the specs.

For each case: eval mode and (where the forward is deterministic) train mode, float64 and float32 on both
sides, every declared output and, in train mode, every updated BatchNorm running statistic. Tolerances:
tests/parity.py. A network adds `Case`s here; its quirks (methods, losses, optimizer steps) get their own
test file.
"""

from __future__ import annotations

import pytest

import parity
from parity import Case

CASES = [
    Case("dan", {"num_class": 7, "num_head": 4}),
    Case("dan", {"num_class": 8, "num_head": 2}, label="dan_c8_h2"),
    Case("dan", {"num_class": 7, "num_head": 1}, label="dan_h1"),
    Case("resnet18", {"num_classes": 1000}),
    Case("resnet18", {"num_classes": None}, label="resnet18_backbone"),
    Case("resnet34", {"num_classes": 7}),
    # The training forward over frame groups; in train mode it draws dropout (test_parity_emotion_fan.py).
    Case("emotion_fan", {"num_class": 7, "at_type": "relation"}, batch=2, train_forward=False,
         label="emotion_fan_relation"),
    Case("emotion_fan", {"num_class": 7, "at_type": "self"}, batch=2, train_forward=False,
         label="emotion_fan_self"),
]
# At the upstream size, ResNet18's trunk is DAN's `features` (compared as DAN's `feat`, the 7x7 layer4 map, and
# with every running statistic in train mode) and Emotion-FAN's; what ResNet18 adds, the pool over the map and
# `fc`, does not depend on the size and is compared at 64 px above. (A ResNet18 case here took ~38 s of the suite.)
FULL_SIZE = [Case("dan", {"num_class": 7, "num_head": 4}, size=224, batch=4),
             Case("emotion_fan", {"num_class": 7, "at_type": "relation"}, size=224, batch=2, train_forward=False)]


def _modes(cases):
    return [pytest.param(c, train, id=f"{c.id}-{'train' if train else 'eval'}")
            for c in cases for train in (False, True) if c.train_forward or not train]


@pytest.mark.parametrize("case, train", _modes(CASES))
def test_forward(case, train):
    parity.assert_forward(parity.compare_forward(case, train))


@pytest.mark.slow
@pytest.mark.parametrize("case, train", _modes(FULL_SIZE))
def test_forward_full_size(case, train):
    """The upstream input size (224x224: a 7x7 layer4 map)."""
    parity.assert_forward(parity.compare_forward(case, train))
