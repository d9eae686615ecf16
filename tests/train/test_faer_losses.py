"""FAER's training pieces against torch, in float64: the CelebA losses, the center loss with upstream's
hand-written gradient (also split over simulated devices), and AdamW with parameter groups and upstream's
per-epoch cosine formula (shared/reference/faer.md sections 3-4).

The torch side is written from the fact sheet's definitions (and upstream's loss file for the center loss's
backward), in float64, so only rounding separates the two (bound 1e-12 relative).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from fer_jax import losses, tasks
from fer_jax.errors import ConfigError
from fer_jax.train import config as config_lib
from fer_jax.train import optim
from porting.reference import training

TOL = 1e-12


def _data(seed=0, b=6, k=40):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (b, k))
    logits[0, :3] = (15.0, -15.0, 9.5)  # beyond and near FAER's clamp at +-10
    return logits, (rng.random((b, k)) > 0.6).astype(np.float64)


def _torch_value_grad(fn, logits, targets):
    x = torch.tensor(logits, requires_grad=True)
    value = fn(x, torch.tensor(targets))
    value.backward()
    return value.item(), x.grad.numpy()


def _ours_value_grad(fn, logits, targets):
    with jax.enable_x64(True):
        value, grad = jax.value_and_grad(fn)(jnp.asarray(logits), jnp.asarray(targets))
        return float(value), np.asarray(grad)


torch_bce_clamp, torch_focal, torch_asl = training.bce_clamp, training.focal, training.asymmetric


@pytest.mark.parametrize("name, ours, ref", [
    ("bce_clamp", lambda x, y: losses.bce_with_logits(x, y, 10.0), torch_bce_clamp),
    ("focal", lambda x, y: losses.bce_focal(x, y, 2.0), torch_focal),
    ("focal_paper", lambda x, y: losses.bce_focal(x, y, 2.0, sum_attributes=True),
     lambda x, y: torch_focal(x, y, sum_attributes=True)),
    ("asymmetric", losses.asymmetric, torch_asl),
])
def test_celeba_losses_match_torch(name, ours, ref):
    logits, targets = _data()
    logits[0, :3] = (9.0, -9.0, 9.5)  # torch's log(sigmoid) saturates beyond ~17 in float64; stay in its range
    v_ref, g_ref = _torch_value_grad(ref, logits, targets)
    v, g = _ours_value_grad(ours, logits, targets)
    assert abs(v - v_ref) <= TOL * max(1.0, abs(v_ref)), (v, v_ref)
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=TOL * np.abs(g_ref).max())


def test_clamped_bce_stops_gradient_beyond_ten():
    logits, targets = _data()
    v_ref, g_ref = _torch_value_grad(torch_bce_clamp, logits, targets)
    v, g = _ours_value_grad(lambda x, y: losses.bce_with_logits(x, y, 10.0), logits, targets)
    assert g[0, 0] == 0 and g[0, 1] == 0 and g[0, 2] != 0
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=TOL * np.abs(g_ref).max())


def test_task_loss_options():
    logits, targets = _data()
    with jax.enable_x64(True):
        for name in tasks.MULTILABEL_LOSSES:
            task = tasks.MultiLabel(loss_name=name)
            value, terms = task.loss({}, jnp.asarray(logits), {"label": jnp.asarray(targets, jnp.int32)}, {})
            assert terms["loss"] is value and np.isfinite(float(value))
        paper = tasks.MultiLabel(loss_name="focal_paper").loss({}, jnp.asarray(logits),
                                                               {"label": jnp.asarray(targets)}, {})[0]
        code = tasks.MultiLabel(loss_name="focal").loss({}, jnp.asarray(logits), {"label": jnp.asarray(targets)}, {})[0]
        np.testing.assert_allclose(float(paper), 40 * float(code), rtol=1e-13)
    with pytest.raises(ConfigError, match="task.loss_name 'focall'"):
        tasks.MultiLabel(loss_name="focall")


TorchCenterLoss = training.CenterLossFunction


def _center_case(seed=0, b=8, k=7, d=16):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, b)
    labels[:3] = 2  # a class seen several times, others once or never
    return rng.normal(size=(b, d)), labels, rng.normal(size=(k, d)), rng.normal(size=(b, k))


def _torch_center_objective(feat, labels, centers, logits, weight):
    f = torch.tensor(feat, requires_grad=True)
    c = torch.tensor(centers, requires_grad=True)
    x = torch.tensor(logits, requires_grad=True)
    lab = torch.tensor(labels)
    total = torch.nn.functional.cross_entropy(x, lab) + weight * TorchCenterLoss.apply(f, lab, c)
    total.backward()
    return total.item(), f.grad.numpy(), c.grad.numpy(), x.grad.numpy()


def test_center_loss_gradient_is_upstreams():
    feat, labels, centers, logits = _center_case()
    weight = 0.01
    ref = _torch_center_objective(feat, labels, centers, logits, weight)
    task = tasks.CenterLoss(weight=weight, num_centers=7, feat_dim=16)
    with jax.enable_x64(True):
        def objective(f, c, x):
            return task.loss({"feature": f}, x, {"label": jnp.asarray(labels)}, {"centers": c})[0]
        value, grads = jax.value_and_grad(objective, argnums=(0, 1, 2))(
            jnp.asarray(feat), jnp.asarray(centers), jnp.asarray(logits))
        autodiff = jax.grad(lambda c: weight * jnp.sum((jnp.asarray(feat) - c[labels]) ** 2) / 2 / len(labels))(
            jnp.asarray(centers))
    assert abs(float(value) - ref[0]) <= TOL * abs(ref[0])
    for ours, theirs in zip(grads, ref[1:]):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=TOL * np.abs(theirs).max())
    # Not autodiff: the centers' gradient is not scaled by the weight, and divides by 1 + n_j.
    assert np.abs(np.asarray(grads[1]) - np.asarray(autodiff)).max() > 1e-3


def test_center_aux_init_is_xavier_uniform_gain_sqrt2():
    c = np.asarray(tasks.CenterLoss(num_centers=7, feat_dim=1024).init_aux(jax.random.key(0))["centers"])
    bound = math.sqrt(2) * math.sqrt(6 / (1024 + 7))
    assert c.shape == (7, 1024) and np.abs(c).max() <= bound and np.abs(c).max() > 0.95 * bound


def test_center_loss_axis_name_counts_globally():
    """The per-device gradient with axis_name (vmap stands in for pmap: same collectives) averaged over the
    devices equals the single-device gradient on the whole batch."""
    feat, labels, centers, logits = _center_case(b=8)
    task = tasks.CenterLoss(weight=0.5, num_centers=7, feat_dim=16)

    def grads(f, lab, x, axis_name=None):
        def objective(c, f):
            return task.loss({"feature": f}, x, {"label": lab}, {"centers": c}, axis_name)[0]
        return jax.grad(objective, argnums=(0, 1))(jnp.asarray(centers), f)

    with jax.enable_x64(True):
        whole = grads(jnp.asarray(feat), jnp.asarray(labels), jnp.asarray(logits))
        split = jax.vmap(lambda f, lab, x: grads(f, lab, x, "d"), axis_name="d")(
            jnp.asarray(feat).reshape(2, 4, -1), jnp.asarray(labels).reshape(2, 4), jnp.asarray(logits).reshape(2, 4, -1))
    np.testing.assert_allclose(np.asarray(split[0]).mean(0), np.asarray(whole[0]), rtol=0, atol=1e-13)
    # feature gradients: device d holds examples 4d..4d+3 and its loss is a mean over 4, the pmean halves it
    np.testing.assert_allclose(np.asarray(split[1]).reshape(8, -1) / 2, np.asarray(whole[1]), rtol=0, atol=1e-13)


def _group_config(lr_factor: float) -> ml_collections.ConfigDict:
    c = config_lib.base()
    c.optimizer.update(name="adamw", lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    c.optimizer.groups = ml_collections.ConfigDict({
        "backbone": {"params": ("downsample_layers", "stages"), "lr_factor": lr_factor},
        "new": {"params": ("attention", "head", "aux"), "lr_factor": 1.0}})
    c.schedule.update(name="cosine", epochs=4)
    c.schedule.min_lr_ratio = 1e-6
    return c


def test_adamw_groups_match_torch_with_upstreams_cosine():
    """torch.optim.AdamW with FAER's two groups, the final `norm` in neither (never updated), and upstream's
    `adjust_learning_rate` at the start of every epoch; ours with lr_factor 0.01 for the backbone and the
    same closed form per group. Float64 both sides."""
    spe, epochs, lr = 3, 4, 1e-3
    rng = np.random.default_rng(0)
    names = ["stages.0.0.dwconv", "attention.value", "norm", "aux.centers"]
    w0 = {k: rng.normal(size=3) for k in names}
    grads = [{k: rng.normal(size=3) for k in names} for _ in range(spe * epochs)]
    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in w0.items()}
    opt = torch.optim.AdamW([{"params": [tp["stages.0.0.dwconv"]], "lr": lr / 100},
                             {"params": [tp["attention.value"], tp["aux.centers"]]}], lr=lr)
    factors = [0.01, 1.0]
    lrs = []
    for step, g in enumerate(grads):
        if step % spe == 0:  # per-epoch formula, applied to each group's own base lr (factor kept)
            e = step // spe
            for group, f in zip(opt.param_groups, factors):
                group["lr"] = lr * f * ((1 - 1e-6) * 0.5 * (1 + math.cos(math.pi * e / epochs)) + 1e-6)
        lrs.append([group["lr"] for group in opt.param_groups])
        for k, p in tp.items():
            p.grad = torch.tensor(g[k])
        opt.step()
    with jax.enable_x64(True):
        tx, schedules = optim.build(_group_config(0.01), spe)
        np.testing.assert_allclose([[float(schedules[n](np.int64(i))) for n in ("backbone", "new")]
                                    for i in range(len(grads))], lrs, rtol=1e-12)
        tree = lambda d: {"model": {"stages": {"0": {"0": {"dwconv": {"kernel": d["stages.0.0.dwconv"]}}}},
                                    "attention": {"value": {"kernel": d["attention.value"]}},
                                    "norm": {"scale": d["norm"]}}, "aux": {"centers": d["aux.centers"]}}
        params, state = tree(w0), None
        state = tx.init(params)
        for g in grads:
            updates, state = tx.update(tree(g), state, params)
            params = optax.apply_updates(params, updates)
    got = {"stages.0.0.dwconv": params["model"]["stages"]["0"]["0"]["dwconv"]["kernel"],
           "attention.value": params["model"]["attention"]["value"]["kernel"],
           "norm": params["model"]["norm"]["scale"], "aux.centers": params["aux"]["centers"]}
    for k in names:
        np.testing.assert_allclose(np.asarray(got[k]), tp[k].detach().numpy(), rtol=0, atol=1e-13, err_msg=k)
    np.testing.assert_array_equal(np.asarray(got["norm"]), w0["norm"])  # in no group: never optimised


def test_group_errors():
    c = _group_config(1.0)
    c.optimizer.groups.backbone.params = ()
    with pytest.raises(ConfigError, match="optimizer.groups.backbone.params is empty"):
        optim.build(c, 3)
