"""FAER and ConvNeXt files through porting/convert.py and export.py, in every container a user holds
(shared/reference/checkpoints.md, faer.md section 6, backbones.md section 4):

- FAER training saves (`save_checkpoint`): {epoch, state_dict (`module.` keys), best_acc (0-dim tensor: the
  best *error*), optimizer (AdamW, two groups)}; the Baseline's the same with ConvNeXt keys and one group;
- official facebookresearch ConvNeXt files: {"model": state_dict};
- timm ConvNeXt weights (`stem`, `stages.S.blocks.B`, `conv_dw`, `mlp.fc1`, `head.fc`), bare in a
  .safetensors file, or under `net.` inside {"state_dict": ...} as FAER's and MFTN-FER's loaders read them.

The ConvNeXt files are tiny-width (the detection reads any variant); FAER is base, as upstream's.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
import safetensors.torch
import torch

import torch_helpers
from fer_jax import load_pretrained, models, pretrained
from porting import convert, export, reference


_random = torch_helpers.random_o1


def adamw_state(model: torch.nn.Module, groups) -> dict:
    opt = torch.optim.AdamW([{"params": g} for g in groups], lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return opt.state_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("faer")
    faer = _random(reference.FAER(num_classes=40), seed=31)
    named = dict(faer.named_parameters())
    backbone = [p for n, p in named.items() if n.startswith(("downsample_layers", "stages"))]
    new = [p for n, p in named.items() if n.startswith(("attention", "head"))]
    torch.save({"epoch": 11, "state_dict": {f"module.{k}": v for k, v in faer.state_dict().items()},
                "best_acc": torch.tensor(8.125), "optimizer": adamw_state(faer, [backbone, new])},
               d / "FAER_CELEBA_checkpoint.pth")
    tiny = _random(reference.ConvNeXt(variant="tiny", num_classes=1000), seed=32)
    torch.save({"model": tiny.state_dict()}, d / "convnext_tiny_1k_224_ema.pth")
    timm = _random(reference.TimmConvNeXt(variant="tiny", num_classes=1000), seed=33)
    safetensors.torch.save_file(timm.state_dict(), str(d / "model.safetensors"))
    torch.save({"state_dict": {f"net.{k}": v for k, v in timm.state_dict().items()}}, d / "convnext_base.pth")
    return d


def _torch_out(model, seed=0, size=64):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32))
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
def test_faer_training_save_converts_and_exports_exactly(files, tmp_path, capsys):
    src = files / "FAER_CELEBA_checkpoint.pth"
    out = tmp_path / "faer"
    assert convert.main([str(src), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "faer {'variant': 'base', 'num_classes': 40} (detected;" in log
    assert re.search(r"feature: float64 \S+ \(<= 1e-10\); float32", log)
    assert re.search(r"logits: float64 \S+ \(<= 1e-10\); float32", log) and "FAIL" not in log
    meta = json.loads((out / "fer_jax.json").read_text())
    assert meta["container"]["prefix"] == "module." and meta["container"]["extras"] == {"epoch": 11}
    assert set(meta["container"]["skipped"]) == {"best_acc", "optimizer"}
    assert max(meta["parity"][k]["float64"] for k in ("feature", "logits")) < 1e-10
    assert export.main([str(out), "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    orig = torch.load(src, weights_only=True)
    assert list(back) == ["epoch", "state_dict"] and back["epoch"] == 11
    torch_helpers.assert_state_dicts_equal(orig["state_dict"], back["state_dict"])
    # what upstream's evaluation does with the exported file: a strict load into the DataParallel model
    model = torch.nn.DataParallel(reference.FAER(num_classes=40))
    model.load_state_dict(back["state_dict"])


@pytest.mark.parametrize("name, layout", [("convnext_tiny_1k_224_ema.pth", None), ("model.safetensors", "timm"),
                                          ("convnext_base.pth", "timm")])
def test_convnext_files_convert_without_arguments(files, tmp_path, capsys, name, layout):
    out = tmp_path / "cn"
    assert convert.main([str(files / name), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "convnext {'variant': 'tiny', 'num_classes': 1000} (detected;" in log
    if layout:
        assert f"{layout} layout: " in log
    assert "FAIL" not in log
    meta = json.loads((out / "fer_jax.json").read_text())
    assert meta["layout"] == layout
    assert max(v["float64"] for v in meta["parity"].values()) < 1e-10
    module, variables = load_pretrained(str(out))
    ref = reference.ConvNeXt(variant="tiny", num_classes=1000).eval()
    sd = torch.load(files / name, weights_only=True) if name.endswith(".pth") else safetensors.torch.load_file(
        str(files / name))
    sd = sd.get("model", sd.get("state_dict", sd))
    if layout:  # the documented renames (backbones.md section 4), written out independently of porting/archs.py
        renamed = {}
        for k, v in sd.items():
            k = re.sub(r"^net\.", "", k)
            k = k.replace("stem.", "downsample_layers.0.", 1) if k.startswith("stem.") else k
            k = re.sub(r"^stages\.(\d)\.downsample\.(\d)", r"downsample_layers.\1.\2", k)
            k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k)
            k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
            k = {"head.fc.weight": "head.weight", "head.fc.bias": "head.bias", "head.norm.weight": "norm.weight",
                 "head.norm.bias": "norm.bias"}.get(k, k)
            renamed[k] = v
        sd = renamed
    ref.load_state_dict(sd)
    feature, logits = _torch_out(ref)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32).transpose(0, 2, 3, 1)
    ours = module.apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(ours[1]), logits.numpy(), rtol=0, atol=2e-4 * float(logits.abs().max()))


def test_timm_convnext_initialises_faer_with_classifier_dropped(files, tmp_path):
    out = tmp_path / "backbone"
    assert convert.main([str(files / "model.safetensors"), "--out", str(out), "--no-verify"]) == 0
    spec = models.spec("faer")
    module = models.create("faer", variant="tiny", num_classes=7)
    example = {k: np.zeros(v.shape, v.dtype) for k, v in spec.example_inputs(1, 64).items()}
    init = spec.init(module, jax.random.key(0), example)
    variables, report = pretrained.init_from(str(out), "faer", init)
    assert report.dropped == ["params/head/bias", "params/head/kernel"]
    assert {p.split("/")[1] for p in report.left_at_init} == {"attention", "head"}
    sd = safetensors.torch.load_file(str(files / "model.safetensors"))
    np.testing.assert_array_equal(variables["params"]["stages"]["2"]["4"]["dwconv"]["kernel"],
                                  sd["stages.2.blocks.4.conv_dw.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["norm"]["scale"], sd["head.norm.weight"].numpy())


def test_faer_file_is_not_a_convnext(files, tmp_path, capsys):
    assert convert.main([str(files / "FAER_CELEBA_checkpoint.pth"), "--out", str(tmp_path / "x"),
                         "--arch", "convnext", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"not a convnext .*10 unexpected \(attention\.", err)
    assert not (tmp_path / "x").exists()
