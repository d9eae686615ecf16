"""Emotion-FAN files through porting/convert.py and export.py, in the exact upstream containers.

- Training saves (`util.save_checkpoint`): `./model/<at_type>_<epoch>_<acc>`, no extension, a dict
  {epoch, state_dict (every key `module.`), accuracy (0-dim tensor)}; the attention type is only in the
  file name.
- The FER+ ResNet18 every script starts from: {state_dict: `module.` + torchvision names, fc included}.
(shared/reference/checkpoints.md, Emotion-FAN.)
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
import torch

import parity
import torch_helpers
from fer_jax import load_pretrained, models, pretrained
from porting import convert, export


def save_fan(model: torch.nn.Module, path, epoch: int = 12, accuracy: float = 0.5432) -> None:
    torch.save({"epoch": epoch, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "accuracy": torch.tensor(accuracy)}, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fan")
    model = parity.reference_model(parity.Case("emotion_fan", {"num_class": 7}), seed=21, size=64)
    save_fan(model, d / "self-attention_12_0.5432")
    save_fan(model, d / "self_relation-attention_7_0.4987", epoch=7, accuracy=0.4987)
    save_fan(model, d / "fan_renamed.pth")
    ferplus = torch_helpers.random_resnet18(8, seed=22)
    torch.save({"state_dict": {f"module.{k}": v for k, v in ferplus.state_dict().items()}},
               d / "Resnet18_FER+_pytorch.pth.tar")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("name, at_type", [("self-attention_12_0.5432", "self"),
                                           ("self_relation-attention_7_0.4987", "relation")])
def test_fan_checkpoints_convert_without_arguments(files, tmp_path, capsys, name, at_type):
    out = tmp_path / "fan"
    assert convert.main([str(files / name), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert f"emotion_fan {{'num_class': 7, 'at_type': '{at_type}'}} (detected;" in log
    assert f"at_type='{at_type}' from the file name {name!r}" in log
    assert re.search(r"logits: float64 \S+ \(<= 1e-10\); float32", log) and "FAIL" not in log
    meta = json.loads((out / "fer_jax.json").read_text())
    assert meta["container"]["prefix"] == "module." and meta["container"]["extras"]["epoch"] in (12, 7)
    assert "accuracy" in meta["container"]["skipped"]
    assert meta["parity"]["logits"]["float64"] < 1e-10

    # Every upstream method on the converted model, as the README shows them.
    module, variables = load_pretrained(str(out))
    frames = np.random.default_rng(0).random((5, 224, 224, 3)).astype(np.float32)
    f, alpha = module.apply(variables, frames, method=module.frame_features)
    logits = module.apply(variables, f, alpha, np.array([0, 0, 1, 1, 1]), 2, method=module.video_logits)
    assert f.shape == (5, 512) and alpha.shape == (5, 1) and logits.shape == (2, 7)

    # Export writes upstream's container back; torch -> Flax -> torch is exact.
    assert export.main([str(out), "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    orig = torch.load(files / name, weights_only=True)
    assert list(back) == ["epoch", "state_dict"] and back["epoch"] == orig["epoch"]
    torch_helpers.assert_state_dicts_equal(orig["state_dict"], back["state_dict"])


def test_attention_type_without_a_telling_name(files, tmp_path, capsys):
    assert convert.main([str(files / "fan_renamed.pth"), "--out", str(tmp_path / "a"), "--no-verify"]) == 0
    log = capsys.readouterr().out
    assert "at_type='relation' assumed (upstream's scripts default to --at_type 1" in log
    assert convert.main([str(files / "fan_renamed.pth"), "--out", str(tmp_path / "b"), "--no-verify",
                         "--hparam", "at_type='self'"]) == 0
    assert "at_type='self' from --hparam" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "fer_jax.json").read_text())["hparams"]["at_type"] == "self"


def test_fan_file_is_not_a_resnet18(files, tmp_path, capsys):
    assert convert.main([str(files / "self-attention_12_0.5432"), "--out", str(tmp_path / "x"),
                         "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"not a resnet18 .*8 unexpected \(alpha\.0\.weight, alpha\.0\.bias, beta\.0\.weight", err)
    assert not (tmp_path / "x").exists()


def test_ferplus_resnet18_initialises_fan(files, tmp_path):
    out = tmp_path / "ferplus"
    assert convert.main([str(files / "Resnet18_FER+_pytorch.pth.tar"), "--out", str(out), "--no-verify"]) == 0
    meta = json.loads((out / "fer_jax.json").read_text())
    assert (meta["arch"], meta["hparams"], meta["container"]["prefix"]) == ("resnet18", {"num_classes": 8},
                                                                            "module.")
    spec = models.spec("emotion_fan")
    module = models.create("emotion_fan")
    example = {k: np.zeros(v.shape, v.dtype) for k, v in spec.example_inputs(1, 64).items()}
    init = spec.init(module, jax.random.key(0), example)
    variables, report = pretrained.init_from(str(out), "emotion_fan", init)
    assert report.dropped == ["params/fc/bias", "params/fc/kernel"]
    assert {p.split("/")[1] for p in report.left_at_init} == {"alpha", "beta", "pred_fc1", "pred_fc2"}
    assert report.counts()["loaded_params"] == 60 and report.counts()["loaded_batch_stats"] == 40
    sd = torch.load(files / "Resnet18_FER+_pytorch.pth.tar", weights_only=True)["state_dict"]
    np.testing.assert_array_equal(variables["params"]["layer3"]["1"]["conv2"]["kernel"],
                                  sd["module.layer3.1.conv2.weight"].numpy().transpose(2, 3, 1, 0))
