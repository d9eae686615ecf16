"""FERAtt and its PreActResNet18 baseline through porting/convert.py and export.py, in upstream's container:
{epoch, arch, imsize, num_output_channels, num_input_channels, num_classes, state_dict, prec, optimizer}
(AttentionNeuralNetAbstract.save; shared/reference/checkpoints.md, FERAtt). The encoder is registered twice
upstream, so 216 state_dict entries alias the `attention_map.encoder.*` ones (one storage); the encoder's
`fc` is never used but saved.
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
from fer_jax import models, pretrained
from porting import convert, export, reference


def save_feratt(model: torch.nn.Module, path, arch: str, num_classes: int, dim: int = 32) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    torch.save({"epoch": 60, "arch": arch, "imsize": 64, "num_output_channels": dim, "num_input_channels": 3,
                "num_classes": num_classes, "state_dict": model.state_dict(), "prec": torch.tensor(87.5),
                "optimizer": opt.state_dict()}, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("feratt")
    for arch, hp, name in (("feratt", {"num_classes": 8}, "ck8.pth.tar"), ("feratt", {"num_classes": 7}, "bu7.pth.tar"),
                           ("feratt_rep", {"num_classes": 8, "dim": 32}, "rep8.pth.tar")):
        model = parity.reference_model(parity.Case(arch, hp, size=64, batch=2), seed=41)
        save_feratt(model, d / name, "ferattentiongmm" if arch == "feratt_rep" else "ferattention",
                    hp["num_classes"])
    base = parity.reference_model(parity.Case("preactresnet18", {"num_classes": 8}, size=32), seed=42)
    torch.save({"epoch": 30, "arch": "preactresnet18", "imsize": 32, "num_classes": 8, "num_channels": 3,
                "state_dict": base.state_dict(), "prec": torch.tensor(80.0)}, d / "preact.pth.tar")
    return d


@pytest.mark.parametrize("name, arch, hparams", [
    ("ck8.pth.tar", "feratt", "{'num_classes': 8, 'num_filters': 32}"),
    ("bu7.pth.tar", "feratt", "{'num_classes': 7, 'num_filters': 32}"),
    ("rep8.pth.tar", "feratt_rep", "{'num_classes': 8, 'dim': 32, 'num_filters': 32}"),
    ("preact.pth.tar", "preactresnet18", "{'num_classes': 8}")])
def test_upstream_files_convert_without_arguments_and_export_exactly(files, tmp_path, capsys, name, arch, hparams):
    out = tmp_path / "m"
    assert convert.main([str(files / name), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert f"architecture: {arch} {hparams} (detected;" in log and "FAIL" not in log
    meta = json.loads((out / "fer_jax.json").read_text())
    assert max(v["float64"] for v in meta["parity"].values()) < 1e-10
    if arch != "preactresnet18":
        assert "216 aliased keys (attention_map.conv1.0 = attention_map.encoder.conv1" in log
        assert set(meta["parity"]) == {"y", "att", "g_att", "g_ft"} | ({"z"} if arch == "feratt_rep" else set())
    assert export.main([str(out), "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    orig = torch.load(files / name, weights_only=True)
    assert list(back) == [k for k in orig if k not in ("prec", "optimizer")]
    assert all(back[k] == orig[k] for k in back if k != "state_dict")
    torch_helpers.assert_state_dicts_equal(orig["state_dict"], back["state_dict"])
    assert list(back["state_dict"]) == list(orig["state_dict"])  # upstream's order, aliases included
    if arch != "preactresnet18":  # one storage per aliased pair, as torch.save wrote upstream's
        sd = back["state_dict"]
        assert sd["attention_map.conv2.0.conv1.weight"].data_ptr() == sd["attention_map.encoder.layer1.0.conv1.weight"].data_ptr()
        model = reference.ferattentiongmm(num_classes=8) if arch == "feratt_rep" else reference.ferattention(
            num_classes=int(orig["num_classes"]))
        model.load_state_dict(sd)  # upstream's strict load


def test_differing_alias_is_refused(files, tmp_path, capsys):
    ck = torch.load(files / "ck8.pth.tar", weights_only=True)
    sd = {k: v.clone() for k, v in ck["state_dict"].items()}
    sd["attention_map.conv3.1.bn2.running_mean"] += 1.0
    torch.save({**ck, "state_dict": sd}, tmp_path / "bad.pth.tar")
    assert convert.main([str(tmp_path / "bad.pth.tar"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"attention_map\.conv3\.1\.bn2\.running_mean should be the same tensor as "
                     r"attention_map\.encoder\.layer2\.1\.bn2\.running_mean", err)
    assert not (tmp_path / "x").exists()


def test_preactresnet18_is_not_a_resnet18(files, tmp_path, capsys):
    assert convert.main([str(files / "preact.pth.tar"), "--out", str(tmp_path / "x"), "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"not a resnet18 .*shapes differ \(conv1\.weight: file \[64, 3, 3, 3\] vs model \[64, 3, 7, 7\]",
                     err)


def test_imagenet_resnet34_starts_the_encoder_like_upstream(tmp_path, capsys):
    """torchvision's resnet34 file (a plain state_dict), converted, initialises FERAtt's encoder whole (its
    unused fc too, as upstream's encoder holds the ImageNet one); the decoder, feature, reconstruction and
    classifier modules keep their initialisation, and nothing of the file is dropped."""
    ref = parity.reference_model(parity.Case("resnet34", {"num_classes": 1000}, size=64, batch=2), seed=43)
    torch.save(ref.state_dict(), tmp_path / "resnet34-b627a593.pth")
    out = tmp_path / "resnet34"
    assert convert.main([str(tmp_path / "resnet34-b627a593.pth"), "--out", str(out), "--no-verify"]) == 0
    assert "architecture: resnet34" in capsys.readouterr().out
    spec = models.spec("feratt_rep")
    module = models.create("feratt_rep", num_classes=7)
    example = {k: np.zeros(v.shape, v.dtype) for k, v in spec.example_inputs(1, 64).items()}
    init = spec.init(module, jax.random.key(0), example)
    variables, report = pretrained.init_from(str(out), "feratt_rep", init)
    assert not report.dropped and not report.unused
    assert {p.split("/")[1] for p in report.left_at_init} == {
        "attention_map", "conv_input", "conv_mid", "conv2_bn", "feature", "reconstruction", "netclass"}
    assert not any(p.startswith(("params/attention_map/encoder", "batch_stats/attention_map/encoder"))
                   for p in report.left_at_init)
    sd = ref.state_dict()
    enc = variables["params"]["attention_map"]["encoder"]
    np.testing.assert_array_equal(enc["layer3"]["5"]["conv2"]["kernel"],
                                  sd["layer3.5.conv2.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(enc["fc"]["kernel"], sd["fc.weight"].numpy().T)
    np.testing.assert_array_equal(variables["batch_stats"]["attention_map"]["encoder"]["bn1"]["var"],
                                  sd["bn1.running_var"].numpy())
