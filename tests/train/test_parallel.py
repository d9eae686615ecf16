"""Data parallelism: 4 simulated devices == 1 device on the same global batch, for pmap and jit: DAN training
steps with SAM(Adam) (its perturbation from the global gradient's norm) in one process of 4 devices and with
the recipe's SGD in 2 processes of 2 devices, and Emotion-FAN's video-level evaluation (values gathered from
every device) in both. The single-device results are computed once per module (`reference`) and read by every
parallel run."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import portpicker
import pytest

HERE = pathlib.Path(__file__).parent


def check(results: dict, optimizer: str) -> None:
    assert results["devices"] == 4
    assert sorted(results) == sorted(["devices", *(f"{name}/{mode}" for name in (optimizer, "video_eval")
                                                   for mode in ("pmap", "jit"))])
    for key, diffs in results.items():
        if key == "devices":
            continue
        if key.startswith("video_eval/"):  # gathered per-frame values: every real frame once, same numbers
            assert diffs["confusion_equal"] and diffs["frames"] == 12 and diffs["loss"] <= 1e-12, (key, diffs)
            continue
        # float64 on both sides: a semantic difference (missing pmean, per-device BatchNorm statistics,
        # double-counted gradients) shows at >= 1e-4; rounding stays near 1e-13 of the update scale. Measured
        # (64 px): SAM's params 5.1e-13 under pmap, 1.2e-13 under jit (Adam's eps in parallel_check.py); with the
        # second pass's pmean removed, pmap's params differ by 4.0e-3, twice the whole two-step update.
        bound = 1e-10 * max(1.0, diffs["scale"])
        assert max(diffs["loss"], diffs["params"], diffs["batch_stats"], diffs["opt_state"]) <= bound, (key, diffs)


def env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    """Where parallel_check.py keeps the single-device results: the first run writes them, later runs read."""
    return str(tmp_path_factory.mktemp("parallel") / "reference.pkl")


@pytest.mark.slow
def test_four_devices_equal_one_device(reference):
    r = subprocess.run([sys.executable, str(HERE / "parallel_check.py"), reference], env=env(4),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    check(json.loads(r.stdout.strip().splitlines()[-1]), "sam")


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one_device(reference):
    """jax.distributed over loopback: 2 processes x 2 CPU devices, each feeding its half of every batch."""
    port = portpicker.pick_unused_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "parallel_check.py"), reference, str(port), "2", str(i)],
                              env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    check(json.loads(outs[0][0].strip().splitlines()[-1]), "recipe")


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_prefetch_places_batches_ahead_in_order(mode):
    """The training loop's device prefetch: `size` batches are read and placed ahead of the one handed out, and
    every batch arrives once, in order, on the devices."""
    import jax
    import numpy as np

    from fer_jax.train import parallel

    dp = parallel.DataParallel(mode, None, lambda variables, batch, axis_name: batch, 2)
    for size in (0, 2):
        read = []

        def source():
            for i in range(5):
                read.append(i)
                yield {"image": np.full((2, 3), i, np.float32), "label": np.array([i, -i])}

        batches = dp.prefetch(source(), size)
        first = next(batches)
        assert read == list(range(size + 1))  # the next `size` batches are on their way while this one is used
        got = [first, *batches]
        assert read == list(range(5))
        assert all(isinstance(b["image"], jax.Array) and b["image"].is_fully_addressable for b in got)
        assert [np.asarray(b["image"]).reshape(2, 3)[0, 0] for b in got] == [0, 1, 2, 3, 4]
        assert [np.asarray(b["label"]).ravel().tolist() for b in got] == [[i, -i] for i in range(5)]


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_state_placed_once_steps_compile_once(mode):
    """The state `put_state` places is laid out as the step returns it, so the step compiles once, not once
    more at the second step (placed with `flax.jax_utils.replicate`, pmap's state did not match its own
    outputs' layout: every pmap run compiled the whole training step twice)."""
    import jax
    import numpy as np

    from fer_jax.train import parallel

    traces = []

    def train_step(state, batch, axis_name):
        traces.append(1)  # once a trace; a compilation of another layout traces again
        grad = batch["image"].mean()
        if axis_name:
            grad = jax.lax.pmean(grad, axis_name)
        return {"w": state["w"] - grad, "step": state["step"] + 1}, {"loss": grad}

    n = jax.local_device_count()
    dp = parallel.DataParallel(mode, train_step, lambda variables, batch, axis_name: batch, 2 * n)
    state = dp.put_state({"w": np.zeros(3, np.float32), "step": np.int32(0)})
    for batch in dp.prefetch(({"image": np.full((2 * n, 4), i, np.float32)} for i in range(3)), 1):
        state, metrics = dp.train(state, batch)
    host = dp.get_state(state)
    assert host["step"] == 3 and np.allclose(host["w"], -3.0) and float(metrics["loss"]) == 2.0
    assert len(traces) == 1


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_first_step_donates_the_placed_state(mode):
    """The first train step writes its new state over the placed one, as every later step does, and the host
    arrays stay as they were. A host array that came from the runtime (`jax.device_get`, as the training loop's
    initial state does) is aligned, so placing it aliased its memory, and a step cannot donate memory it does
    not own: before `put_state` copied, the first step put all its new state in fresh buffers (ConvNeXt-base:
    1.0 GB above its temporaries) and the host arrays stayed alive as the old state."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fer_jax.train import parallel

    def train_step(state, batch, axis_name):
        return jax.tree.map(lambda a: a + 1, state), {"loss": batch["image"].mean()}

    n = jax.local_device_count()
    dp = parallel.DataParallel(mode, train_step, lambda variables, batch, axis_name: batch, n)
    host = jax.device_get({"w": jnp.zeros((256, 1024), jnp.float32) + 2, "step": jnp.zeros((), jnp.int32)})
    state = dp.put_state(host)
    batch = dp.put_batch({"image": np.ones((n, 2), np.float32)})

    def pointers(tree):
        return [shard.data.unsafe_buffer_pointer() for a in jax.tree.leaves(tree) for shard in a.addressable_shards]

    for _ in range(2):
        before = pointers(state)
        state, _ = dp.train(state, batch)
        assert pointers(state) == before  # written in place: donated
    assert float(host["w"][0, 0]) == 2.0 and int(host["step"]) == 0
    got = dp.get_state(state)
    assert np.all(got["w"] == 4.0) and int(got["step"]) == 2
