"""`fer_jax.cli.huge_pages`: with `FER_JAX_HUGE_PAGES=1` the scripts restart themselves with glibc's malloc asking
for transparent huge pages (by default they do not), and the setting takes effect (fewer page faults for a large
block allocated, touched and freed again and again, as XLA does with a step's temporaries)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

from fer_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train", "evaluate", "predict", "explain", "benchmark")
needs_madvise = pytest.mark.skipif(not cli.huge_pages_matter(),
                                   reason="huge_pages acts only with glibc >= 2.35 and THP in madvise mode")

# Prints one `start` line per process image (so a restart shows two, with one PID), then the page faults of
# four 256 MiB blocks malloc'd, written and freed (glibc maps blocks that large afresh each time).
PROBE = textwrap.dedent("""
    import ctypes, json, os, resource, sys
    from fer_jax import cli
    if __name__ == "__main__":
        print(json.dumps({"start": os.getpid()}))
        cli.huge_pages()
        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        size, before = 1 << 28, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            block = libc.malloc(size)
            ctypes.memset(block, 1, size)
            libc.free(block)
        print(json.dumps({"argv": sys.argv[1:], "tunables": os.environ.get("GLIBC_TUNABLES"),
                          "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
""")


def _probe(tmp_path, **env: str) -> tuple[list[int], dict]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "FER_JAX_HUGE_PAGES")}
    out = subprocess.run([sys.executable, str(script), "a b", "--c=d"], env={**base, **env}, capture_output=True,
                         text=True, check=True, timeout=120).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    return [line["start"] for line in lines[:-1]], lines[-1]


def test_off_by_default(tmp_path):
    for env in ({}, {"FER_JAX_HUGE_PAGES": "0"}, {"FER_JAX_HUGE_PAGES": "yes"}):
        starts, result = _probe(tmp_path, **env)
        assert len(starts) == 1 and result["tunables"] is None, env


@needs_madvise
def test_opt_in_restarts_with_huge_pages_and_cuts_page_faults(tmp_path):
    starts, on = _probe(tmp_path, FER_JAX_HUGE_PAGES="1")
    assert len(starts) == 2 and starts[0] == starts[1]  # one restart, same process
    assert on["tunables"] == cli.HUGE_PAGES and on["argv"] == ["a b", "--c=d"]
    starts, off = _probe(tmp_path)
    assert len(starts) == 1 and off["tunables"] is None
    # 1 GiB touched in 4 KiB pages is ~262,000 faults; in 2 MiB pages ~512 (measured here: 262,148 vs 2,560). The
    # kernel may fall back to small pages when memory is fragmented, so only a clear cut is required.
    assert off["faults"] > 200_000 and on["faults"] * 4 < off["faults"], (on, off)


@needs_madvise
def test_other_tunables_are_kept(tmp_path):
    starts, result = _probe(tmp_path, FER_JAX_HUGE_PAGES="1", GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert len(starts) == 2 and result["tunables"] == f"glibc.malloc.arena_max=2:{cli.HUGE_PAGES}"


def test_users_own_setting_wins(tmp_path):
    starts, result = _probe(tmp_path, FER_JAX_HUGE_PAGES="1", GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert len(starts) == 1 and result["tunables"] == "glibc.malloc.hugetlb=0"


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_restart_first(name):
    """Every script that runs XLA steps calls `cli.huge_pages()` (opt-in) first in its main block (before app.run
    parses flags or anything heavy is imported), then `cli.keep_memory()` (before jax starts its backend: the
    dispatch mode is read then; tests/test_keep_memory.py)."""
    tree = ast.parse(open(os.path.join(ROOT, "scripts", f"{name}.py")).read())
    main = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert len(main) == 1 and ast.unparse(main[0].body[0]) == "cli.huge_pages()"
    assert ast.unparse(main[0].body[1]) == "cli.keep_memory()"
