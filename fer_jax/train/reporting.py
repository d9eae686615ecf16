"""What a user sees during training: a progress line with images/s and ETA, metric files (TensorBoard
events and `metrics.jsonl`) in the workdir, the sums behind the logged means, and Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fer_jax.errors import remove_stale_temporaries


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Throughput and ETA that leave out compilation: timing starts after the first step completes.

    On a terminal the line is redrawn in place; otherwise one line is printed per `update`.
    """

    def __init__(self, total_steps: int, global_batch: int, stream=None):
        self.total, self.batch = total_steps, global_batch
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._t0: float | None = None
        self._s0 = 0

    def started(self, step: int) -> None:
        """Call once the first (compiling) step has finished."""
        self._t0, self._s0 = time.perf_counter(), step

    def rate(self, step: int) -> float:
        """Images per second since `started` (0 before)."""
        if self._t0 is None or step <= self._s0:
            return 0.0
        return (step - self._s0) * self.batch / (time.perf_counter() - self._t0)

    def update(self, step: int, epoch: int, num_epochs: int, scalars: dict[str, float]) -> None:
        rate = self.rate(step)
        eta = (self.total - step) * self.batch / rate if rate else float("inf")
        pct = 100.0 * step / max(self.total, 1)
        done = int(pct // 5)
        bar = "#" * done + "." * (20 - done)
        values = " ".join(f"{k} {v:.4g}" for k, v in scalars.items())
        line = (f"[{bar}] step {step}/{self.total} epoch {epoch}/{num_epochs} | {values} | "
                f"{rate:.0f} img/s | ETA {_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (epoch summaries), not overwritten by the progress line."""
        self.stream.write(("\n" if self.tty else "") + text + "\n")
        self.stream.flush()


class MetricWriter:
    """TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines file, in `workdir`.

    A run that starts at step `start` (0, or the checkpoint it resumes from) first drops what an earlier,
    interrupted run logged after that step, so that every step appears once: `metrics.jsonl` keeps its
    rows up to `start` (rewritten atomically) and TensorBoard purges later events.
    Only process 0 writes; elsewhere every method is a no-op.
    """

    def __init__(self, workdir: str, active: bool = True, start: int = 0):
        self.active = active
        if not active:
            return
        from tensorboardX import SummaryWriter

        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path):
            _truncate(path, start)
        self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), purge_step=start + 1)
        self._jsonl = open(path, "a")

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.active:
            return
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        for k, v in scalars.items():
            self._tb.add_scalar(f"{split}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.active:
            self._tb.close()
            self._jsonl.close()


def _truncate(path: str, start: int) -> None:
    """Keeps the rows of `path` up to step `start` (and drops a line cut short by a kill)."""
    kept = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= start:
                kept.append(line if line.endswith("\n") else line + "\n")
    remove_stale_temporaries(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def learning_rates(schedule: Callable | dict[str, Callable], step: int) -> dict[str, float]:
    """The learning rate(s) at an optimizer step: {"lr": ...} for one schedule, {"lr/<group>": ...} for a
    schedule per parameter group."""
    if isinstance(schedule, dict):
        return {f"lr/{name}": float(s(jnp.asarray(step))) for name, s in schedule.items()}
    return {"lr": float(schedule(jnp.asarray(step)))}


def window_sums(window: list[dict], start: dict[str, float] | None = None) -> dict[str, float]:
    """Sums over a window of step metrics (losses summed over steps; `steps` counts them), added one step
    at a time in float64 to `start`: a window split by Ctrl-C and resumed sums exactly as the whole one."""
    sums = dict(start or {})
    for m in jax.device_get(window):
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        sums["steps"] = sums.get("steps", 0) + 1
    return sums


def add_sums(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in {*a, *b}}


def means(sums: dict[str, float]) -> dict[str, float]:
    """Per-step means of the losses and the accuracy of the decisions, from `window_sums`."""
    out = {k: v / sums["steps"] for k, v in sorted(sums.items()) if k not in ("correct", "count", "steps")}
    out["accuracy"] = sums["correct"] / max(sums["count"], 1)
    return out


class StopOnCtrlC:
    """Once the workdir is written: the first Ctrl-C asks the loop to stop after the current step (which it
    saves); a second one stops at once. Only the main thread can handle signals; elsewhere Ctrl-C stops at
    once."""

    def __init__(self, log: Callable[[str], Any]):
        self.log, self.requested, self._previous = log, False, None

    def __enter__(self) -> StopOnCtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log("\nCtrl-C: stopping after this step (press it again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
