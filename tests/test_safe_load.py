"""Safe checkpoint reading and container unwrapping."""

from __future__ import annotations

import argparse
import builtins
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from fer_jax.errors import CheckpointError
from porting import containers, safe_load


class _Hostile:
    """Pickles to a call of `fn(*args)` at load time (a classic malicious checkpoint)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "executed"


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval", "subprocess"])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain_pickle"])
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, marker, payload, fmt):
    import subprocess

    cmd = f"touch {marker}"
    fn, args = {"os.system": (os.system, (cmd,)),
                "builtins.exec": (builtins.exec, (f"open({str(marker)!r}, 'w')",)),
                "builtins.eval": (builtins.eval, (f"open({str(marker)!r}, 'w')",)),
                "subprocess": (subprocess.call, (["touch", str(marker)],))}[payload]
    obj = {"state_dict": {"w": torch.ones(2)}, "x": _Hostile(fn, *args)}
    path = tmp_path / "evil.pth"
    if fmt == "plain_pickle":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    with pytest.raises(CheckpointError, match=r"refusing to load: the file would call .*nothing was executed"):
        safe_load.load_checkpoint(path)
    assert not marker.exists()


def test_custom_classes_numpy_and_namespace_load_inertly(tmp_path, monkeypatch):
    """MFTN-FER's checkpoint: `util.RecorderMeter` objects holding NumPy arrays, plus other extras."""
    util = types.ModuleType("util")

    class RecorderMeter:
        def __init__(self):
            self.epoch_losses = np.arange(6, dtype=np.float32).reshape(3, 2)
            self.total_epoch = 3

    RecorderMeter.__module__, RecorderMeter.__qualname__ = "util", "RecorderMeter"
    util.RecorderMeter = RecorderMeter
    monkeypatch.setitem(sys.modules, "util", util)
    sd = {"module.fc.weight": torch.randn(3, 4)}
    torch.save({"epoch": 5, "state_dict": sd, "best_acc": torch.tensor(91.5), "recorder": RecorderMeter(),
                "args": argparse.Namespace(lr=0.1), "np_scalar": np.float64(0.5)}, tmp_path / "m.pth")
    monkeypatch.delitem(sys.modules, "util")  # the reader must not need (or import) the class

    obj = safe_load.load_checkpoint(tmp_path / "m.pth")
    rec = obj["recorder"]
    assert isinstance(rec, safe_load.Opaque) and repr(rec) == "<opaque util.RecorderMeter>"
    np.testing.assert_array_equal(rec.state["epoch_losses"], np.arange(6).reshape(3, 2))
    assert obj["args"].lr == 0.1 and obj["np_scalar"] == 0.5
    assert "util" not in sys.modules

    c = containers.unwrap(obj)
    assert (c.weights_key, c.prefix, list(c.state_dict)) == ("state_dict", "module.", ["fc.weight"])
    assert c.extras == {"epoch": 5}
    assert c.skipped == {"best_acc": "tensor(91.5)", "recorder": "<opaque util.RecorderMeter>",
                         "args": "Namespace(lr)", "np_scalar": "float64"}


def test_legacy_format_and_copy_semantics(tmp_path):
    t = torch.randn(3)
    torch.save({"state_dict": {"a": t}}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    c = containers.unwrap(safe_load.load_checkpoint(tmp_path / "old.pth"))
    np.testing.assert_array_equal(c.state_dict["a"], t.numpy())
    src = torch.ones(2)
    arr = containers.to_numpy(src)
    src.add_(1)  # a later in-place torch update must not reach the converted array
    np.testing.assert_array_equal(arr, [1, 1])


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "checkpoint not found"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("hello, not a checkpoint"), "is not a PyTorch checkpoint"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_unreadable_files(tmp_path, make, message):
    path = tmp_path / "x.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message):
        safe_load.load_checkpoint(path)


@pytest.mark.parametrize("zipped", [True, False])
def test_truncated_file(tmp_path, zipped):
    path = tmp_path / "t.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, path, _use_new_zipfile_serialization=zipped)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|damaged|not a readable"):
        safe_load.load_checkpoint(path)


@pytest.mark.parametrize("obj, key", [
    ({"w": torch.ones(1)}, None),
    ({"model_state_dict": {"w": torch.ones(1)}, "iter": 3}, "model_state_dict"),
    ({"model": {"w": torch.ones(1)}}, "model"),
    ({"state_dict": {"module.w": torch.ones(1)}}, "state_dict"),
])
def test_unwrap_containers(obj, key):
    c = containers.unwrap(obj)
    assert (c.weights_key, list(c.state_dict)) == (key, ["w"])


def test_unwrap_errors():
    with pytest.raises(CheckpointError, match="holds no model weights"):
        containers.unwrap({"epoch": 3, "optimizer": {"state": {}}})
    with pytest.raises(CheckpointError, match="mixes two models"):
        containers.unwrap({"module.a": torch.ones(1), "b": torch.ones(1)})
    with pytest.raises(CheckpointError, match="not a state_dict"):
        containers.unwrap([torch.ones(1)])
