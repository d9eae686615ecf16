"""`train_and_evaluate(config, workdir)`: the training loop behind scripts/train.py.

Resume order, stated once: the workdir's own latest checkpoint > `config.resume_from` (another
workdir) > `config.init_from` (a converted or trained model directory) > initialisation from scratch.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_jax import data, models, pretrained, tasks
from fer_jax.errors import CheckpointError, ConfigError, UserError
from fer_jax.evaluate import driver
from fer_jax.evaluate import metrics as metrics_lib
from fer_jax.train import checkpoints, optim, parallel, reporting, state as state_lib, steps
from fer_jax.train.config import validate


class TrainingError(UserError):
    """Training cannot continue (e.g. the loss became non-finite)."""


def setup_distributed(cfg: ml_collections.ConfigDict) -> None:
    """Joins a multi-process run (`config.distributed`); a no-op for one process."""
    if cfg.num_processes > 1:
        host, _, port = cfg.coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"distributed.coordinator_address={cfg.coordinator_address!r}: use HOST:PORT of "
                              "process 0")
        jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                                   num_processes=cfg.num_processes, process_id=cfg.process_id)


def build_sources(cfg: ml_collections.ConfigDict) -> tuple[Any, Any]:
    return driver.recipe_source(cfg, cfg.train_split, "train"), driver.recipe_source(cfg, cfg.eval_split, "eval")


def build_module(config: ml_collections.ConfigDict, axis_name: str | None, num_classes: int):
    """The network of the recipe, checked against its declared hyperparameters and the data's classes."""
    hparams = {k: v for k, v in config.model.items() if k != "name"}
    spec = models.spec(config.model.name)
    unknown = sorted(set(hparams) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not a hyperparameter of {config.model.name} "
                          f"(it has: {', '.join(spec.defaults)})")
    declared = spec.num_classes(hparams)
    if declared is not None and declared != num_classes:
        raise ConfigError(f"model.{spec.num_classes_key}={declared} but the {config.data.name} "
                          f"{config.data.train_split} split has {num_classes} classes")
    module = models.create(config.model.name, **hparams, axis_name=axis_name, dtype=compute_dtype(config))
    return module, spec, hparams


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
    """The model's computation dtype: bfloat16, or None (that of the float32 inputs and parameters)."""
    return jnp.bfloat16 if config.compute_dtype == "bfloat16" else None


def initial_state(config, workdir, module, spec, task, tx, log) -> tuple[Any, dict[str, Any]]:
    """The host state to start from and its record, following the resume order (module docstring)."""
    size = config.data.image_size
    abstract = jax.eval_shape(lambda: state_lib.create(module, spec, task, tx, size, config.seed))
    for directory, label in ((workdir, "resuming"), (config.resume_from, "resuming from resume_from")):
        if not directory:
            continue
        read_only = directory != workdir
        if read_only and not os.path.isdir(os.path.join(directory, "checkpoints")):
            raise CheckpointError(f"resume_from={directory!r} has no checkpoints/ directory")
        ckpts = checkpoints.Checkpoints(directory, keep=1, read_only=read_only)
        step = ckpts.latest_step()
        if step is not None:
            host, record = ckpts.restore(step, abstract)
            ckpts.close()
            log(f"{label}: {ckpts.directory}/{step} (epoch {record['epoch']})")
            return host, record
        ckpts.close()
        if read_only:
            raise CheckpointError(f"resume_from={directory!r} holds no finished checkpoint")
    host = jax.device_get(state_lib.create(module, spec, task, tx, size, config.seed))
    if config.init_from:
        variables, report = pretrained.init_from(config.init_from, config.model.name,
                                                 state_lib.model_variables(host), drop=tuple(config.init_drop))
        params = {**host.params, "model": variables["params"]}
        host = host.replace(params=params, batch_stats=variables.get("batch_stats", {}),
                            opt_state=jax.device_get(tx.init(params)))
        log(f"init_from {config.init_from}: {report.summary()}")
    return host, {"epoch": 0, "best": None}


def _window_sums(window: list[dict]) -> dict[str, float]:
    """Sums over a window of step metrics (losses summed over steps; `steps` counts them)."""
    host = jax.device_get(window)
    sums = {k: float(np.sum([m[k] for m in host])) for k in host[0]}
    sums["steps"] = len(host)
    return sums


def _means(sums: dict[str, float]) -> dict[str, float]:
    """Per-step means of the losses and the accuracy of the decisions, from `_window_sums`."""
    out = {k: v / sums["steps"] for k, v in sums.items() if k not in ("correct", "count", "steps")}
    out["accuracy"] = sums["correct"] / max(sums["count"], 1)
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, log=print) -> dict[str, Any]:
    """Trains and evaluates a recipe in `workdir`; returns the final and best evaluation metrics.

    Raises:
      UserError: bad configuration, dataset or checkpoint, or a non-finite loss.
    """
    validate(config)
    setup_distributed(config.distributed)
    primary = jax.process_index() == 0
    if not primary:  # one voice per run: process 0 reports, writes metrics and the best model
        log = lambda *args: None  # noqa: E731
    train_src, eval_src = build_sources(config.data)
    spe = data.steps_per_epoch(len(train_src), config.batch_size)
    if spe == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(train_src)} training examples")
    total = config.num_epochs * spe if config.num_train_steps < 0 else config.num_train_steps
    axis_name = parallel.AXIS if config.parallel == "pmap" else None
    module, spec, hparams = build_module(config, axis_name, train_src.num_classes)
    task = tasks.create(config.task)
    tx, schedule = optim.build(config, spe, frozen=spec.frozen(hparams))
    compute = compute_dtype(config)
    dp = parallel.DataParallel(
        config.parallel,
        functools.partial(steps.train_step, module=module, spec=spec, task=task, tx=tx, compute_dtype=compute),
        functools.partial(driver.eval_step, module=module, spec=spec, task=task, compute_dtype=compute),
        config.batch_size)
    # Everything above can refuse the configuration or the dataset; only now is the workdir touched.
    os.makedirs(workdir, exist_ok=True)
    if primary:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    host, record = initial_state(config, workdir, module, spec, task, tx, log)
    start = int(host.step)
    log(f"{config.model.name} {hparams} on {config.data.name}: {len(train_src)} train / {len(eval_src)} "
        f"{config.data.eval_split} examples, {spe} steps/epoch, steps {start}..{total}, "
        f"{jax.device_count()} device(s) via {config.parallel}")
    run = _Run(config, workdir, (module, spec, task), dp, schedule, spe, total, train_src, eval_src, primary, log)
    return run.loop(dp.put_state(host), start, record)


class _Run:
    """The mutable parts of one training run (iterators, writers, checkpoints)."""

    def __init__(self, config, workdir, model, dp, schedule, spe, total, train_src, eval_src, primary, log):
        self.config, self.workdir, self.dp, self.schedule = config, workdir, dp, schedule
        self.model, self.spec, self.task = model  # (module, its ModelSpec, the task)
        self.spe, self.total, self.train_src, self.eval_src = spe, total, train_src, eval_src
        self.primary, self.log = primary, log
        self.ckpts = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
        self.writer = reporting.MetricWriter(workdir, active=primary)
        self.progress = reporting.Progress(total, config.batch_size,
                                           stream=None if primary else open(os.devnull, "w"))
        self.epoch_sums: dict[str, float] = {}  # training metrics of the current epoch

    def data_kwargs(self) -> dict[str, Any]:
        d = self.config.data
        return {"process_index": jax.process_index(), "process_count": jax.process_count(),
                "num_workers": d.num_workers, "read_threads": d.read_threads, "prefetch": d.prefetch}

    def loop(self, state: Any, start: int, record: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        it = data.train_iterator(self.train_src, cfg.data.train_pp, global_batch=cfg.batch_size, seed=cfg.seed,
                                 start_step=start, sampler=cfg.data.sampler, **self.data_kwargs())
        last_good = {**record, "step": start} if start else record
        window, result = [], {"best": record.get("best")}
        try:
            for step in range(start, self.total):
                state, m = self.dp.train(state, self.dp.put_batch(next(it)))
                window.append(m)
                done = step + 1
                if step == start:
                    jax.block_until_ready(m)
                    self.progress.started(done)
                epoch_end = done % self.spe == 0 or done == self.total
                if done % cfg.log_every_steps == 0 or epoch_end or done % cfg.checkpoint_every_steps == 0:
                    self.report_train(done, window, last_good)
                    window = []
                if epoch_end:
                    result = self.end_of_epoch(state, done, result, it)
                if epoch_end or done % cfg.checkpoint_every_steps == 0:
                    record = {"epoch": math.ceil(done / self.spe), "best": result.get("best")}
                    self.ckpts.save(done, self.dp.get_state(state), record)
                    last_good = {**record, "step": done}
        finally:
            it.close()
            self.ckpts.close()
            self.writer.close()
        return result

    def report_train(self, done: int, window: list[dict], last_good: dict) -> None:
        sums = _window_sums(window)
        self.epoch_sums = {k: self.epoch_sums.get(k, 0.0) + v for k, v in sums.items()}
        scalars = _means(sums)
        if not all(math.isfinite(v) for v in scalars.values()):
            where = (f"the last good checkpoint is step {last_good['step']} in {self.ckpts.directory}"
                     if "step" in last_good else "no checkpoint was written")
            raise TrainingError(f"loss became non-finite ({scalars['loss']}) by step {done}; stopped; {where}; "
                                "lower optimizer.lr or check the data")
        scalars["lr"] = float(self.schedule(jnp.asarray(done - 1)))
        self.writer.write(done, "train", {**scalars, "images_per_second": self.progress.rate(done)})
        epoch = math.ceil(done / self.spe)
        self.progress.update(done, epoch, math.ceil(self.total / self.spe),
                             {k: scalars[k] for k in ("loss", "accuracy", "lr")})

    def end_of_epoch(self, state: Any, done: int, result: dict, it: Any) -> dict:
        cfg = self.config
        epoch = math.ceil(done / self.spe)
        train = _means(self.epoch_sums)
        self.epoch_sums = {}
        self.writer.write(done, "train_epoch", {**train, "epoch": epoch})
        skipped = f"; {it.num_substituted} unreadable train images replaced" if it.num_substituted else ""
        line = f"epoch {epoch}: train loss {train['loss']:.4f}, accuracy {train['accuracy']:.4f}{skipped}"
        if epoch % cfg.eval_every_epochs and done != self.total:
            self.progress.message(line)
            return result
        eval_it = data.eval_iterator(self.eval_src, cfg.data.eval_pp, global_batch=self.eval_batch(),
                                     **self.data_kwargs())
        try:
            m = self.evaluate(state, eval_it)
        finally:
            eval_it.close()
        if cfg.best_metric not in m:
            raise ConfigError(f"best_metric={cfg.best_metric!r} is not an evaluation metric "
                              f"({', '.join(k for k, v in m.items() if isinstance(v, float))})")
        self.writer.write(done, cfg.data.eval_split, {**m, "epoch": epoch})
        self.progress.message(f"{line} | {cfg.data.eval_split} {metrics_lib.summary_line(m)}")
        best = result.get("best")
        if best is None or m[cfg.best_metric] > best[cfg.best_metric]:
            best = {**{k: v for k, v in m.items() if isinstance(v, float)}, "step": done, "epoch": epoch}
            self.save_best(state, best)
        return {"final": m, "best": best}

    def evaluate(self, state: Any, iterator: Any) -> dict:
        """One pass of the evaluation driver over the held-out split."""
        variables = state_lib.model_variables(state)
        # Host copies only where the task aggregates on the host with the network (video networks).
        host = self.dp.get_state(variables) if self.spec.video is not None else None
        ctx = driver.context(self.model, self.spec, host, self.eval_src)
        return driver.run(lambda b: self.dp.evaluate(variables, b), (self.dp.put_batch(b) for b in iterator),
                          self.task, ctx)

    def eval_batch(self) -> int:
        return self.config.eval_batch_size if self.config.eval_batch_size > 0 else self.config.batch_size

    def save_best(self, state: Any, best: dict) -> None:
        """The best model so far as a model directory: `fer_jax.load_pretrained(workdir/best)`,
        `porting/export.py workdir/best` and `--config.init_from` all read it."""
        if not self.primary:
            return
        host = self.dp.get_state(state)
        hparams = {k: v for k, v in self.config.model.items() if k != "name"}
        pretrained.save_pretrained(os.path.join(self.workdir, "best"), self.config.model.name, hparams,
                                   state_lib.model_variables(host),
                                   {"trained": {**best, "workdir": os.path.abspath(self.workdir),
                                                "class_names": list(self.train_src.class_names),
                                                "task": self.train_src.task, "eval_pp": self.config.data.eval_pp}},
                                   overwrite=True)
        with open(os.path.join(self.workdir, "best_metrics.json"), "w") as f:
            json.dump(best, f, indent=2)
