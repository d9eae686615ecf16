"""MFTN-FER files through porting/convert.py and export.py, in upstream's containers (checkpoints.md, mftn_fer.md
section 6):

- the training save `[MM-DD]-[HH-MM]-model.pth`: {epoch, state_dict (`module.`), best_acc (0-dim tensor),
  optimizer (SAM's state_dict), recorder1, recorder}; the recorders are pickled instances of upstream's own
  classes (module `util`), which no reader may import;
- `…model_best.pth`, which by upstream's bug holds only SAM's state_dict: its `old_p` entries are the final
  weights, keyed by position in `model.parameters()`, the 45 never-used `mstn.branch.*` tensors absent.

The fast tier uses the network on ConvNeXt atto widths (the detection reads the variant); the slow test
converts upstream's ConvNeXt-base size.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

import torch_helpers
from fer_jax import load_pretrained, models
from fer_jax.errors import CheckpointError
from porting import convert, export, mapping, reference


_random = torch_helpers.random_o1


def sam_state(model: torch.nn.Module) -> dict:
    """SAM(Adam)'s state_dict as upstream's training leaves it: `old_p` for every parameter that had a gradient
    (all but `mstn.branch.*`), keyed by position in model.parameters(); Adam's and SAM's hyperparameters."""
    names = [n for n, _ in model.named_parameters()]
    state = {i: {"old_p": p.detach().clone()} for i, (n, p) in enumerate(model.named_parameters())
             if not n.startswith("mstn.branch.")}
    group = {"lr": 2.5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
             "maximize": False, "foreach": None, "capturable": False, "differentiable": False, "fused": None,
             "rho": 0.05, "adaptive": False, "initial_lr": 2.5e-4, "params": list(range(len(names)))}
    return {"state": state, "param_groups": [group]}


def recorders():
    """Instances of upstream's RecorderMeter classes, pickled by reference to a module `util` that exists
    only while saving (as on the author's machine)."""
    util = types.ModuleType("util")

    class RecorderMeter:
        def __init__(self, total_epoch):
            self.epoch_losses = np.zeros((total_epoch, 2), np.float32)
            self.epoch_accuracy = np.zeros((total_epoch, 2), np.float32)

    class RecorderMeter1(RecorderMeter):
        pass

    for cls in (RecorderMeter, RecorderMeter1):
        cls.__module__, cls.__qualname__ = "util", cls.__name__
        setattr(util, cls.__name__, cls)
    return util, RecorderMeter1(100), RecorderMeter(100)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mftn")
    model = _random(reference.MFTN(7, variant="atto"), seed=41)
    util, rec1, rec = recorders()
    sys.modules["util"] = util
    try:
        torch.save({"epoch": 17, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                    "best_acc": torch.tensor(0.8123), "optimizer": sam_state(model), "recorder1": rec1,
                    "recorder": rec}, d / "12-01-10-30-model.pth")
    finally:
        del sys.modules["util"]
    torch.save(sam_state(model), d / "12-01-10-30-model_best.pth")
    model8 = _random(reference.MFTN(8, variant="atto"), seed=42)
    torch.save(sam_state(model8), d / "c8-model_best.pth")
    return d, model, model8


def _torch_out(model, seed=0, size=64):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32))
    with torch.no_grad():
        return [o.numpy() for o in model(x)]


def _ours(directory, seed=0, size=64):
    module, variables = load_pretrained(str(directory))
    x = np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32).transpose(0, 2, 3, 1)
    return [np.asarray(o) for o in module.apply(variables, x, train=False)]


def test_training_save_converts_and_exports_exactly(files, tmp_path, capsys):
    d, model, _ = files
    out = tmp_path / "mftn"
    assert convert.main([str(d / "12-01-10-30-model.pth"), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "mftn {'variant': 'atto', 'num_classes': 7} (detected;" in log and "FAIL" not in log
    meta = json.loads((out / "fer_jax.json").read_text())
    assert meta["container"]["prefix"] == "module." and meta["container"]["extras"] == {"epoch": 17}
    assert set(meta["container"]["skipped"]) == {"best_acc", "optimizer", "recorder1", "recorder"}
    assert max(meta["parity"][k]["float64"] for k in ("out1", "out2")) < 1e-10
    assert meta["absent_at_init"] == []
    for ours, ref in zip(_ours(out), _torch_out(model)):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-4 * np.abs(ref).max())
    assert export.main([str(out), "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == ["epoch", "state_dict"] and back["epoch"] == 17
    torch_helpers.assert_state_dicts_equal({f"module.{k}": v for k, v in model.state_dict().items()},
                                           back["state_dict"])
    strict = torch.nn.DataParallel(reference.MFTN(7, variant="atto"))  # upstream's evaluation: a strict load
    strict.load_state_dict(back["state_dict"])


def test_best_file_converts_by_position(files, tmp_path, capsys):
    """`…model_best.pth` holds SAM's state alone: converted from its old_p copies by position, with a report;
    the forward equals the model's (the absent mstn.branch.* are never used by it)."""
    d, model, model8 = files
    out = tmp_path / "best"
    assert convert.main([str(d / "12-01-10-30-model_best.pth"), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    present = len(list(model.parameters())) - 45  # 223 here; 439 of 484 at upstream's size
    assert f"only an optimizer state whose {present} per-parameter 'old_p' entries copy the weights" in log
    assert "MFTN-FER's …model_best.pth" in log and "FAIL" not in log
    assert "mftn {'variant': 'atto', 'num_classes': 7} (detected;" in log
    meta = json.loads((out / "fer_jax.json").read_text())
    absent = meta["absent_at_init"]
    assert len(absent) == 45 and all(n.startswith("mstn.branch.") for n in absent)
    assert "rho=0.05" in meta["container"]["skipped"]["param_groups"]
    for ours, ref in zip(_ours(out), _torch_out(model)):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-4 * np.abs(ref).max())
    module, variables = load_pretrained(str(out))
    loaded = {k: v for k, v in model.state_dict().items() if not k.startswith("mstn.branch.")}
    kinds, _ = mapping.module_kinds(module, *models.spec("mftn").batch_inputs(
        models.spec("mftn").example_inputs(1, 64)), **models.spec("mftn").init_kwargs())
    back = mapping.flax_to_torch(variables, kinds)
    for k, v in loaded.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)  # bit for bit

    out8 = tmp_path / "best8"
    assert convert.main([str(d / "c8-model_best.pth"), "--out", str(out8), "--no-verify"]) == 0
    assert "mftn {'variant': 'atto', 'num_classes': 8}" in capsys.readouterr().out


def test_best_file_missing_a_trained_weight_is_refused(files, tmp_path):
    d, model, _ = files
    state = torch.load(d / "12-01-10-30-model_best.pth", weights_only=True)
    del state["state"][3]  # a backbone weight, which had a gradient
    torch.save(state, tmp_path / "damaged_best.pth")
    with pytest.raises(CheckpointError, match=r"1 parameters with a gradient are absent, "
                                              r"first backbone\.downsample_layers\.0\.1\.bias"):
        convert.convert(str(tmp_path / "damaged_best.pth"), str(tmp_path / "out"), log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_upstream_size_is_detected():
    """Upstream's ConvNeXt-base MFTN-FER keys and shapes (484 keys), 7 and 8 classes, are recognised exactly
    (the base-width parity is in test_parity_mftn.py; conversion is the atto tests' path)."""
    from porting import archs

    for classes in (7, 8):
        with torch.device("meta"):
            model = reference.MFTN(classes)
        found = archs.detect({k: tuple(v.shape) for k, v in model.state_dict().items()})
        assert (found.spec.name, found.hparams) == ("mftn", {"variant": "base", "num_classes": classes})


def test_convnext_initialises_the_backbone(tmp_path):
    """An ImageNet / MS-Celeb ConvNeXt (here an official-layout file) initialises `backbone`: its classifier
    dropped, `backbone.head` and the whole MsTN left at their initialisation, all reported."""
    import jax

    from fer_jax import pretrained

    source = _random(reference.ConvNeXt(variant="atto", num_classes=1000), seed=44)
    torch.save({"model": source.state_dict()}, tmp_path / "convnext_atto.pth")
    assert convert.main([str(tmp_path / "convnext_atto.pth"), "--out", str(tmp_path / "cn"), "--no-verify"]) == 0
    spec = models.spec("mftn")
    module = models.create("mftn", variant="atto", num_classes=7)
    example = {k: np.zeros(v.shape, v.dtype) for k, v in spec.example_inputs(1, 64).items()}
    init = jax.device_get(spec.init(module, jax.random.key(0), example))
    variables, report = pretrained.init_from(str(tmp_path / "cn"), "mftn", init)
    kinds, _ = mapping.module_kinds(module, *spec.batch_inputs(spec.example_inputs(1, 64)), **spec.init_kwargs())
    got = mapping.flax_to_torch(variables, kinds)
    for k, v in source.state_dict().items():
        if not k.startswith("head."):
            np.testing.assert_array_equal(got[f"backbone.{k}"], v.numpy(), err_msg=k)
    start = mapping.flax_to_torch(init, kinds)
    for k in ("backbone.head.weight", "mstn.head.weight", "mstn.branches.0.0.attn.kv.weight"):
        np.testing.assert_array_equal(got[k], start[k])
    assert sorted(report.dropped) == ["params/head/bias", "params/head/kernel"]
    assert not report.unused and not report.missing
    assert {p.split("/")[1] for p in report.left_at_init} == {"backbone", "mstn"}
