"""FERAtt's training pieces against torch written from shared/reference/feratt.md (sections 3-4), in float64:
the attention loss + CE and the gradient of upstream's (loss x batch size) objective, the DGMM loss of
FERAtt+Rep (mixup on float labels) and its gradient, torch.optim.Adam(amsgrad=True) step by step (float64
and float32), the paper's precision / recall / F1, and one training step on 2 simulated devices against
the same global batch on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from fer_jax import losses, tasks
from fer_jax.errors import ConfigError
from fer_jax.train import config as config_lib
from fer_jax.train import optim
from porting.reference import training

# float64 on both sides: a correct port agrees to ~1e-15; any semantic difference (a missing x B, the
# clamp's or |.|'s gradient at a tie, a mean over the wrong set) is >= 1e-4.
TOL = 1e-10


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


# --- torch references, written from the fact sheet -----------------------------------------------------


torch_attloss, torch_dgmm = training.attention_loss, training.dgmm


def t64(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


# --- losses ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feratt_batch():
    rng = np.random.default_rng(0)
    b, k = 6, 8
    x_org = rng.random((b, 8, 8, 3))
    x_org[:, :2] = 0.0  # the black background around the face
    att = np.maximum(rng.normal(0.4, 0.4, x_org.shape), 0.0)  # ReLU output: exact zeros
    att[:, :2, :4] = 0.0  # att == x_org exactly: |d| = 0, where torch's abs passes no gradient
    att[0, 5] = x_org[0, 5]
    return {"logits": rng.normal(0, 2, (b, k)), "label": rng.integers(0, k, b), "att": att, "x_org": x_org}


def test_feratt_objective_is_loss_times_batch_like_upstream(feratt_batch):
    """CE + 5 clamp(mean tanh(3|x_org - att|), 30) and the gradient of (loss x B), as attnet's training."""
    d = feratt_batch
    logits_t, att_t = t64(d["logits"]), t64(d["att"])
    ce_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(d["label"]))
    att_loss_t = torch_attloss(torch.from_numpy(d["x_org"]), att_t)
    loss_t = ce_t + att_loss_t
    (loss_t * len(d["label"])).backward()
    task = tasks.FERAtt()
    with jax.enable_x64(True):
        batch = {"label": jnp.asarray(d["label"]), "x_org": jnp.asarray(d["x_org"])}

        def objective(logits, att):
            return task.loss({"y": logits, "att": att}, logits, batch, {}, None)

        (obj, terms), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            jnp.asarray(d["logits"]), jnp.asarray(d["att"]))
    assert rel(terms["ce"], ce_t.item()) < TOL and rel(terms["att"], att_loss_t.item()) < TOL
    assert rel(terms["loss"], loss_t.item()) < TOL  # the logged loss is the plain one
    assert rel(obj, loss_t.item() * 6) < TOL
    assert rel(grads[0], logits_t.grad) < TOL and rel(grads[1], att_t.grad) < TOL
    # |d| = 0 where att == x_org: torch passes no gradient there (jnp.abs would pass tanh's slope 3 x 5 / N)
    assert np.all(np.asarray(grads[1])[:, :2, :4] == 0.0)


def test_representation_objective_is_the_plain_loss(feratt_batch):
    """attgmmnet: (CE + DGMM + Latt).backward(), not x batch; the DGMM term is computed on "z"."""
    d = feratt_batch
    z = np.random.default_rng(1).normal(0, 0.4, (6, 4))
    task = tasks.FERAtt(dgmm=True, scale_by_batch=False, mixup=False)
    with jax.enable_x64(True):
        batch = {"label": jnp.asarray(d["label"]), "x_org": jnp.asarray(d["x_org"])}
        obj, terms = task.loss({"z": jnp.asarray(z), "y": jnp.asarray(d["logits"]), "att": jnp.asarray(d["att"])},
                               jnp.asarray(d["logits"]), batch, {}, None)
    dgmm_t = torch_dgmm(torch.from_numpy(z), torch.from_numpy(d["label"]), 8)
    assert rel(terms["dgmm"], dgmm_t.item()) < TOL
    assert float(obj) == float(terms["loss"]) == float(terms["ce"] + terms["att"] + terms["dgmm"])


def test_task_refuses_a_batch_without_the_clean_face():
    with pytest.raises(ConfigError, match="x_org"):
        tasks.FERAtt().loss({"y": jnp.zeros((2, 3)), "att": jnp.zeros((2, 4, 4, 3))}, jnp.zeros((2, 3)),
                            {"label": jnp.zeros(2, jnp.int32)}, {}, None)
    with pytest.raises(ConfigError, match="'z'"):
        tasks.FERAtt(dgmm=True).loss({"y": jnp.zeros((2, 3)), "att": jnp.zeros((2, 4, 4, 3))}, jnp.zeros((2, 3)),
                                     {"label": jnp.zeros(2, jnp.int32), "x_org": jnp.zeros((2, 4, 4, 3))}, {}, None)


DGMM_CASES = {
    "mixup": (0.37, True), "mixup-lam-half": (0.5, True), "no-mixup": (None, True), "far-apart": (0.61, False)}


@pytest.mark.parametrize("case", list(DGMM_CASES))
def test_dgmm_matches_torch(case):
    lam, near = DGMM_CASES[case]
    rng = np.random.default_rng(7)
    labels = np.array([0, 1, 1, 2, 2, 2, 4, 0, 1, 4, 4, 2])  # class 3 absent: its column stays 0
    z = rng.normal(0, 0.35 if near else 3.0, (12, 5))  # far apart: most p underflow to 0 or are ~1
    perm = np.array([7, 2, 1, 5, 3, 4, 9, 0, 11, 10, 6, 8])  # mostly same-class pairs: c lam + c (1 - lam)
    z_t = t64(z)
    ref = torch_dgmm(z_t, torch.from_numpy(labels), 6, lam, torch.from_numpy(perm) if lam is not None else None)
    ref.backward()
    with jax.enable_x64(True):
        value, grad = jax.value_and_grad(lambda z: losses.dgmm_loss(
            z, jnp.asarray(labels), 6, lam, jnp.asarray(perm) if lam is not None else None))(jnp.asarray(z))
    assert rel(value, ref.item()) < TOL and rel(grad, z_t.grad) < TOL


def test_dgmm_mixed_labels_match_a_class_only_when_exactly_integral():
    """y lam + y[perm] (1 - lam) for two examples of class 3 is 3 only if the float arithmetic says so
    (lam 0.2: 3.0000000000000004 in float64; lam 0.1 in float32: 2.9999998), as upstream's `y == int(c)`
    decides; so such a mixed pair matches no class, here as in torch (no fused multiply-add either side)."""
    for lam, dtype, torch_dtype in ((0.2, jnp.float64, torch.float64), (0.1, jnp.float32, torch.float32),
                                    (0.5, jnp.float64, torch.float64)):
        with jax.enable_x64(True):
            y = jnp.asarray([3, 3], dtype)
            mixed = np.asarray(jax.jit(lambda y, lam: y * lam + y[jnp.array([1, 0])] * (1 - lam))(
                y, jnp.asarray(lam, dtype)))
        torch_y = torch.tensor([3.0, 3.0], dtype=torch_dtype)
        torch_lam = torch.tensor([lam], dtype=torch_dtype)
        torch_mixed = (torch_y * torch_lam + torch_y[[1, 0]] * (1 - torch_lam)).numpy()
        np.testing.assert_array_equal(mixed, torch_mixed)
        assert (mixed[0] == 3.0) == (lam == 0.5)


def test_torch_clamp_and_abs_gradients_at_ties():
    for x in (0.0, 0.5, 1.0, 1.5, -0.5):
        t = torch.tensor(x, requires_grad=True)
        torch.clamp(t, 0.0, 1.0).backward()
        assert float(jax.grad(lambda v: losses.torch_clamp(v, 0.0, 1.0))(x)) == t.grad.item()
        t = torch.tensor(x, requires_grad=True)
        torch.abs(t).backward()
        assert float(jax.grad(losses.torch_abs)(x)) == t.grad.item()
        assert float(losses.torch_abs(jnp.float32(x))) == abs(x)


def test_dgmm_draws_are_beta_2_2_and_permutations():
    lams, perms = jax.vmap(lambda k: losses.dgmm_draws(k, 8))(jax.random.split(jax.random.key(0), 4000))
    lams = np.asarray(lams)
    # Beta(2, 2): mean 1/2, variance 1/20; 4000 draws give standard errors 0.0035 and 0.0013
    assert abs(lams.mean() - 0.5) < 0.015 and abs(lams.var() - 0.05) < 0.006
    assert all(sorted(p) == list(range(8)) for p in np.asarray(perms)[:50])


def test_mixup_draws_come_from_the_step_key():
    """The DGMM mixup is drawn from the key the training step hands the task: the same key gives the same
    loss, another key another loss, and no key is refused rather than silently fixed."""
    rng = np.random.default_rng(3)
    outputs = {"z": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32), "y": jnp.zeros((8, 3)),
               "att": jnp.zeros((8, 4, 4, 3))}
    batch = {"label": jnp.array([0, 1, 2, 0, 1, 2, 0, 1]), "x_org": jnp.zeros((8, 4, 4, 3))}
    task = tasks.FERAtt(dgmm=True, scale_by_batch=False)

    def dgmm(key):
        return float(task.loss(outputs, outputs["y"], batch, {}, None, rng=key)[1]["dgmm"])

    assert dgmm(jax.random.key(1)) == dgmm(jax.random.key(1)) != dgmm(jax.random.key(2))
    with pytest.raises(ValueError, match="rng"):
        dgmm(None)


# --- the paper's scores ------------------------------------------------------------------------------------


def test_paper_scores_follow_eval_py():
    """sklearn's macro precision / recall over the labels in y or yhat, F1 = 2PR / (P + R) of the macros."""
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    yhat = np.array([0, 1, 3, 1, 1, 2, 0, 2, 2])  # class 3 predicted but absent, class 4 in neither
    confusion = np.zeros((5, 5), np.int64)
    np.add.at(confusion, (y, yhat), 1)
    scores = tasks.paper_scores(confusion)
    precision = [1 / 2, 2 / 3, 3 / 3, 0.0]  # labels 0..3; 3 was predicted once, wrongly
    recall = [1 / 3, 2 / 2, 3 / 4, 0.0]  # label 3 has no example: recall 0 (sklearn's zero_division)
    p, r = np.mean(precision), np.mean(recall)
    assert scores["precision"] == pytest.approx(p, abs=1e-15) and scores["recall"] == pytest.approx(r, abs=1e-15)
    assert scores["f1"] == pytest.approx(2 * p * r / (p + r), abs=1e-15)
    assert scores["per_class_precision"][4] == 0.0
    empty = tasks.paper_scores(np.zeros((3, 3), np.int64))
    assert (empty["precision"], empty["recall"], empty["f1"]) == (0.0, 0.0, 0.0)


# --- Adam with amsgrad=True -----------------------------------------------------------------------------


def grads_sequence(rng, steps=14):
    """Gradients that shrink after step 4, so that v falls below its running maximum (AMSGrad's max
    matters) and optax.amsgrad's maximum over the bias-corrected moment would differ."""
    out = []
    for i in range(steps):
        scale = 1.0 if i < 4 else 0.05
        out.append({"w": rng.standard_normal((3, 4)) * scale, "b": rng.standard_normal(4) * scale})
    return out


def torch_amsgrad(w0, grads, lr, weight_decay, dtype):
    # copies: torch.from_numpy shares memory, and the steps are in place
    params = {k: torch.nn.Parameter(torch.tensor(np.array(v), dtype=dtype)) for k, v in w0.items()}
    opt = torch.optim.Adam(params.values(), lr=lr, amsgrad=True, weight_decay=weight_decay)
    history = []
    for g in grads:
        opt.zero_grad()
        for k in ("w", "b"):  # "unused" never gets a gradient: torch skips it (FERAtt's encoder.fc)
            params[k].grad = torch.tensor(g[k], dtype=dtype)
        opt.step()
        history.append({k: p.detach().numpy().astype(np.float64) for k, p in params.items()})
    return history, opt.state[params["w"]]["max_exp_avg_sq"].numpy()


def jax_run(tx, w0, grads, dtype):
    params = {k: jnp.asarray(v, dtype) for k, v in w0.items()}
    state, history = tx.init(params), []
    for g in grads:
        g = {**{k: jnp.asarray(v, dtype) for k, v in g.items()}, "unused": jnp.zeros_like(params["unused"])}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        history.append({k: np.asarray(v, np.float64) for k, v in params.items()})
    return history, state


@pytest.fixture(scope="module")
def amsgrad_case():
    rng = np.random.default_rng(3)
    w0 = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4), "unused": rng.standard_normal(2)}
    return w0, grads_sequence(rng)


def test_torch_adam_amsgrad_matches_torch_float64(amsgrad_case):
    w0, grads = amsgrad_case
    ref, ref_max = torch_amsgrad(w0, grads, 1e-2, 0.0, torch.float64)
    with jax.enable_x64(True):
        ours, state = jax_run(optim.torch_adam(1e-2, amsgrad=True), w0, grads, jnp.float64)
        amsgrad_state = state[1]
        wrong, _ = jax_run(optax.chain(optax.amsgrad(1e-2)), w0, grads, jnp.float64)
    for mine, theirs in zip(ours, ref):
        for k in ("w", "b"):
            assert rel(mine[k], theirs[k]) < 1e-13  # measured ~2e-16
        np.testing.assert_array_equal(mine["unused"], w0["unused"])  # a zero gradient moves it by exactly 0
    assert rel(amsgrad_state.nu_max["w"], ref_max) < 1e-13
    assert rel(wrong[-1]["w"], ref[-1]["w"]) > 1e-4  # optax.amsgrad is not torch's (why this exists)


def test_torch_adam_amsgrad_float32_within_torch_float32_error(amsgrad_case):
    from parity import fp32_bound

    w0, grads = amsgrad_case
    ref64, _ = torch_amsgrad(w0, grads, 1e-2, 0.0, torch.float64)
    ref32, _ = torch_amsgrad(w0, grads, 1e-2, 0.0, torch.float32)
    ours, _ = jax_run(optim.torch_adam(1e-2, amsgrad=True), w0, grads, jnp.float32)
    for step in (0, 3, len(grads) - 1):
        for k in ("w", "b"):
            # our float32 against torch's float64, within 4x torch's own float32 error (floor 1e-5)
            assert rel(ours[step][k], ref64[step][k]) <= fp32_bound(ref32[step][k], ref64[step][k])


def test_config_amsgrad_with_weight_decay_and_frozen_parameters(amsgrad_case):
    """`optimizer.amsgrad` from a recipe through `optim.build`, with coupled L2 and a frozen module path
    (ModelSpec.frozen): the frozen parameter is neither decayed nor moved, as torch skips gradless ones."""
    w0, grads = amsgrad_case
    ref, _ = torch_amsgrad(w0, grads, 1e-3, 1e-2, torch.float64)
    c = config_lib.base()
    c.optimizer.update(name="adam", lr=1e-3, weight_decay=1e-2)
    c.optimizer.amsgrad = True
    with jax.enable_x64(True):
        tx, _ = optim.build(c, steps_per_epoch=5, frozen=("encoder.fc",))
        params = {"model": {"net": {"w": jnp.asarray(w0["w"]), "b": jnp.asarray(w0["b"])},
                            "encoder": {"fc": {"kernel": jnp.asarray(w0["unused"])}}}, "aux": {}}
        state = tx.init(params)
        for g in grads:
            full = {"model": {"net": {"w": jnp.asarray(g["w"]), "b": jnp.asarray(g["b"])},
                              "encoder": {"fc": {"kernel": jnp.zeros(2)}}}, "aux": {}}
            updates, state = tx.update(full, state, params)
            params = optax.apply_updates(params, updates)
    assert rel(params["model"]["net"]["w"], ref[-1]["w"]) < 1e-13
    np.testing.assert_array_equal(params["model"]["encoder"]["fc"]["kernel"], w0["unused"])
    c.optimizer.name = "sgd"
    with pytest.raises(ConfigError, match="amsgrad"):
        optim.build(c, steps_per_epoch=5)


# --- data parallelism ---------------------------------------------------------------------------------------

PMAP_CHECK = textwrap.dedent('''
    import functools, json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, optax
    from flax import linen as nn
    from fer_jax import tasks
    from fer_jax.models.contract import ModelSpec, output
    from fer_jax.train import steps
    from fer_jax.train.state import TrainState

    class Tiny(nn.Module):
        rep: bool = False

        @nn.compact
        def __call__(self, image, *, train):
            h = nn.tanh(nn.Dense(6, name="enc", param_dtype=jnp.float64)(image.reshape(image.shape[0], -1)))
            att = nn.relu(nn.Dense(48, name="dec", param_dtype=jnp.float64)(h)).reshape(image.shape)
            y = nn.Dense(4, name="cls", param_dtype=jnp.float64)(h)
            g = jnp.zeros(image.shape[:3] + (4,), image.dtype)
            if self.rep:
                return nn.Dense(3, name="emb", param_dtype=jnp.float64)(h), y, att, g, g
            return y, att, g, g

    rng = np.random.default_rng(0)
    batch = {"image": rng.random((8, 4, 4, 3)), "x_org": rng.random((8, 4, 4, 3)),
             "label": np.array([0, 1, 2, 3, 0, 1, 1, 2], np.int32)}
    out = {}
    for name, task, rep in (("cls", tasks.FERAtt(), False),
                            ("rep", tasks.FERAtt(dgmm=True, scale_by_batch=False), True)):
        module = Tiny(rep)
        outputs = ("z", "y", "att", "g_att", "g_ft") if rep else ("y", "att", "g_att", "g_ft")
        spec = ModelSpec(Tiny, (4, 4), {}, outputs=outputs, predict=output("y"))
        params = {"model": module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)["params"], "aux": {}}
        tx = optax.sgd(1.0)  # the parameter change is minus the gradient
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                           rng=jax.random.key_data(jax.random.key(0)))
        step = functools.partial(steps.train_step, module=module, spec=spec, task=task, tx=tx)
        one, m1 = jax.jit(step)(state, batch)
        rep_state = jax.tree.map(lambda x: jnp.stack([x, x]), state)
        sharded = {k: v.reshape(2, 4, *v.shape[1:]) for k, v in batch.items()}
        two, m2 = jax.pmap(functools.partial(step, axis_name="d"), axis_name="d")(rep_state, sharded)
        grad = jax.tree.map(lambda a, b: a - b, state.params, one.params)
        diff = max(float(jnp.max(jnp.abs(a - b[0]))) for a, b in
                   zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)))
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grad))
        out[name] = {"params": diff / scale, "scale": scale, "devices": jax.device_count(),
                     "loss": abs(float(m1["loss"]) - float(m2["loss"][0])),
                     "dgmm": abs(float(m1.get("dgmm", 0.0)) - float(m2.get("dgmm", np.zeros(2))[0]))}
    print(json.dumps(out))
''')


def test_two_devices_give_the_global_batch_gradient():
    """pmap over 2 simulated devices (4 examples each) == one device on the 8 examples: the objective x the
    *global* B (FERAtt+Cls), and the DGMM term over the whole batch, its mixup draws equal on both devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", PMAP_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for name, diffs in results.items():
        assert diffs["devices"] == 2
        # float64: a per-device B instead of the global one is 2x off, per-device class means ~1e-1 off
        assert diffs["params"] < 1e-12 and diffs["loss"] < 1e-12 and diffs["dgmm"] < 1e-12, (name, diffs)
