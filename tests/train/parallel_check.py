"""Runs one DAN training step three ways and prints the differences as JSON (run in a subprocess).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python parallel_check.py REFERENCE
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python parallel_check.py REFERENCE PORT NUM_PROCESSES PROCESS_ID

The second form joins a multi-process run on loopback (jax.distributed); every process feeds its own
rows of each global batch, and process 0 prints the result. REFERENCE is a file for the single-device
results (a): a single-process run writes it when it does not exist, and every run reads it when it does,
so the multi-process run does not recompute them (all its processes read the same file, so they reach
the collectives together).

(a) one device on the global batch (the reference), (b) `pmap` over all devices, (c) `jit` over a Mesh.
Float64, so any difference above ~1e-12 is semantic (a missing pmean, unsynchronised BatchNorm
statistics, double-counted gradients), not rounding. Two steps compare the losses, the updated parameters,
BatchNorm statistics and optimizer state: of the upstream recipe (SGD momentum 0.9, weight decay 1e-4; the
updated parameters are a linear function of both steps' gradients) in the multi-process form, and of SAM(Adam)
as MFTN-FER steps it in the single-process form. Both forms check Emotion-FAN's video-level evaluation.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import sys

import jax

jax.config.update("jax_enable_x64", True)
REFERENCE = sys.argv[1]
if len(sys.argv) == 5:
    port, num_processes, process_id = map(int, sys.argv[2:])
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id)

import numpy as np  # noqa: E402

from fer_jax import models, tasks, xla  # noqa: E402
from fer_jax.evaluate import driver  # noqa: E402
from fer_jax.train import optim, parallel, state as state_lib, steps  # noqa: E402

SIZE, BATCH = 64, 4  # 1 row a device; layer4 maps 2x2
VIDEO_BATCH = 8  # frames per evaluation batch of the video check


def float64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating)
                        else np.asarray(a), tree)


def max_diff(a, b) -> float:
    """max over leaves of max|x - y| / max(1, max|y|)."""
    def diff(x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return float(np.max(np.abs(x - y)) / max(1.0, np.max(np.abs(y)))) if x.size else 0.0

    return max(jax.tree.leaves(jax.tree.map(diff, a, b)), default=0.0)


def run(mode: str | None, tx, host_state, batches):
    axis = parallel.AXIS if mode == "pmap" else None
    module = models.create("dan", num_class=7, num_head=4, axis_name=axis)
    task = tasks.Dan(num_centers=8)
    spec = models.spec("dan")
    train = functools.partial(steps.train_step, module=module, spec=spec, task=task, tx=tx)
    if mode is None:  # the reference: one device, global batch, no parallel machinery
        step = xla.jit(train, "train")  # compiled as DataParallel compiles it
        state = jax.device_put(host_state, jax.local_devices()[0])
        losses = []
        for b in batches:
            state, m = step(state, b)
            losses.append(float(m["loss"]))
        return jax.device_get(state), losses
    dp = parallel.DataParallel(mode, train, functools.partial(driver.eval_step, module=module, spec=spec,
                                                                   task=task), BATCH)
    state, losses = dp.put_state(host_state), []
    rows = BATCH // jax.process_count()
    local = ({k: v[jax.process_index() * rows:(jax.process_index() + 1) * rows] for k, v in b.items()}
             for b in batches)  # this process's rows of each global batch
    for placed in dp.prefetch(local, 1):  # placed on the devices a step ahead, as the training loop does
        state, m = dp.train(state, placed)
        losses.append(float(m["loss"]))
    return dp.get_state(state), losses


@functools.cache
def video_variables() -> dict:
    """Emotion-FAN's variables for `video_eval` (initialised once, every mode evaluates the same)."""
    spec = models.spec("emotion_fan")
    example = {k: np.zeros(v.shape) for k, v in spec.example_inputs(1, 32).items()}
    return float64(jax.device_get(spec.init(models.create("emotion_fan", num_class=7), jax.random.key(3), example)))


def video_eval(mode: str | None) -> dict:
    """Emotion-FAN's video-level evaluation (per-frame values gathered from every device, aggregated per
    video on the host) over two padded batches of frames of 3 ragged videos."""
    axis = parallel.AXIS if mode == "pmap" else None
    spec = models.spec("emotion_fan")
    module = models.create("emotion_fan", num_class=7, axis_name=axis)
    host = models.create("emotion_fan", num_class=7)
    rng = np.random.default_rng(5)
    variables = video_variables()
    video = np.array([[0, 1, 0, 2, 1, 0, 2, 1], [2, 0, 1, 1, -1, -1, -1, -1]])
    batches = [{"image": rng.random((VIDEO_BATCH, 32, 32, 3)), "label": np.where(v >= 0, v % 7, 0), "video": v,
                "mask": v >= 0} for v in video]

    class Videos:  # what the driver reads of an evaluation source
        class_names, num_videos = [str(i) for i in range(7)], 3

    task = tasks.VideoClassification()
    ctx = driver.context(host, spec, variables, Videos)
    step = functools.partial(driver.eval_step, module=module, spec=spec, task=task)
    if mode is None:
        return driver.run(functools.partial(xla.jit(step, "eval"), variables), batches, task, ctx)
    dp = parallel.DataParallel(mode, None, step, VIDEO_BATCH)
    placed = dp.put_state(variables)
    rows = VIDEO_BATCH // jax.process_count()
    local = [{k: v[jax.process_index() * rows:(jax.process_index() + 1) * rows] for k, v in b.items()}
             for b in batches]
    return driver.run(lambda b: dp.evaluate(placed, b), dp.prefetch(local, 2), task, ctx)


def reference(tx, batches) -> dict:
    """(a): the initial state, the state and losses after the steps on one device, and the video evaluation;
    read from REFERENCE when it exists, else computed (and written by a single-process run)."""
    if os.path.exists(REFERENCE):
        with open(REFERENCE, "rb") as f:
            return pickle.load(f)
    module = models.create("dan", num_class=7, num_head=4)
    ref = {"video": video_eval(None)}
    for name, t in tx.items():  # (a multi-process run reads the reference a single-process run wrote)
        host = float64(jax.device_get(state_lib.create(module, models.spec("dan"), tasks.Dan(8), t, SIZE, seed=1)))
        state, losses = run(None, t, host, batches)
        ref[name] = {"host": host, "state": state, "losses": losses}
    if jax.process_count() == 1:
        with open(REFERENCE + ".tmp", "wb") as f:
            pickle.dump(ref, f)
        os.replace(REFERENCE + ".tmp", REFERENCE)
    return ref


def main():
    rng = np.random.default_rng(0)
    batches = [{"image": rng.standard_normal((BATCH, SIZE, SIZE, 3)), "label": rng.integers(0, 7, BATCH)}
               for _ in range(2)]
    results = {"devices": jax.device_count()}
    # the DAN recipe's SGD, two steps; and SAM(Adam) as MFTN-FER steps it, whose perturbation needs the norm of
    # the *global* gradient and whose second pass is again a global-batch mean
    # Adam's eps is 1e-3 here, not MFTN-FER's 1e-8: a step moves a parameter by lr * m / (sqrt(v) + eps), so where
    # |g| is near eps a rounding difference dg of the global gradient (float64 sums over 4 devices against 1:
    # ~1e-14) moved it by up to lr / eps * dg = 1e5 * dg, above the rounding bound every other value is held to.
    # With eps = lr that gain is at most 1; the seam under test, the global gradient's norm and the second pass's
    # global mean, does not involve eps.
    tx = {"recipe": optim.torch_sgd(0.1, 0.9, 1e-4), "sam": optim.sam(optim.torch_adam(1e-3, eps=1e-3), 0.05)}
    # The recipe's SGD under pmap and jit is checked by the multi-process run (4 devices in 2 processes), SAM's
    # seam (the global gradient norm, a second global-batch pass) by the single-process 4-device run: each
    # parallel run costs a compilation and two steps of the full DAN, so each optimizer is checked once. The
    # single-process run computes (and writes) the recipe's reference too, for the multi-process run to read.
    name = "recipe" if jax.process_count() > 1 else "sam"
    a = reference({name: tx[name]} if jax.process_count() > 1 else tx, batches)
    host, ref, ref_loss = a[name]["host"], a[name]["state"], a[name]["losses"]
    for mode in ("pmap", "jit"):
        out, loss = run(mode, tx[name], host, batches)
        results[f"{name}/{mode}"] = {
            "loss": max(abs(x - y) for x, y in zip(loss, ref_loss)),
            "params": max_diff(out.params, ref.params),
            "batch_stats": max_diff(out.batch_stats, ref.batch_stats),
            "opt_state": max_diff(out.opt_state, ref.opt_state),
            "scale": max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(
                jax.tree.map(lambda p, q: p - q, ref.params, host.params))),
        }
    for mode in ("pmap", "jit"):
        got = video_eval(mode)
        results[f"video_eval/{mode}"] = {"confusion_equal": got["confusion"] == a["video"]["confusion"],
                                         "frames": got["frames"], "loss": abs(got["loss"] - a["video"]["loss"])}
    if jax.process_index() == 0:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
