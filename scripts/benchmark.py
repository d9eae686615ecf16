"""Throughput of fer-jax against the PyTorch reference on this machine, as ratios from one run.

    python scripts/benchmark.py [--arch dan] [--image_size 96] [--batch 32] [--steps 5] [--out report.json]

Times a training step (forward, loss, backward, SGD update; DAN's three losses) and an eval-mode forward
for the Flax model (jit, compilation excluded) and for the plain-torch reference (eager, same threads),
plus the grain input pipeline with the recipe's augmentation. Needs the torch extra.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from fer_jax import cli

_ARCH = flags.DEFINE_enum("arch", "dan", ["dan", "resnet18"], "network")
_SIZE = flags.DEFINE_integer("image_size", 96, "input side (use >= 72 on CPU: see README)")
_BATCH = flags.DEFINE_integer("batch", 32, "batch size")
_STEPS = flags.DEFINE_integer("steps", 5, "timed repetitions (after one warm-up)")
_OUT = flags.DEFINE_string("out", None, "write the report as JSON here")


def timed(fn, steps: int) -> float:
    """Seconds per call, after one untimed warm-up call (compilation for jax)."""
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def jax_side(arch: str, size: int, batch: int, steps: int) -> dict[str, float]:
    import functools

    import jax
    import numpy as np

    from fer_jax import models, tasks, xla
    from fer_jax.train import optim, state as state_lib, steps as steps_lib

    spec = models.spec(arch)
    module = models.create(arch, **{spec.num_classes_key: 7})
    task = tasks.Dan(8) if arch == "dan" else tasks.Classification()
    tx = optim.torch_sgd(0.1, 0.9, 1e-4)
    state = state_lib.create(module, spec, task, tx, size, seed=0)
    rng = np.random.default_rng(0)
    b = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in spec.example_inputs(batch, size).items()}
    b["label"] = rng.integers(0, 7, batch).astype(np.int32)
    # Compiled as training and evaluation compile them (fer_jax.xla's per-kind XLA options).
    train = xla.jit(functools.partial(steps_lib.train_step, module=module, spec=spec, task=task, tx=tx), "train")
    forward = xla.jit(lambda v, inputs: module.apply(v, *inputs, train=False), "eval")
    holder = {"state": state}

    def train_once():
        holder["state"], m = train(holder["state"], b)
        jax.block_until_ready(m)

    variables = state_lib.model_variables(state)
    return {"train_step_s": timed(train_once, steps),
            "eval_forward_s": timed(lambda: jax.block_until_ready(forward(variables, spec.batch_inputs(b))),
                                     steps)}


def torch_side(arch: str, size: int, batch: int, steps: int) -> dict[str, float]:
    import torch

    from porting import reference

    model = reference.DAN(7, 4) if arch == "dan" else reference.resnet18(7)
    params = list(model.parameters())
    aff = reference.AffinityLoss(8, 512) if arch == "dan" else None
    if aff is not None:
        params.append(aff.centers)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 7, (batch,))

    def train_once():
        model.train()
        opt.zero_grad()
        out = model(x)
        if arch == "dan":
            loss = (torch.nn.functional.cross_entropy(out[0], y) + aff(out[1], y)
                    + reference.PartitionLoss()(out[2]))
        else:
            loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    return {"train_step_s": timed(train_once, steps), "eval_forward_s": timed(forward, steps),
            "threads": torch.get_num_threads()}


def pipeline_side(size: int, batch: int, steps: int) -> dict[str, float]:
    import tempfile

    from fer_jax import data

    with tempfile.TemporaryDirectory() as tmp:
        root = data.make_synthetic("rafdb", f"{tmp}/rafdb", num_train=batch * (steps + 2), num_test=8)
        source = data.create_source("rafdb", root, "train")
        pp = (f"resize({size},{size})|hflip(0.5)|random_apply(0.2,'rotate(20)','crop({size},padding=4)')"
              "|to_float|normalize('imagenet')|erase(0.5,(0.02,0.25))")
        it = data.train_iterator(source, pp, global_batch=batch, seed=0)
        try:
            return {"batch_s": timed(lambda: next(it), steps)}
        finally:
            it.close()


def main(argv: list[str]) -> None:
    del argv
    arch, size, batch, steps = _ARCH.value, _SIZE.value, _BATCH.value, _STEPS.value
    report = {"arch": arch, "image_size": size, "batch": batch,
              "jax": jax_side(arch, size, batch, steps), "torch": torch_side(arch, size, batch, steps),
              "pipeline": pipeline_side(size, batch, steps)}
    for key in ("train_step_s", "eval_forward_s"):
        report[f"{key[:-2]}_speed_ratio_jax_over_torch"] = report["torch"][key] / report["jax"][key]
    print(f"{arch} {size}x{size}, batch {batch}, this CPU:")
    for side in ("jax", "torch"):
        r = report[side]
        print(f"  {side:>5}: train {batch / r['train_step_s']:7.1f} img/s, eval {batch / r['eval_forward_s']:7.1f} img/s")
    print(f"  speed ratio fer-jax / torch: train {report['train_step_speed_ratio_jax_over_torch']:.2f}, "
          f"eval {report['eval_forward_speed_ratio_jax_over_torch']:.2f}")
    print(f"  grain pipeline (decode + recipe augmentation): {batch / report['pipeline']['batch_s']:.0f} img/s")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    app.run(lambda argv: cli.run_user(lambda: main(argv)), flags_parser=cli.flags_parser([]))
