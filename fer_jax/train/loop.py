"""`train_and_evaluate(config, workdir)`: the training loop behind scripts/train.py.

Resume order, stated once: the workdir's own latest checkpoint > `config.resume_from` (another
workdir) > `config.init_from` (a converted or trained model directory) > initialisation from scratch.

Everything that can refuse a run is checked before any work and before the workdir is touched: the
config's values, the dataset, the devices (batch divisibility), the model against the data's classes and
`init_from`, the best metric against the task, the workdir against what it holds, and the state to start
from. A refused run leaves every file as it was. While training, a state is checked to be finite before
anything is saved from it; Ctrl-C saves the current step and stops with one line.
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

from fer_jax import data, models, pretrained, tasks
from fer_jax.errors import CheckpointError, ConfigError, Interrupted, UserError
from fer_jax.evaluate import driver, figures
from fer_jax.evaluate import metrics as metrics_lib
from fer_jax.train import checkpoints, optim, parallel, reporting, state as state_lib, steps
from fer_jax.train.config import validate


class TrainingError(UserError):
    """Training cannot continue (e.g. the loss or the parameters became non-finite)."""


def setup_distributed(cfg: ml_collections.ConfigDict) -> None:
    """Joins a multi-process run (`config.distributed`, checked by `validate`); a no-op for one process."""
    if cfg.num_processes > 1:
        jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                                   num_processes=cfg.num_processes, process_id=cfg.process_id)


def build_sources(cfg: ml_collections.ConfigDict) -> tuple[Any, Any]:
    return driver.recipe_source(cfg, cfg.train_split, "train"), driver.recipe_source(cfg, cfg.eval_split, "eval")


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
    return config.eval_batch_size if config.eval_batch_size > 0 else config.batch_size


def check_batches(config: ml_collections.ConfigDict) -> None:
    """Both batch sizes must split evenly over the devices (and so over the processes).

    Raises:
      ConfigError: naming the batch size and the device count.
    """
    n = jax.device_count() if config.parallel == "jit" else jax.local_device_count() * jax.process_count()
    for key, size in (("batch_size", config.batch_size), ("eval_batch_size", eval_batch_size(config))):
        if size % n:
            raise ConfigError(f"{key}={size} is not divisible by the {n} devices; use a multiple of {n}")


def build_module(config: ml_collections.ConfigDict, axis_name: str | None, num_classes: int):
    """The network of the recipe (hyperparameters checked by `validate`), checked against the data's classes."""
    hparams = {k: v for k, v in config.model.items() if k != "name"}
    spec = models.spec(config.model.name)
    declared = spec.num_classes(hparams)
    if declared is not None and declared != num_classes:
        raise ConfigError(f"model.{spec.num_classes_key}={declared} but the {config.data.name} "
                          f"{config.data.train_split} split has {num_classes} classes")
    module = models.create(config.model.name, **hparams, axis_name=axis_name, dtype=compute_dtype(config))
    return module, spec, hparams


def check_init_from(config: ml_collections.ConfigDict, spec: models.ModelSpec, hparams: dict) -> None:
    """`init_from` is a model directory our network can start from, with our class count unless the
    recipe drops the source's classifier (`init_drop`). The variables themselves are merged, strictly,
    when the initial state is built (still before anything is written).

    Raises:
      CheckpointError: no model there, or a class count that differs without `init_drop`.
    """
    if not config.init_from:
        return
    meta = pretrained.read_metadata(config.init_from)
    if meta["arch"] != config.model.name or config.init_drop:
        return  # another architecture: its declared InitRule says what is dropped (checked by the merge)
    theirs, ours = models.spec(meta["arch"]).num_classes(meta["hparams"]), spec.num_classes(hparams)
    if theirs != ours:
        raise CheckpointError(f"init_from {config.init_from} is a {meta['arch']} with {theirs} classes "
                              f"({spec.num_classes_key}) but model.{spec.num_classes_key}={ours}: to start a new "
                              "classifier, list its modules in --config.init_drop")


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
    """The model's computation dtype: bfloat16, or None (that of the float32 inputs and parameters)."""
    return jnp.bfloat16 if config.compute_dtype == "bfloat16" else None


def initial_state(config, workdir, module, spec, task, tx, log) -> tuple[Any, dict[str, Any], str | None]:
    """The host state to start from, its record and the checkpoint directory it came from, following the
    resume order (module docstring). Reads only: nothing is written here.

    Raises:
      UserError: a checkpoint that does not fit, a model that cannot be built with its hyperparameters, or
        an `init_from` whose variables do not merge.
    """
    size = config.data.image_size
    create = functools.partial(state_lib.create, module, spec, task, tx, size, config.seed)
    try:
        abstract = jax.eval_shape(create)
    except (ValueError, TypeError) as e:
        hparams = {k: v for k, v in config.model.items() if k != "name"}
        raise ConfigError(f"model {config.model.name} {hparams} cannot be built ({str(e).splitlines()[0][:160]}); "
                          "check the model.* values") from None
    for directory, label in ((workdir, "resuming"), (config.resume_from, "resuming from resume_from")):
        if not directory:
            continue
        if directory != workdir and not os.path.isdir(os.path.join(directory, "checkpoints")):
            raise CheckpointError(f"resume_from={directory!r} has no checkpoints/ directory")
        if not checkpoints.finished_steps(directory):
            if directory != workdir:
                raise CheckpointError(f"resume_from={directory!r} holds no finished checkpoint")
            continue
        ckpts = checkpoints.Checkpoints(directory, keep=1, read_only=True)
        try:
            step = ckpts.latest_step()
            host, record = ckpts.restore(step, abstract)
        finally:
            ckpts.close()
        log(f"{label}: {ckpts.directory}/{step} (epoch {record['epoch']})")
        return host, record, ckpts.directory
    host = jax.device_get(create())
    if config.init_from:
        variables, report = pretrained.init_from(config.init_from, config.model.name,
                                                 state_lib.model_variables(host), drop=tuple(config.init_drop))
        params = {**host.params, "model": variables["params"]}
        host = host.replace(params=params, batch_stats=variables.get("batch_stats", {}),
                            opt_state=jax.device_get(tx.init(params)))
        log(f"init_from {config.init_from}: {report.summary()}")
    return host, {"epoch": 0, "best": None}, None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, log=print) -> dict[str, Any]:
    """Trains and evaluates a recipe in `workdir`.

    Returns:
      {"final": the last evaluation's metrics (None if no step was left to train), "best": the best
      evaluation so far (metrics, "step", "epoch"; None if none), "start": the step this run started
      from, "total": the last step}.

    Raises:
      UserError: bad configuration, dataset, workdir or checkpoint (before anything is written), a
        non-finite loss or state; `Interrupted` on Ctrl-C.
    """
    validate(config)
    workdir = checkpoints.check_workdir(workdir, config)
    setup_distributed(config.distributed)
    primary = jax.process_index() == 0
    if not primary:  # one voice per run: process 0 reports, writes metrics and the best model
        log = lambda *args: None  # noqa: E731
    train_src, eval_src = build_sources(config.data)
    spe = data.steps_per_epoch(len(train_src), config.batch_size)
    if spe == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(train_src)} training examples")
    total = config.num_epochs * spe if config.num_train_steps < 0 else config.num_train_steps
    check_batches(config)
    axis_name = parallel.AXIS if config.parallel == "pmap" else None
    module, spec, hparams = build_module(config, axis_name, train_src.num_classes)
    task = tasks.create(config.task)
    metrics_lib.check_best_metric(config.best_metric, task.kind)
    check_init_from(config, spec, hparams)
    tx, schedule = optim.build(config, spe, frozen=spec.frozen(hparams))
    compute = compute_dtype(config)
    dp = parallel.DataParallel(
        config.parallel,
        functools.partial(steps.train_step, module=module, spec=spec, task=task, tx=tx, compute_dtype=compute),
        functools.partial(driver.eval_step, module=module, spec=spec, task=task, compute_dtype=compute),
        config.batch_size)
    host, record, source = initial_state(config, workdir, module, spec, task, tx, log)
    # Everything above can refuse the run and has written nothing; only now is the workdir touched.
    if primary:
        checkpoints.prepare_workdir(workdir, config)
    start = int(host.step)
    with reporting.StopOnCtrlC(log) as ctrl_c:
        log(f"{config.model.name} {hparams} on {config.data.name}: {len(train_src)} train / {len(eval_src)} "
            f"{config.data.eval_split} examples, {spe} steps/epoch, steps {start}..{total}, "
            f"{jax.device_count()} device(s) via {config.parallel}")
        run = _Run(config, workdir, (module, spec, task), dp, schedule, spe, total, (train_src, eval_src), primary,
                   log, start)
        if source is not None:
            run.last_saved = (start, source)
        state = dp.put_state(host)
        del host  # the devices hold their own copy; the host's would live as long as the run
        result = run.loop(state, start, record, ctrl_c)
    return {**result, "start": start, "total": total}


class _Run:
    """The mutable parts of one training run (iterators, writers, checkpoints, running sums)."""

    def __init__(self, config, workdir, model, dp, schedule, spe, total, sources, primary, log, start):
        self.config, self.workdir, self.dp, self.schedule = config, workdir, dp, schedule
        self.model, self.spec, self.task = model  # (module, its ModelSpec, the task)
        self.spe, self.total = spe, total
        self.train_src, self.eval_src = sources
        self.primary, self.log = primary, log
        self.ckpts = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
        self.writer = reporting.MetricWriter(workdir, active=primary, start=start)
        self.progress = reporting.Progress(total, config.batch_size,
                                           stream=None if primary else open(os.devnull, "w"))
        self.epoch_sums: dict[str, float] = {}  # training metrics of the current epoch, reported steps
        self.pending: dict[str, float] = {}  # sums of steps trained but not reported yet (kept by Ctrl-C)
        self.last_saved: tuple[int, str] | None = None  # (step, directory) of the last finite checkpoint

    def data_kwargs(self) -> dict[str, Any]:
        d = self.config.data
        return {"process_index": jax.process_index(), "process_count": jax.process_count(),
                "num_workers": d.num_workers, "read_threads": d.read_threads, "prefetch": d.prefetch}

    def loop(self, state: Any, start: int, record: dict[str, Any], ctrl_c: reporting.StopOnCtrlC
             ) -> dict[str, Any]:
        cfg = self.config
        self.epoch_sums, self.pending = record.get("epoch_sums", {}), record.get("pending", {})
        it = data.train_iterator(self.train_src, cfg.data.train_pp, global_batch=cfg.batch_size, seed=cfg.seed,
                                 start_step=start, sampler=cfg.data.sampler, **self.data_kwargs())
        batches = self.dp.prefetch(it, cfg.data.device_prefetch)
        window, result = [], {"final": None, "best": record.get("best")}
        done = start  # the step `state` is at
        try:
            for step in range(start, self.total):
                state, m = self.dp.train(state, next(batches))
                window.append(m)
                done = step + 1
                if step == start:
                    jax.block_until_ready(m)
                    self.progress.started(done)
                epoch_end = done % self.spe == 0 or done == self.total
                save = epoch_end or done % cfg.checkpoint_every_steps == 0
                if done % cfg.log_every_steps == 0 or save:
                    self.report_train(done, window)
                    window = []
                if save:
                    result = self.save_point(state, done, result, it, epoch_end)
                if ctrl_c.requested and done < self.total:
                    raise Interrupted(self.interrupted(done, state, window, result))
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread: stop at once
            raise Interrupted(self.interrupted(done)) from None
        finally:
            it.close()
            self.ckpts.close()
            self.writer.close()
        return result

    def record(self, done: int, result: dict) -> dict[str, Any]:
        return {"epoch": math.ceil(done / self.spe), "best": result.get("best"), "epoch_sums": self.epoch_sums,
                "pending": self.pending}

    def save_point(self, state: Any, done: int, result: dict, it: Any, epoch_end: bool) -> dict:
        """A checkpoint step: the state read to the host once and checked finite before anything is saved from
        it, the epoch's evaluation and best model where `epoch_end`, then the checkpoint. Returns the result."""
        host = self.finite_host_state(state, done)
        if epoch_end:
            result = self.end_of_epoch(state, host, done, result, it)
        self.save(done, host, result)
        return result

    def save(self, done: int, host: Any, result: dict) -> None:
        """Starts the checkpoint of `host`, the state on the host (`finite_host_state`)."""
        self.ckpts.save(done, host, self.record(done, result))
        self.last_saved = (done, self.ckpts.directory)

    def interrupted(self, done: int, state: Any = None, window: list | None = None, result: dict | None = None
                    ) -> str:
        """Saves the step reached between two steps (`state` given), if it is finite and not saved yet, and
        says how to go on. (Multi-process runs stop at their last checkpoint: one process's Ctrl-C cannot
        save a checkpoint that every process writes.)"""
        if state is not None and jax.process_count() == 1 and (not self.last_saved or self.last_saved[0] != done):
            host = self.dp.get_state(state)
            if checkpoints.all_finite(host):
                self.pending = reporting.window_sums(window, self.pending)
                self.save(done, host, result)
        saved = self.last_saved[0] if self.last_saved else None
        if saved is None:
            return f"interrupted at step {done}; no checkpoint was written; run the same command to start again"
        if saved == done:
            return f"interrupted at step {done}; run the same command to resume"
        return f"interrupted at step {done}; run the same command to resume from checkpoint {saved}"

    def stop_hint(self) -> str:
        change = f"run the same command with a lower --config.optimizer.lr (now {self.config.optimizer.lr:g})"
        if self.last_saved is None:
            return f"no checkpoint was written: {change} to start again"
        step, directory = self.last_saved
        return f"the last finite checkpoint is step {step} in {directory}: {change} to continue from it"

    def finite_host_state(self, state: Any, done: int) -> Any:
        """The state on the host, for the checkpoint and the best model directory, once it is known to be finite.

        Raises:
          TrainingError: parameters, batch statistics or optimizer state hold a NaN or infinity (nothing is
            saved from them).
        """
        host = self.dp.get_state(state)
        if not checkpoints.all_finite(host):
            raise TrainingError(f"the parameters or optimizer state became non-finite by step {done}; stopped "
                                f"without saving them; {self.stop_hint()}")
        return host

    def report_train(self, done: int, window: list[dict]) -> None:
        sums = reporting.window_sums(window, self.pending)
        self.pending = {}
        self.epoch_sums = reporting.add_sums(self.epoch_sums, sums)
        scalars = reporting.means(sums)
        if not all(math.isfinite(v) for v in scalars.values()):
            raise TrainingError(f"loss became non-finite ({scalars['loss']}) by step {done}; stopped; "
                                f"{self.stop_hint()} (or check the data)")
        rates = reporting.learning_rates(self.schedule, done - 1)
        self.writer.write(done, "train", {**scalars, **rates, "images_per_second": self.progress.rate(done)})
        epoch = math.ceil(done / self.spe)
        self.progress.update(done, epoch, math.ceil(self.total / self.spe),
                             {"loss": scalars["loss"], "accuracy": scalars["accuracy"], **rates})

    def end_of_epoch(self, state: Any, host: Any, done: int, result: dict, it: Any) -> dict:
        """Reports the epoch and, where due, evaluates `state`; an improvement writes `host` (the same state on the
        host) as the best model directory."""
        cfg = self.config
        epoch = math.ceil(done / self.spe)
        train = reporting.means(self.epoch_sums)
        self.epoch_sums = {}
        self.writer.write(done, "train_epoch", {**train, "epoch": epoch})
        skipped = f"; {it.num_substituted} unreadable train images replaced" if it.num_substituted else ""
        line = f"epoch {epoch}: train loss {train['loss']:.4f}, accuracy {train['accuracy']:.4f}{skipped}"
        if epoch % cfg.eval_every_epochs and done != self.total:
            self.progress.message(line)
            return result
        eval_it = data.eval_iterator(self.eval_src, cfg.data.eval_pp, global_batch=eval_batch_size(cfg),
                                     **self.data_kwargs())
        try:
            m = self.evaluate(state, eval_it)
        finally:
            eval_it.close()
        self.writer.write(done, cfg.data.eval_split, {**m, "epoch": epoch})
        self.progress.message(f"{line} | {cfg.data.eval_split} {metrics_lib.summary_line(m)}")
        best = result.get("best")
        name = cfg.best_metric
        if metrics_lib.improves(name, m[name], best[name] if best else None):
            best = {**{k: v for k, v in m.items() if isinstance(v, float)}, "step": done, "epoch": epoch}
            self.save_best(host, best, m)
        return {"final": m, "best": best}

    def evaluate(self, state: Any, iterator: Any) -> dict:
        """One pass of the evaluation driver over the held-out split."""
        variables = state_lib.model_variables(state)
        # Host copies only where the task aggregates on the host with the network (video networks).
        host = self.dp.get_state(variables) if self.spec.video is not None else None
        ctx = driver.context(self.model, self.spec, host, self.eval_src)
        batches = self.dp.prefetch(iterator, self.config.data.device_prefetch)
        return driver.run(lambda b: self.dp.evaluate(variables, b), batches, self.task, ctx)

    def save_best(self, host: Any, best: dict, result: dict) -> None:
        """The best model so far as a model directory: `fer_jax.load_pretrained(workdir/best)`,
        `porting/export.py workdir/best` and `--config.init_from` all read it. A multi-label task's
        per-attribute accuracy chart of that evaluation goes with it (`per_attribute_accuracy.png`)."""
        if not self.primary:
            return
        cfg = self.config
        hparams = {k: v for k, v in cfg.model.items() if k != "name"}
        trained = {**best, "workdir": os.path.abspath(self.workdir), "class_names": list(self.train_src.class_names),
                   "task": self.train_src.task, "eval_pp": cfg.data.eval_pp, "image_size": cfg.data.image_size,
                   "best_metric": cfg.best_metric}
        pretrained.save_pretrained(os.path.join(self.workdir, "best"), cfg.model.name, hparams,
                                   state_lib.model_variables(host), {"trained": trained}, overwrite=True)
        if "per_attribute_accuracy" in result:
            figures.attribute_accuracy_chart(
                result["per_attribute_accuracy"], os.path.join(self.workdir, "best", "per_attribute_accuracy.png"),
                f"{cfg.model.name} on {cfg.data.name} {cfg.data.eval_split}, epoch {best['epoch']}")
        path = os.path.join(self.workdir, "best_metrics.json")
        with open(f"{path}.tmp-{os.getpid()}", "w") as f:
            json.dump(best, f, indent=2)
        os.replace(f"{path}.tmp-{os.getpid()}", path)
