"""Helpers shared by the command-line entry points in scripts/ and porting/: one line for every user
mistake (a bad flag, a config file that does not load, a `UserError` from the library) and for Ctrl-C,
quiet library logs, and, for the scripts that run XLA, memory that stays with the process between steps
(`keep_memory`) and transparent huge pages, opt-in (`huge_pages`).

Exit codes: 2 for a bad command line (and porting's argparse tools), 1 for a `UserError` of the absl
scripts, 130 for an interrupted run.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags, logging

INTERRUPTED = "interrupted; run the same command again"
HUGE_PAGES = "glibc.malloc.hugetlb=1"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
# mallopt(3) parameters: trim_threshold -1 never returns the heap's free top to the kernel; mmap_max 0 takes every
# block from the heap, never from a mapping of its own (glibc maps blocks above 32 MiB, and unmaps them on free).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MALLOC_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_max", "glibc.malloc.mmap_threshold")
ASYNC_DISPATCH = "JAX_CPU_ENABLE_ASYNC_DISPATCH"
KEPT: dict[str, bool] = {}  # what this process's `keep_memory` set (the benchmark's report names it)


def keep_memory() -> dict[str, bool]:
    """Lets a step's temporaries reuse the memory of the step before instead of faulting fresh pages in each time.
    Call it first in a script's `if __name__ == "__main__":` (after `huge_pages`), before jax runs anything.

    Why: XLA's CPU runtime allocates all of a compiled call's temporaries as one block per call (ConvNeXt-base's
    train step at batch 8: 2.9 GiB; MFTN-FER's: 4 GiB), and glibc serves a block that large from a fresh mapping
    that it unmaps when the block is freed, so every step faults its temporaries in again, 4 KiB at a time
    (ConvNeXt-base: ~770,000 faults and ~1.1 s of system time per step; MFTN-FER: ~1,070,000 and 5-7 s).
    Two settings remove that:
    - glibc's malloc takes every block from its heap and never gives the heap's free end back to the kernel
      (`mallopt(M_MMAP_MAX, 0)`, `mallopt(M_TRIM_THRESHOLD, -1)`), so a freed block's pages stay mapped and the next
      block of that size reuses them. The process keeps its peak memory instead of returning it between steps.
    - jax runs CPU computations on the calling thread (`jax_cpu_enable_async_dispatch=False`). With asynchronous
      dispatch they run on XLA's worker threads, whose malloc arenas cannot hold a block above 64 MiB and map it
      afresh whatever the settings. fer-jax's training loop places batches ahead of the step
      (`data.device_prefetch`) and its input pipeline reads in threads of its own, so little is left to overlap.
    Measured (batch 8, train steps back to back, median ms): ConvNeXt-base 4,450 -> 3,850, MFTN-FER 12,400 -> 9,200.
    The price: the process keeps its peak memory, and the heap grows again when a step's block no longer fits where
    the last one was: when a step does not donate its state (`parallel.DataParallel.put_state` says why the first
    one could not) or an allocation made between steps is still alive (an asynchronous checkpoint save being
    written). ConvNeXt-base's `train.py` run peaked at 7.6 GB instead of 6.5 over one epoch, and at 7.4-11.7
    instead of 8.7 over two. docs/speed.md has whole runs. Results are bitwise the same.

    Left alone: everything with `FER_JAX_KEEP_MEMORY=0`; malloc when the process's `GLIBC_TUNABLES` names one of
    `MALLOC_TUNABLES` (the user's choice) or the C library is not glibc; the dispatch mode when
    `JAX_CPU_ENABLE_ASYNC_DISPATCH` is set. Only the CPU backend reads the dispatch flag. Returns which of the two
    were set (also kept in `KEPT`).
    """
    KEPT.update(malloc=False, sync_dispatch=False)
    if os.environ.get("FER_JAX_KEEP_MEMORY") == "0":
        return dict(KEPT)
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if glibc_version() and not any(name in tunables for name in MALLOC_TUNABLES):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        KEPT["malloc"] = bool(mallopt(M_TRIM_THRESHOLD, -1)) & bool(mallopt(M_MMAP_MAX, 0))
    if ASYNC_DISPATCH not in os.environ:
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
        KEPT["sync_dispatch"] = True
    return dict(KEPT)


def huge_pages() -> None:
    """With `FER_JAX_HUGE_PAGES=1` (opt-in), restarts this process (`os.execve`: the same process ID, interpreter
    options and command line) with glibc's malloc asking the kernel for transparent huge pages for its blocks
    (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), where that changes anything: Linux with glibc >= 2.35 and THP in
    `madvise` mode (in `always` mode large blocks get them anyway). Call it first in a script's
    `if __name__ == "__main__":`, before anything heavy is imported.

    Why: XLA's CPU runtime allocates a step's temporaries afresh on every call and glibc returns blocks that
    large to the kernel, so each step faults its temporaries in again, 4 KiB at a time (~113,000 faults per
    DAN train step at batch 8, ~820,000 for ConvNeXt-base); with huge pages 2 MiB at a time. glibc reads the
    setting only at process start, hence the restart. Why not by default: measured here, whole training runs were
    8-19 % slower with it, the time going to building, compiling and first calling the steps (ConvNeXt-base's
    train step: 32 s without, 54 s with, most of it system time: on this VM a huge page that stayed free for a few
    seconds costs ~4x more to fault in than small pages), while the steps themselves gained 0-12 %; docs/speed.md
    has the measurements, and the other risk: a fault may wait for the kernel to compact memory into
    a huge page.

    Left alone: any `FER_JAX_HUGE_PAGES` other than `1`; a `GLIBC_TUNABLES` that already names
    `glibc.malloc.hugetlb` (the user's choice, or this function's own restart); a program read from stdin or `-c`.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if os.environ.get("FER_JAX_HUGE_PAGES") != "1" or "glibc.malloc.hugetlb" in tunables or not huge_pages_matter():
        return
    argv = getattr(sys, "orig_argv", None)
    if not sys.executable or not argv or sys.argv[0] in ("", "-", "-c"):
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, (tunables, HUGE_PAGES))))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # not restartable here: run on without huge pages
        return


def huge_pages_matter() -> bool:
    """Whether glibc's `hugetlb=1` changes anything here: Linux, glibc >= 2.35, THP in `madvise` mode."""
    if not _at_least(glibc_version(), (2, 35)):
        return False
    try:
        with open(THP_MODE) as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def glibc_version() -> str:
    """The C library's version on Linux with glibc ("2.36"); "" elsewhere."""
    libc, version = platform.libc_ver()
    return version if sys.platform.startswith("linux") and libc == "glibc" else ""


def _at_least(version: str, minimum: tuple[int, ...]) -> bool:
    try:
        return tuple(int(part) for part in version.split(".")[:len(minimum)]) >= minimum
    except ValueError:
        return False


def flags_parser(required: Sequence[str], positional: bool = False) -> Callable[[list[str]], list[str]]:
    """An `absl.app.run(flags_parser=...)` that reports a bad flag, config key or config file in one line
    (exit 2).

    Args:
      required: flags that must be given.
      positional: whether arguments other than flags are allowed (e.g. predict's image files).
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(argv)
            values = {name: flags.FLAGS[name].value for name in required}
            for value in values.values():
                hasattr(value, "keys")  # a --config that failed to load raises here, not later mid-run
        except KeyboardInterrupt:
            _fail(INTERRUPTED, 130)
        except Exception as e:  # noqa: BLE001 - a config file is user code: whatever it raises is one line
            _fail(f"error: bad command line: {_one_line(e)}", 2)
        for name, value in values.items():
            if value is None:
                _fail(f"error: --{name} is required (see --help)", 2)
        if not positional and len(rest) > 1:
            _fail(f"error: unexpected arguments {' '.join(rest[1:])!r} (flags are --name=value; see --help)", 2)
        return rest

    return parse


def _fail(line: str, code: int) -> None:
    print(line, file=sys.stderr)
    sys.exit(code)


def _one_line(e: BaseException) -> str:
    """ml_collections reports an unknown --config.<key> as AttributeError("'key'\\nDid you mean ...") and a
    missing config file over several indented lines: fold any of them into one line. Anything raised by the
    config file's own code (a syntax error, an exception in its get_config) is named with its type and the
    file and line where it happened."""
    from fer_jax.errors import UserError

    if isinstance(e, SyntaxError):
        return f"{e.filename} line {e.lineno}: {e.msg}"
    text = (str(e.args[0]) if e.args else str(e)).strip("'").replace("\\n", "\n").replace("\\'", "'")
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    if isinstance(e, UserError | flags.Error):
        return "; ".join(parts)
    frames = traceback.extract_tb(e.__traceback__)
    if frames and "site-packages" not in frames[-1].filename and not frames[-1].filename.startswith("<"):
        where = f"{frames[-1].filename} line {frames[-1].lineno}"
        return f"{type(e).__name__}: {'; '.join(parts) or 'raised'} ({where})"
    if isinstance(e, AttributeError) and parts:
        parts[0] = f"unknown config key {parts[0]}"
    return "; ".join(parts)


def exit_code(fn: Callable[[], Any], code: int = 2) -> int:
    """For argparse entry points (porting/): 0 if `fn` succeeds; a UserError becomes `error: <message>` on
    stderr and the returned `code`; Ctrl-C one line and 130."""
    from fer_jax.errors import Interrupted, UserError

    try:
        fn()
    except Interrupted as e:
        print(e, file=sys.stderr)
        return Interrupted.exit_code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return Interrupted.exit_code
    return 0


def run_user(fn: Callable[[], Any]) -> Any:
    """Runs `fn` with library INFO logs hidden (unless --verbosity is given); a UserError becomes
    `error: <message>` on stderr and exit code 1; Ctrl-C one line and exit code 130."""
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every checkpoint step at INFO
        logging.set_verbosity(logging.WARNING)
    result: list[Any] = []
    code = exit_code(lambda: result.append(fn()), 1)
    if code:
        sys.exit(code)
    return result[0]


class Skipped:
    """Inputs a batch command (predict.py, explain.py) could not use, one `skipped PATH: reason` line each on
    stderr as they happen, the rest of the batch going on. When a run produced nothing, `fail` ends it: its
    only skip becomes the one `error:` line (held back until something else happens), several end with a
    count; exit code 1."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []
        self._holding = True

    def __call__(self, path: str, reason: str) -> None:
        self.items.append((path, reason))
        if not self._holding:
            print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
        elif len(self.items) == 2:
            self.release()

    def release(self) -> None:
        """Something came of the run: the held-back skip is printed as a skip."""
        if self._holding:
            self._holding = False
            for path, reason in self.items:
                print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)

    def fail(self, what: str) -> None:
        """Exits 1 with one line: the only skip, or `nothing could be <what> (N inputs skipped)`."""
        if len(self.items) == 1 and self._holding:
            print("error: {}: {}".format(*self.items[0]), file=sys.stderr)
        else:
            print(f"error: nothing could be {what} ({len(self.items)} inputs skipped)", file=sys.stderr)
        sys.exit(1)

    def as_json(self) -> list[dict[str, str]]:
        return [{"path": path, "reason": reason} for path, reason in self.items]
