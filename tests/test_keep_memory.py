"""`fer_jax.cli.keep_memory`: the scripts keep a step's temporaries mapped between calls (glibc's malloc keeps its
heap, jax runs CPU computations on the calling thread), so a compiled call's second and later runs fault no fresh
pages in, with bitwise the same results; each part yields to the user's own setting. That every script calls it,
right after `cli.huge_pages()`, is checked in tests/test_huge_pages.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fer_jax import cli

needs_glibc = pytest.mark.skipif(not cli.glibc_version(), reason="the malloc part acts only with glibc on Linux")

# A jitted call whose 64 MiB temporary (x + 1, materialised as a matrix product's operand) is larger than glibc's
# largest mmap threshold (32 MiB); prints what keep_memory set, the page faults of calls 3-14 and a checksum.
PROBE = textwrap.dedent("""
    import hashlib, json, resource
    from fer_jax import cli
    if __name__ == "__main__":
        done = cli.keep_memory()
        import jax, jax.numpy as jnp
        f = jax.jit(lambda x, w: (x + 1.0) @ w)
        x = jnp.linspace(-1.0, 1.0, 8192 * 2048, dtype=jnp.float32).reshape(8192, 2048)
        w = jnp.linspace(0.5, -0.5, 2048 * 8, dtype=jnp.float32).reshape(2048, 8)
        for _ in range(2):
            jax.block_until_ready(f(x, w))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(12):
            out = jax.block_until_ready(f(x, w))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        print(json.dumps({"done": done, "async": jax.config.values["jax_cpu_enable_async_dispatch"], "faults": faults,
                          "sha": hashlib.sha256(jax.device_get(out).tobytes()).hexdigest()}))
""")
NAMES = ("FER_JAX_KEEP_MEMORY", "GLIBC_TUNABLES", cli.ASYNC_DISPATCH, "XLA_FLAGS")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    script = tmp_path_factory.mktemp("keep") / "probe.py"
    script.write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in NAMES}

    def run(**env: str) -> dict:
        out = subprocess.run([sys.executable, str(script)], env={**base, **env}, capture_output=True, text=True,
                             check=True, timeout=300).stdout
        return json.loads(out.splitlines()[-1])

    return run


@needs_glibc
def test_keeps_temporaries_mapped_with_the_same_results(probe):
    on, off = probe(), probe(FER_JAX_KEEP_MEMORY="0")
    assert on["done"] == {"malloc": True, "sync_dispatch": True} and on["async"] is False
    assert off["done"] == {"malloc": False, "sync_dispatch": False} and off["async"] is True
    # Not kept, each call faults a fresh 64 MiB block in 4 KiB pages: 12 x 16,384 = 196,608 faults. Kept, the pages
    # are reused once the heap's layout settles: small blocks allocated between calls may take part of the freed
    # block, and the heap grows by a block a few times first (measured here, per call: 0-18 faults, with 0-3 calls
    # of 16,384 among the 12).
    assert off["faults"] > 190_000 and on["faults"] * 3 < off["faults"], (on, off)
    assert on["sha"] == off["sha"]


def test_users_settings_win(probe):
    result = probe(GLIBC_TUNABLES="glibc.malloc.mmap_max=65536", **{cli.ASYNC_DISPATCH: "1"})
    assert result["done"] == {"malloc": False, "sync_dispatch": False} and result["async"] is True
    result = probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1048576")
    assert result["done"] == {"malloc": False, "sync_dispatch": True} and result["async"] is False
