"""What a user sees during training: a progress line with images/s and ETA, and metric files
(TensorBoard events and `metrics.jsonl`) in the workdir."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

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
