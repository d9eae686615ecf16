"""The plain-torch reference models have exactly the upstream state_dict (keys, order, shapes, dtypes).

The listings in fixtures/upstream_keys/ were generated from the upstream classes (shared/reference/).
"""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch

from porting import reference

KEYS = pathlib.Path(__file__).parent / "fixtures" / "upstream_keys"


def read_listing(name: str) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in (KEYS / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = (part.strip() for part in line.split("  ")[:3])
        rows.append((key, ast.literal_eval(shape), dtype))
    return rows


@pytest.mark.parametrize("listing, build", [
    ("keys_dan.txt", lambda: reference.DAN(num_class=7, num_head=4)),
    ("keys_dan_c8.txt", lambda: reference.DAN(num_class=8, num_head=4)),
    ("keys_resnet18_torchvision.txt", lambda: reference.resnet18(1000)),
    ("keys_resnet34_torchvision.txt", lambda: reference.resnet34(1000)),
    ("keys_emotion_fan.txt", lambda: reference.ResNetAT(num_class=7, at_type="relation")),
    ("keys_emotion_fan_baseline_resnet18.txt", lambda: reference.resnet18(7)),
])
def test_state_dict_equals_upstream_listing(listing, build):
    expected = read_listing(listing)
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in build().state_dict().items()]
    assert got == expected


def test_dan_parameter_count_equals_upstream():
    # keys_dan.txt header: 19,723,733 trainable elements for 7 classes.
    assert sum(p.numel() for p in reference.DAN(7, 4).parameters()) == 19_723_733
    assert isinstance(reference.DAN().features[3], torch.nn.MaxPool2d)
