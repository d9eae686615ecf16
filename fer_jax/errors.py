"""User-facing errors: one clear line saying what is wrong and what to do, and the output-path checks
that raise them before any work starts.

Command-line entry points catch `UserError`, print `error: <message>` on stderr and exit non-zero (an
`Interrupted` run prints its message and exits 130); any other exception is a bug and keeps its traceback.

Every tool checks its output paths first (`check_output_path`): a refused run leaves every file as it was.
Outputs are written to a temporary sibling (`<name>.tmp-*`) and renamed into place; temporaries that a
killed run left behind are removed when the next run writes the same output (`remove_stale_temporaries`),
and files made private by `tempfile` get the permissions the umask gives (`honour_umask`).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile


class UserError(Exception):
    """A mistake in the user's input (file, dataset, checkpoint, config), not a bug in fer-jax."""


class DatasetError(UserError):
    """A dataset is missing or does not have the expected on-disk layout."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, is unsafe, or does not fit the requested architecture."""


class ConfigError(UserError):
    """A configuration key or value is invalid."""


class Interrupted(UserError):
    """The user stopped the run (Ctrl-C); the message says what was kept and how to continue."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process killed by Ctrl-C


def check_output_path(path: str | os.PathLike, what: str, *, directory: bool) -> str:
    """Refuses an output path that cannot be written, before anything is written; returns it absolute.

    Missing parent directories are fine (they are created when the output is written) as long as the
    nearest existing one is a writable directory; that is tried with an unnamed temporary file, which
    leaves nothing behind.

    Args:
      path: the output (a directory if `directory`, else a file).
      what: how the user named it, e.g. "--out" or "--workdir".
      directory: whether the output is a directory.

    Raises:
      ConfigError: `path` exists as the other kind, or an ancestor is a file or is not writable.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != directory:
        kind = "a directory" if directory else "a file"
        raise ConfigError(f"{what} {path} exists and is not {kind}; choose another {what}")
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError(f"cannot write {what} {path}: {ancestor} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write {what} {path}: {ancestor} is not writable ({e.strerror})") from None
    return path


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike, directory: bool) -> None:
    """Gives a `tempfile`-made output (0700 / 0600) the permissions a plain mkdir / open would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def remove_stale_temporaries(target: str | os.PathLike) -> int:
    """Removes `<target>.tmp-*` and `.<target>.tmp-*` siblings that a killed write of `target` left behind;
    returns how many. (Two runs writing the same output at the same time are not supported.)"""
    parent, name = os.path.split(os.path.abspath(target))
    stale = [p for pattern in (f"{glob.escape(name)}.tmp-*", f".{glob.escape(name)}.tmp-*")
             for p in glob.glob(os.path.join(glob.escape(parent), pattern))]
    for p in stale:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.remove(p)
    return len(stale)
