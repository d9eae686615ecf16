"""Optimizers and per-epoch schedules against torch.optim, in float64."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax
import pytest
import torch

from fer_jax.errors import ConfigError
from fer_jax.train import config as config_lib
from fer_jax.train import optim
from porting.reference import training

SPE = 3  # optimizer steps per epoch


def make_config(opt: dict, schedule: dict) -> ml_collections.ConfigDict:
    c = config_lib.base()
    c.optimizer.update(opt)
    c.schedule.update(schedule)
    return c


def torch_run(opt: dict, schedule: dict, w0: np.ndarray, grads: list[np.ndarray]):
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    kw = {"lr": opt["lr"], "weight_decay": opt["weight_decay"]}
    if opt["name"] == "sgd":
        o = torch.optim.SGD([p], momentum=opt["momentum"], **kw)
    else:
        o = (torch.optim.Adam if opt["name"] == "adam" else torch.optim.AdamW)([p], betas=(0.9, 0.999), eps=1e-8, **kw)
    s = {"step": lambda: torch.optim.lr_scheduler.StepLR(o, schedule["step_epochs"], schedule["gamma"]),
         "multistep": lambda: torch.optim.lr_scheduler.MultiStepLR(o, list(schedule["milestones"]), schedule["gamma"]),
         "exponential": lambda: torch.optim.lr_scheduler.ExponentialLR(o, schedule["gamma"]),
         "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(o, schedule["epochs"], schedule["min_lr"]),
         "constant": lambda: None}[schedule["name"]]()
    lrs, params = [], []
    for i, g in enumerate(grads):
        lrs.append(o.param_groups[0]["lr"])
        p.grad = torch.from_numpy(g.copy())
        o.step()
        params.append(p.detach().numpy().copy())
        if s is not None and (i + 1) % SPE == 0:  # upstream steps its scheduler once per epoch
            s.step()
    return np.array(lrs), np.array(params)


CASES = [
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}, {"name": "step", "step_epochs": 2, "gamma": 0.1}),
    ({"name": "adam", "lr": 1e-3, "weight_decay": 1e-2}, {"name": "exponential", "gamma": 0.6}),
    ({"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}, {"name": "cosine", "epochs": 4, "min_lr": 1e-5}),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}, {"name": "multistep", "milestones": (1, 3), "gamma": 0.5}),
    ({"name": "adam", "lr": 1e-4, "weight_decay": 0.0}, {"name": "constant"}),
]


@pytest.mark.parametrize("opt, schedule", CASES, ids=[f"{o['name']}-{s['name']}" for o, s in CASES])
def test_matches_torch_in_float64(opt, schedule):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(5 * SPE)]
    lrs, ref = torch_run(opt, schedule, w0, grads)
    with jax.enable_x64(True):
        tx, sched = optim.build(make_config({**opt, "betas": (0.9, 0.999), "eps": 1e-8}, schedule), SPE)
        np.testing.assert_allclose([float(sched(np.int64(i))) for i in range(len(grads))], lrs, rtol=1e-13)
        w, state, ours = w0, tx.init(w0), []
        for g in grads:
            u, state = tx.update(g, state, w)
            w = optax.apply_updates(w, u)
            ours.append(np.asarray(w))
    # float64 on both sides (the schedule too): only rounding separates them (measured ~1e-16).
    np.testing.assert_allclose(np.array(ours), ref, rtol=0, atol=1e-13)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown optimizer.name 'sgdd'"):
        optim.build(make_config({"name": "sgdd"}, {"name": "constant"}), SPE)
    with pytest.raises(ConfigError, match="unknown schedule.name 'poly'"):
        optim.build(make_config({"name": "sgd"}, {"name": "poly"}), SPE)


def test_frozen_parameters_are_skipped_like_torch_skips_gradless_ones():
    """Emotion-FAN's idle head gets no gradient in upstream's training forward, so torch.optim.SGD leaves it
    exactly as it is (no weight decay, no momentum); `optim.freeze` does the same, the rest unchanged."""
    rng = np.random.default_rng(0)
    w = {"head": rng.standard_normal(4), "idle": rng.standard_normal(3)}
    grads = [rng.standard_normal(4) for _ in range(3)]
    head, idle = (torch.nn.Parameter(torch.from_numpy(w[k].copy())) for k in ("head", "idle"))
    opt = torch.optim.SGD([head, idle], lr=0.1, momentum=0.9, weight_decay=1e-4)
    for g in grads:
        head.grad = torch.from_numpy(g.copy())  # idle.grad stays None, as for an unused layer
        opt.step()
    tx = optim.freeze(optim.torch_sgd(0.1, 0.9, 1e-4), frozen=("pred_fc1",))
    with jax.enable_x64(True):
        params = {"model": {"fc": {"kernel": w["head"]}, "pred_fc1": {"kernel": w["idle"]}}, "aux": {}}
        state = tx.init(params)
        for g in grads:
            full = {"model": {"fc": {"kernel": g}, "pred_fc1": {"kernel": np.zeros(3)}}, "aux": {}}
            updates, state = tx.update(full, state, params)
            params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["model"]["fc"]["kernel"], head.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(params["model"]["pred_fc1"]["kernel"], w["idle"])


TorchSAM = training.SAM


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_matches_torch_in_float64(adaptive):
    """SAM(Adam, rho 0.05) on a small network for 4 steps, each two forward / backward passes on the same
    batch; the unused parameter has no gradient upstream (zero here) and neither moves nor counts in the norm."""
    rng = np.random.default_rng(1)
    w = {"w1": rng.standard_normal((5, 8)) * 0.5, "w2": rng.standard_normal((8, 3)) * 0.5,
         "unused": rng.standard_normal(2)}
    x, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)

    def loss_np(params, xs):
        return optax.softmax_cross_entropy_with_integer_labels(jax.numpy.tanh(xs @ params["w1"]) @ params["w2"],
                                                               y).mean()

    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in w.items()}
    base = torch.optim.Adam(tparams.values(), lr=1e-2)
    sam = TorchSAM(tparams.values(), base, 0.05, adaptive)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(4):
        for step in (sam.first_step, sam.second_step):
            base.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(torch.tanh(xt @ tparams["w1"]) @ tparams["w2"], yt).backward()
            step()
    with jax.enable_x64(True):
        tx = optim.sam(optim.torch_adam(1e-2), 0.05, adaptive)
        params, state = w, tx.init(w)
        grad = jax.grad(lambda p: loss_np(p, x))
        for _ in range(4):
            updates, state = tx.update(grad(params), state, params, grad_fn=lambda p, i: grad(p))
            params = optax.apply_updates(params, updates)
    for k, v in tparams.items():  # float64 both sides: rounding only
        np.testing.assert_allclose(np.asarray(params[k]), v.detach().numpy(), rtol=0, atol=1e-13, err_msg=k)
    np.testing.assert_array_equal(np.asarray(params["unused"]), w["unused"])


def test_sam_is_built_from_the_recipe():
    tx, _ = optim.build(make_config({"name": "adam", "lr": 2.5e-4, "weight_decay": 0.0, "sam_rho": 0.05},
                                    {"name": "exponential", "gamma": 0.95}), SPE)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update({"w": np.ones(2)}, tx.init({"w": np.ones(2)}), {"w": np.ones(2)})
    with pytest.raises(ConfigError, match="optimizer.sam_rho=-0.1"):
        optim.build(make_config({"name": "adam", "sam_rho": -0.1}, {"name": "constant"}), SPE)
