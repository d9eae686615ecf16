"""Speed of fer-jax against the plain-torch reference, every registered network, as ratios from one run.

    python scripts/benchmark.py [--networks dan,faer] [--batch 16] [--reps 5] [--out runs/benchmark]
    python scripts/benchmark.py --recipes configs/dan_rafdb.py:quick,configs/feratt_ck.py   # other recipes or sizes

Each network runs its recipe (the `RECIPES` table: network -> recipe file[:variant]) on a batch of the recipe's
own preprocessing of synthetic data in the recipe's dataset layout, at the recipe's image size:

- train step: forward, the recipe task's loss, backward and the recipe's optimizer (SAM's two passes included),
  fer-jax under `jit` (with fer_jax.xla's options, the parameters donated) against the reference in torch eager
  mode (`porting.reference.training`: the same loss and optimizer in torch), torch also with 1 thread and under
  `torch.compile` (its default inductor backend, which on a CPU keeps oneDNN's convolutions, laid out
  channels-last, and fuses the other operators into generated C++ loops; `--notorch_compile` leaves it out, and
  where it fails the row says why);
- eval forward: the network in eval mode, no gradient;
- repetitions interleaved in one process (jax, torch, torch 1 thread, ... per round), medians; speed ratio =
  torch time / fer-jax time (above 1: fer-jax is faster). In each round a case runs `--turn` calls in a row and
  only the last is timed: a training loop's steady state, where a step follows a step. The first call after the
  other framework's turn pays for memory that sat unused meanwhile (on this project's VM a page fault costs
  5-7x more after a pause of a few seconds: the ConvNeXt-base step took 9.9-11.2 s right after torch's against
  6.2-6.4 s after its own, with the same 826,000 faults). Every round's ratio is kept too (the torch call over
  the fer-jax call just before it), and the report shows their range: on this project's VM the kernel rates moved
  by 11-25 % within an afternoon, and a row whose rounds disagree was measured while the machine moved;
- first-call compile time, FLOPs per step from XLA's cost analysis (the same count is used for torch), achieved
  FLOP/s and its fraction of the device's peak (known GPUs and TPUs by name, a CPU's measured matrix-product
  rate, or `--peak_tflops`), train memory (XLA's buffer plan of the step);
- the CPU time other processes used while measuring, in cores (a loaded machine slows torch's 2-thread mode
  far more than XLA: compare runs only when it is near 0);
- the system CPU time of each timed step, both sides (mostly page faults of memory allocated afresh). Like
  every script here it runs with `fer_jax.cli.keep_memory`: glibc's malloc keeps its heap and jax runs CPU calls
  on the calling thread, so XLA's step temporaries reuse the pages of the call before. The malloc setting is
  process-wide, so torch's large tensors reuse pages too (torch's ConvNeXt-base train step gains ~8 % from it,
  measured in separate processes; the ratios are therefore against a torch helped by it). With
  `FER_JAX_HUGE_PAGES=1` it also runs with huge pages for malloc's blocks (`fer_jax.cli.huge_pages`). The report
  names what keep_memory set and the `GLIBC_TUNABLES` it ran with, and counts the kernel's compaction stalls
  meanwhile, from /proc/vmstat; see docs/speed.md;
- the grain input pipeline with 0, 1, 2 ... worker processes (`--workers`), examples/s against the train step's;
- where torch's time goes: the share of each torch call (one more call of each case after the timed rounds, under
  torch's profiler) spent in its convolution and matrix-product kernels (oneDNN's and the BLAS's; `KERNEL_OPS`),
  and from it the ceiling of the ratio: torch time / torch's kernel time, the ratio fer-jax would reach if its
  convolutions and products took exactly torch's time and everything else took none. A ratio above the ceiling
  needs kernels faster than torch's.

Writes `<out>/benchmark.md` and `<out>/benchmark.json`; prints the table. Needs the torch extra.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from absl import app, flags

from fer_jax import cli
from fer_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every registered network and the recipe that trains it (with model overrides for a network that is only an
# init source: ResNet34 runs the ResNet18 frame baseline's recipe).
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "dan": ("dan_rafdb", {}),
    "emotion_fan": ("fan_afew_relation", {}),
    "resnet18": ("fan_afew_baseline", {}),
    "resnet34": ("fan_afew_baseline", {"name": "resnet34"}),
    "convnext": ("faer_baseline_celeba", {}),
    "faer": ("faer_celeba", {}),
    "mftn": ("mftn_rafdb", {}),
    "feratt": ("feratt_ck", {}),
    "feratt_rep": ("feratt_rep_ck", {}),
    "preactresnet18": ("feratt_baseline_ck", {}),
}
# config.data.name -> the synthetic layouts written for it: (layout, sub-directory of the root).
SYNTHETIC = {"rafdb": (("rafdb", ""),), "affectnet": (("affectnet", ""),), "celeba": (("celeba", ""),),
             "expw": (("expw", ""),), "afew": (("afew", ""),), "ckplus": (("ckplus", ""),),
             "ck_synthetic": (("ck", ""), ("backgrounds", "coco")),
             "bu3dfe_synthetic": (("bu3dfe", ""), ("backgrounds", "coco"))}
# Dense peak FLOP/s of known accelerators (bf16 tensor cores / MXU), by device_kind prefix.
PEAKS = {"NVIDIA H200": 989e12, "NVIDIA H100": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
         "NVIDIA A10": 125e12, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12}

_NETWORKS = flags.DEFINE_list("networks", None, "registered networks to run (default: all; see RECIPES)")
_RECIPES = flags.DEFINE_list("recipes", None, "recipe files[:variant] to run instead of the networks' recipes")
_VARIANT = flags.DEFINE_string("variant", None, "run the networks' recipes in this variant (e.g. smoke, cpu)")
_BATCH = flags.DEFINE_integer("batch", 16, "global batch of every step (overrides the recipe's)")
_REPS = flags.DEFINE_integer("reps", 5, "timed repetitions of every case, interleaved (after one warm-up)")
_TURN = flags.DEFINE_integer("turn", 2, "calls of a case in a row in each round, the last one timed",
                            lower_bound=1)
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "input-pipeline worker counts to measure (empty: none)")
_PEAK = flags.DEFINE_float("peak_tflops", None, "the device's peak in TFLOP/s (default: detected)")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "also time the torch steps under torch.compile (where it "
                                   "works: a failure is reported in the row, not fatal)")
_ONE_THREAD = flags.DEFINE_bool("torch_one_thread", True, "also time torch with 1 thread")
_OUT = flags.DEFINE_string("out", None, "write benchmark.md and benchmark.json into this directory")
_DTYPE = flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"],
                           "computation dtype of both sides (default: the recipe's); bfloat16 runs torch under "
                           "autocast, parameters stay float32 on both")


# aten operators whose self time is a convolution or matrix-product kernel: every operator with "conv" in its name
# (forward, backward, depthwise, the slow fallbacks) and the BLAS products. Autograd nodes and record_function ranges
# (`ConvolutionBackward0`, `Optimizer.step#...`) are not aten operators.
KERNEL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


# --- machine --------------------------------------------------------------------------------------------


# What `kernel_rates` measures (a CPU's peak, `device_peak`).
KERNELS = "2048x2048 products, 3x3 convolutions of 8 x 14x14 x 256 -> 256"


def kernel_rates(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """FLOP/s of float32 kernels on the default device (XLA, as fer-jax's evaluation steps compile) and on the CPU
    (torch, with the threads torch has), each the median of `reps` after one warm-up call: an n x n matrix
    product, and a 3x3 convolution of 8 x 14x14 x 256 -> 256 (a ResNet layer3's, 1.85 GFLOP)."""
    import jax
    import jax.numpy as jnp
    import torch

    from fer_jax import xla
    from fer_jax.models.convolution import NHWC

    a, f = jnp.ones((n, n), jnp.float32), jax.jit(lambda a: a @ a)
    x, w = jnp.ones((8, 14, 14, 256), jnp.float32), jnp.ones((3, 3, 256, 256), jnp.float32) / 2304
    conv = xla.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                             dimension_numbers=NHWC), "eval")
    t, tx, tw = torch.ones(n, n), torch.ones(8, 256, 14, 14), torch.ones(256, 256, 3, 3) / 2304
    product_flops, conv_flops = 2 * n ** 3, 2 * x.size * 3 * 3 * 256
    calls = {"XLA product": (lambda: jax.block_until_ready(f(a)), product_flops),
             "torch product": (lambda: t @ t, product_flops),
             "XLA 3x3 convolution": (lambda: jax.block_until_ready(conv(x, w)), conv_flops),
             "torch 3x3 convolution": (lambda: torch.nn.functional.conv2d(tx, tw, padding=1), conv_flops)}
    rates = {}
    for name, (call, flops) in calls.items():
        call()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        rates[name] = flops / statistics.median(times)
    return rates


def cpu_flops_per_cycle(cpuinfo: str) -> int:
    """float32 FLOP per cycle and core of the FMA units /proc/cpuinfo (its text) implies: 2 pipes x lanes x 2 FLOP,
    with 16 lanes for AVX-512 on Intel (two 512-bit FMA units; some Xeons have one) and on AMD from Zen 5 (CPU
    family 26, full 512-bit data paths), 8 for AVX2 and for Zen 4's AVX-512 (family 25, split into 256-bit halves).
    A nominal figure only: the clock under load is not visible here."""
    def field(name: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                     if line.split(":", 1)[0].strip() == name), "")

    flags, family = set(field("flags").split()), field("cpu family")
    family = int(family) if family.isdigit() else 0
    full_avx512 = "avx512f" in flags and ("GenuineIntel" in cpuinfo or ("AuthenticAMD" in cpuinfo and family >= 26))
    lanes = 16 if full_avx512 else 8 if "avx2" in flags else 4
    return 2 * lanes * 2


def device_peak(device: Any) -> tuple[float, str]:
    """(peak FLOP/s, how it was found) of `device` (a jax device).

    A CPU's peak is the larger of its nominal rate (cores x the clock /proc/cpuinfo shows x the FLOP per cycle of
    its FMA units) and the best measured float32 kernel (`kernel_rates`: XLA's and torch's matrix product and 3x3
    convolution). Each alone can be below what the cores reach: on the 2-core Intel Xeon of this project the
    nominal 2 x 2.6 GHz x 64 FLOP/cycle = 333 GFLOP/s was below torch's product (354-389 GFLOP/s, 2026-12-06: the
    clock under load is above the one shown), and on the 2-core AMD EPYC (Zen 5) that replaced it the products
    measured 164-185 GFLOP/s in a benchmark run of 2026-12-07 (in later runs torch's 194-199, XLA's 339-441) while
    3x3 convolutions ran at 413-465 on both sides, above the nominal 333.
    """
    if _PEAK.value:
        return _PEAK.value * 1e12, "--peak_tflops"
    kind = device.device_kind
    for prefix, peak in PEAKS.items():
        if kind.startswith(prefix):
            return peak, f"{kind}: dense bf16 peak"
    if device.platform == "cpu":
        cores, cpuinfo = len(os.sched_getaffinity(0)), open("/proc/cpuinfo").read()
        mhz = max(float(line.split(":")[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz"))
        per_cycle = cpu_flops_per_cycle(cpuinfo)
        nominal = cores * mhz * 1e6 * per_cycle
        rates = kernel_rates()
        best = max(rates, key=rates.get)
        measured = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
        nominal_how = f"{cores} cores x {mhz / 1e3:.2f} GHz x {per_cycle} FLOP/cycle"
        if nominal >= rates[best]:
            return nominal, f"nominal: {nominal_how}; float32 kernels measured at {measured} GFLOP/s ({KERNELS})"
        return rates[best], (f"the best measured float32 kernel, {best} ({measured} GFLOP/s; {KERNELS}); nominal "
                             f"{nominal / 1e9:.0f} GFLOP/s = {nominal_how}")
    raise ConfigError(f"unknown peak of device {kind!r}: give --peak_tflops")


class CpuLoad:
    """CPU time the *other* processes used while in the block, in cores (Linux /proc; None elsewhere)."""

    def __enter__(self):
        self.start = self._read()
        return self

    def __exit__(self, *exc):
        end = self._read()
        if self.start is None or end is None:
            self.cores = None
            return
        (busy0, own0, t0), (busy1, own1, t1) = self.start, end
        self.cores = max(0.0, ((busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / (t1 - t0))

    @staticmethod
    def _read():
        try:
            fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
            own = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        busy = sum(fields) - fields[3] - fields[4]  # everything but idle and iowait
        return busy, int(own[11]) + int(own[12]), time.monotonic()


# --- recipes and data -----------------------------------------------------------------------------------


def load_recipe(path: str) -> Any:
    """`configs/x.py[:variant]` (or a bare recipe name) -> its config, as --config loads it."""
    file, _, variant = path.partition(":")
    if os.sep not in file and not file.endswith(".py"):
        file = os.path.join(ROOT, "configs", f"{file}.py")
    if not os.path.isfile(file):
        raise ConfigError(f"no recipe file {file}")
    spec = importlib.util.spec_from_file_location(os.path.basename(file)[:-3], file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant or None)


def synthetic_root(config: Any, tmp: str, examples: int) -> str:
    """Writes synthetic data in the layout(s) of `config.data.name` under `tmp`; returns its root."""
    from fer_jax.data import make_synthetic

    name = config.data.name
    if name not in SYNTHETIC:
        raise ConfigError(f"no synthetic layout for dataset {name!r}; known: {', '.join(SYNTHETIC)}")
    root = os.path.join(tmp, name)
    for layout, sub in SYNTHETIC[name]:
        make_synthetic(layout, os.path.join(root, sub) if sub else root, num_train=examples,
                       num_test=max(10, examples // 8), seed=0)
    return root


def prepare(config: Any, tmp: str, batch: int) -> tuple[Any, Any, dict]:
    """(config at `batch` on synthetic data, the train source, one training batch of the recipe's pipeline)."""
    import numpy as np

    from fer_jax import data
    from fer_jax.train import loop

    config.batch_size = config.eval_batch_size = batch
    config.init_from = ""
    config.data.root = synthetic_root(config, tmp, max(4 * batch, 40))
    train_src, _ = loop.build_sources(config.data)
    it = data.train_iterator(train_src, config.data.train_pp, global_batch=batch, seed=0,
                             sampler=config.data.sampler)
    try:
        example = {k: np.asarray(v) for k, v in next(it).items()}
    finally:
        it.close()
    return config, train_src, example


def pipeline_rates(config: Any, source: Any, batch: int, workers: list[int], batches: int = 6) -> dict[str, float]:
    """Examples/s of the recipe's training pipeline for each worker count (after the first batch)."""
    from fer_jax import data

    rates = {}
    for w in workers:
        it = data.train_iterator(source, config.data.train_pp, global_batch=batch, seed=1,
                                 sampler=config.data.sampler, num_workers=w)
        try:
            next(it)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            rates[str(w)] = batches * batch / (time.perf_counter() - start)
        finally:
            it.close()
    return rates


# --- the two sides --------------------------------------------------------------------------------------


def jax_cases(config: Any, num_classes: int, example: dict) -> tuple[dict[str, Callable], dict[str, Any]]:
    """fer-jax's train step and eval forward as zero-argument calls, and what compiling them reported."""
    import jax

    from fer_jax import tasks, xla
    from fer_jax.train import loop, optim, state as state_lib, steps

    module, spec, hparams = loop.build_module(config, None, num_classes)
    task = tasks.create(config.task)
    tx, _ = optim.build(config, 100, frozen=spec.frozen(hparams))
    state = state_lib.create(module, spec, task, tx, config.data.image_size, config.seed)
    batch = jax.device_put(example)
    info: dict[str, Any] = {}
    train = xla.jit(functools.partial(steps.train_step, module=module, spec=spec, task=task, tx=tx,
                                      compute_dtype=loop.compute_dtype(config)), "train", donate_argnums=0)
    forward = xla.jit(lambda v, inputs: spec.predict(spec.named(module.apply(v, *inputs, train=False))), "eval")
    variables = state_lib.model_variables(state)
    inputs = spec.batch_inputs(batch, loop.compute_dtype(config))
    compiled = {}
    for name, fn, args in (("train", train, (state, batch)), ("eval", forward, (variables, inputs))):
        start = time.perf_counter()
        compiled[name] = fn.lower(*args).compile()
        info[f"{name}_compile_s"] = time.perf_counter() - start
        cost = compiled[name].cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        info[f"{name}_flops"] = float(cost.get("flops", 0.0))
        mem = compiled[name].memory_analysis()
        if mem is not None:
            info[f"{name}_xla_bytes"] = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                            + mem.output_size_in_bytes - mem.alias_size_in_bytes)
    holder = {"state": state}

    def train_once():
        holder["state"], metrics = compiled["train"](holder["state"], batch)
        jax.block_until_ready(metrics)

    def eval_once():  # the current state's variables (the train step donates the previous ones)
        jax.block_until_ready(compiled["eval"](state_lib.model_variables(holder["state"]), inputs))

    return {"train": train_once, "eval": eval_once}, info


def torch_cases(config: Any, example: dict, compile_: bool = False) -> dict[str, Callable]:
    """The reference's train step (the recipe's loss and optimizer in torch) and eval forward."""
    import jax
    import numpy as np
    import torch

    from fer_jax import models, tasks
    from porting import archs
    from porting.reference import training

    name = config.model.name
    hparams = {k: v for k, v in config.model.items() if k != "name"}
    spec, task = models.spec(name), tasks.create(config.task)
    model = archs.ARCHS[name].reference(**hparams)
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(a, np.float32))
                   for a in archs.ARCHS[name].torch_inputs({k: example[k] for k in spec.inputs}))

    def to_torch(a: np.ndarray) -> torch.Tensor:
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            return torch.from_numpy(a.astype(np.int64))
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a))

    batch = {k: to_torch(v) for k, v in example.items()}
    aux = {k: torch.nn.Parameter(torch.from_numpy(np.array(v)))
           for k, v in task.init_aux(jax.random.key(0)).items()}
    opt = training.optimizer(config.optimizer, [*model.parameters(), *aux.values()])
    net = torch.compile(model) if compile_ else model
    # fer-jax's bfloat16 policy in torch's terms: float32 parameters, bfloat16 compute, float32 losses
    autocast = functools.partial(torch.autocast, "cpu", torch.bfloat16,
                                 enabled=config.compute_dtype == "bfloat16")

    def objective() -> torch.Tensor:
        with autocast():
            named = spec.named(net(*inputs))
        named = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                 for k, v in named.items()}
        return training.loss(task, named, spec.predict(named), batch, aux)

    def train_once():
        model.train()
        opt.zero_grad()
        objective().backward()
        if isinstance(opt, training.SAM):
            opt.first_step()
            opt.zero_grad()
            objective().backward()
            opt.second_step()
        else:
            opt.step()

    def eval_once():
        model.eval()
        with torch.no_grad(), autocast():
            net(*inputs)

    return {"train": train_once, "eval": eval_once}


# --- one network ----------------------------------------------------------------------------------------


def interleaved(cases: dict[str, Callable], reps: int,
                turn: int) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """Median seconds per call of each case over `reps` rounds, the median system CPU seconds per call (this
    process, all threads: mostly page faults of fresh memory), and every round's seconds. After one warm-up call
    each, every round gives each case in turn `turn` calls in a row and times the last (module docstring)."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    system: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for key, fn in cases.items():
            for _ in range(turn - 1):
                fn()
            sys0, start = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
            system[key].append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in system.items()}, times)


VMSTAT = ("compact_stall", "thp_fault_alloc", "thp_fault_fallback")


def is_kernel(op: str) -> bool:
    """Whether torch's profiler key `op` names a convolution or matrix-product kernel (`KERNEL_OPS`)."""
    return op.startswith("aten::") and ("conv" in op or op in KERNEL_OPS)


def kernel_share(fn: Callable) -> float:
    """The share of one call of the torch case `fn` (called once before, untimed) that torch's profiler finds in
    convolution and matrix-product kernels: their self CPU time over all operators' self CPU time (the calling
    thread's; an operator's OpenMP threads work within its own span)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    total = kernels = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        kernels += event.self_cpu_time_total if is_kernel(event.key) else 0.0
    return kernels / total if total else 0.0


def vmstat() -> dict[str, int]:
    """The kernel's system-wide counters of huge-page faults and of compaction stalls (a fault that waited for
    the kernel to compact memory into a huge page: on a fragmented machine this can cost more than small pages
    save); {} where /proc/vmstat is not there."""
    try:
        with open("/proc/vmstat") as f:
            fields = dict(line.split() for line in f if line.strip())
    except OSError:
        return {}
    return {k: int(fields[k]) for k in VMSTAT if k in fields}


def with_threads(fn: Callable, n: int) -> Callable:
    import torch

    def call():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(before)

    return call


def run_one(label: str, config: Any, batch: int, reps: int, turn: int, workers: list[int],
            peak: float) -> dict[str, Any]:
    import jax
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        config, source, example = prepare(config, tmp, batch)
        jx, info = jax_cases(config, source.num_classes, example)
        tc = torch_cases(config, example)
        cases = {"jax_train": jx["train"], "torch_train": tc["train"], "jax_eval": jx["eval"], "torch_eval": tc["eval"]}
        if _ONE_THREAD.value:
            cases.update({"torch1_train": with_threads(tc["train"], 1), "torch1_eval": with_threads(tc["eval"], 1)})
        if _TORCH_COMPILE.value:
            try:
                compiled = torch_cases(config, example, compile_=True)
                for kind in ("train", "eval"):
                    start = time.perf_counter()
                    compiled[kind]()  # compiles here, outside the timed rounds
                    info[f"{kind}_torch_compile_s"] = time.perf_counter() - start
                cases.update({"torchc_train": compiled["train"], "torchc_eval": compiled["eval"]})
            except Exception as e:  # noqa: BLE001 - torch.compile's failures are reported, not fatal
                lines = str(e).strip().splitlines() or [""]
                info["torch_compile_error"] = f"{type(e).__name__}: {lines[0][:200]}"
        with CpuLoad() as load:
            before = vmstat()
            median, system, rounds = interleaved(cases, reps, turn)
            after = vmstat()
        share = {kind: kernel_share(tc[kind]) for kind in ("train", "eval")}
        pipeline = pipeline_rates(config, source, batch, workers) if workers else {}
    r = {"label": label, "network": config.model.name, "image_size": config.data.image_size, "batch": batch,
         "optimizer": config.optimizer.name + (" + SAM" if config.optimizer.get("sam_rho", 0) > 0 else ""),
         "task": config.task.name, "compute_dtype": config.compute_dtype, "seconds": median,
         "round_seconds": rounds,
         "system_seconds": system, "vmstat": {k: after[k] - before[k] for k in after if k in before}, **info,
         "other_processes_cores": load.cores, "pipeline_examples_per_s": pipeline,
         "torch_threads": torch.get_num_threads(), "jax_backend": jax.default_backend()}
    for kind in ("train", "eval"):
        s = median[f"jax_{kind}"]
        r[f"{kind}_ratio"] = median[f"torch_{kind}"] / s
        # each round's ratio: the torch call over the fer-jax call just before it; their range shows how much the
        # machine moved within the measurement
        r[f"{kind}_round_ratios"] = round_ratios(rounds, "torch", kind)
        if f"torch1_{kind}" in median:
            r[f"{kind}_ratio_torch1"] = median[f"torch1_{kind}"] / s
        if f"torchc_{kind}" in median:
            r[f"{kind}_ratio_torch_compile"] = median[f"torchc_{kind}"] / s
            r[f"{kind}_round_ratios_torch_compile"] = round_ratios(rounds, "torchc", kind)
        r[f"{kind}_examples_per_s"] = batch / s
        r[f"{kind}_torch_kernel_share"] = share[kind]
        r[f"{kind}_ceiling"] = 1.0 / share[kind] if share[kind] else None  # no kernels: no ceiling
        r[f"{kind}_flops_per_s"] = info[f"{kind}_flops"] / s
        r[f"{kind}_torch_flops_per_s"] = info[f"{kind}_flops"] / median[f"torch_{kind}"]
        r[f"{kind}_mfu"] = r[f"{kind}_flops_per_s"] / peak
    return r


# --- report ---------------------------------------------------------------------------------------------


def kept(machine: dict) -> str:
    """What `cli.keep_memory` set in this run, in words."""
    parts = {"malloc": "glibc's malloc keeps its heap", "sync_dispatch": "jax runs CPU calls on the calling thread"}
    done = [text for name, text in parts.items() if machine.get("keep_memory", {}).get(name)]
    return ", ".join(done) or "no"


def round_ratios(rounds: dict[str, list[float]], torch_case: str, kind: str) -> list[float]:
    """Every round's ratio of `{torch_case}_{kind}`: its call over the fer-jax call just before it."""
    return [t / j for t, j in zip(rounds[f"{torch_case}_{kind}"], rounds[f"jax_{kind}"])]


def spread(ratios: list[float]) -> str:
    """` [1.21-1.31]`: the range of the rounds' ratios (nothing for a single round)."""
    return f" [{min(ratios):.2f}-{max(ratios):.2f}]" if len(ratios) > 1 else ""


def ratio(row: dict, kind: str) -> str:
    """`**1.27** [1.21-1.31] (2.01)`: the ratio of the medians, the range of the rounds' ratios, and in brackets
    the ratio against torch with 1 thread (where measured)."""
    one = f" ({row[f'{kind}_ratio_torch1']:.2f})" if f"{kind}_ratio_torch1" in row else ""
    return f"**{row[f'{kind}_ratio']:.2f}**{spread(row[f'{kind}_round_ratios'])}{one}"


def compile_ratios(row: dict) -> str:
    """`0.96 [0.90-1.02] / 0.84`: the ratios against torch.compile, train / eval, each with its rounds' range;
    `failed` where torch.compile failed (the error is under the table), `-` where it was not asked for."""
    if "torch_compile_error" in row:
        return "failed"
    cells = []
    for kind in ("train", "eval"):
        if f"{kind}_ratio_torch_compile" not in row:
            return "-"
        cells.append(f"{row[f'{kind}_ratio_torch_compile']:.2f}{spread(row[f'{kind}_round_ratios_torch_compile'])}")
    return " / ".join(cells)


def kernels(row: dict) -> str:
    """`62 % / 80 % (1.61 / 1.24)`: torch's time in kernels, train / eval, and the ceilings of the two ratios."""
    share = " / ".join(f"{100 * row[f'{k}_torch_kernel_share']:.0f} %" for k in ("train", "eval"))
    ceiling = " / ".join("-" if row[f"{k}_ceiling"] is None else f"{row[f'{k}_ceiling']:.2f}"
                         for k in ("train", "eval"))
    return f"{share} ({ceiling})"


def markdown(rows: list[dict], machine: dict) -> str:
    """Two tables: speed against torch, then compute, memory and the input pipeline."""
    mb = 2 ** 20
    stalls = ", ".join(f"{r['network']} {r['vmstat']['compact_stall']}" for r in rows
                       if r["vmstat"].get("compact_stall")) or "none"
    lines = [f"fer-jax vs torch eager on {machine['device']}; jax {machine['jax']}, torch {machine['torch']} "
             f"({machine['torch_threads']} threads); compute dtype: {machine['compute_dtype']}; medians of "
             f"{machine['reps']} interleaved repetitions, each the last of {machine['turn']} calls in a row; ratio = "
             "torch time / fer-jax time (above 1: fer-jax faster), in square brackets the lowest and highest of the "
             "rounds' ratios (each round's torch call over the fer-jax call just before it: how far the machine moved "
             "within the measurement), in round brackets against torch with 1 thread; "
             f"GLIBC_TUNABLES: {machine['glibc_tunables'] or 'none'}; memory kept between calls "
             f"(fer_jax.cli.keep_memory): {kept(machine)} (both sides); torch in kernels: the share of torch's time in "
             "its convolution and matrix-product kernels (torch's profiler), and in brackets the ceiling it sets: the "
             "ratio fer-jax would reach with those kernels at torch's speed and everything else free; against "
             "torch.compile: the same ratios against torch's steps compiled by torch.compile (its default inductor "
             "backend; its first call's time in the second table).", "",
             "| network (recipe) | input, batch | train ms: fer-jax / torch | train ratio | eval ms: fer-jax / torch "
             "| eval ratio | torch in kernels: train / eval (ceiling) | against torch.compile: train / eval "
             "| others' CPU (cores) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["seconds"]
        load = "-" if r["other_processes_cores"] is None else f"{r['other_processes_cores']:.2f}"
        lines.append(f"| {r['network']} ({r['label']}) | {r['image_size']} px, {r['batch']} "
                     f"| {1e3 * s['jax_train']:.0f} / {1e3 * s['torch_train']:.0f} | {ratio(r, 'train')} "
                     f"| {1e3 * s['jax_eval']:.0f} / {1e3 * s['torch_eval']:.0f} | {ratio(r, 'eval')} "
                     f"| {kernels(r)} | {compile_ratios(r)} | {load} |")
    failed = [f"- torch.compile failed for {r['network']}: {r['torch_compile_error']}" for r in rows
              if "torch_compile_error" in r]
    lines += ["", *failed] if failed else []
    lines += ["", f"Compute against the {machine['peak']} (FLOPs from XLA's cost analysis of each step; torch's "
              "FLOP/s use the same count); train memory: XLA's buffer plan of fer-jax's step (parameters, optimizer "
              "state, batch and temporaries; torch's CPU allocator keeps no peak to compare); system CPU: the kernel's "
              "time in the process during a step, mostly page faults of memory allocated afresh (kernel compaction "
              f"stalls while timing, system-wide: {stalls}); the input pipeline (the recipe's preprocessing) by "
              "worker processes, against the examples/s the fer-jax train step consumes.", "",
              "| network | compile s: train / eval (torch.compile's first call) | GFLOP: train / eval "
              "| fer-jax GFLOP/s: train / eval (% of peak) | torch GFLOP/s: train / eval | train memory MB "
              "| system CPU s per train step: fer-jax / torch "
              "| pipeline examples/s by workers | train step examples/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pipe = ", ".join(f"{w}: {v:.0f}" for w, v in r["pipeline_examples_per_s"].items()) or "-"
        torch_first = (f" ({r['train_torch_compile_s']:.0f} / {r['eval_torch_compile_s']:.0f})"
                       if "eval_torch_compile_s" in r else "")
        lines.append(f"| {r['network']} | {r['train_compile_s']:.0f} / {r['eval_compile_s']:.0f}{torch_first} "
                     f"| {r['train_flops'] / 1e9:.1f} / {r['eval_flops'] / 1e9:.1f} "
                     f"| {r['train_flops_per_s'] / 1e9:.0f} / {r['eval_flops_per_s'] / 1e9:.0f} "
                     f"({100 * r['train_mfu']:.0f} % / {100 * r['eval_mfu']:.0f} %) "
                     f"| {r['train_torch_flops_per_s'] / 1e9:.0f} / {r['eval_torch_flops_per_s'] / 1e9:.0f} "
                     f"| {r.get('train_xla_bytes', 0) / mb:.0f} "
                     f"| {r['system_seconds']['jax_train']:.2f} / {r['system_seconds']['torch_train']:.2f} "
                     f"| {pipe} | {r['train_examples_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    import jax
    import torch

    if _RECIPES.value:
        runs = [(path, path, {}) for path in _RECIPES.value]
    else:
        names = _NETWORKS.value or list(RECIPES)
        unknown = [n for n in names if n not in RECIPES]
        if unknown:
            raise ConfigError(f"--networks: unknown {unknown[0]!r}; known: {', '.join(RECIPES)}")
        suffix = f":{_VARIANT.value}" if _VARIANT.value else ""
        runs = [(n, RECIPES[n][0] + suffix, RECIPES[n][1]) for n in names]
    workers = [int(w) for w in _WORKERS.value]
    peak, peak_how = device_peak(jax.devices()[0])
    machine = {"device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}, {jax.device_count()} device(s))",
               "peak": f"device peak of {peak / 1e9:.0f} GFLOP/s ({peak_how})", "peak_flops_per_s": peak,
               "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "reps": _REPS.value, "turn": _TURN.value, "batch": _BATCH.value,
               "compute_dtype": _DTYPE.value or "the recipes'",
               "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "keep_memory": dict(cli.KEPT)}
    rows = []
    for label, recipe, overrides in runs:
        config = load_recipe(recipe)
        config.model.update(overrides)
        if _DTYPE.value:
            config.compute_dtype = _DTYPE.value
        print(f"{label}: {config.model.name} ...", flush=True)
        rows.append(run_one(os.path.basename(recipe), config, _BATCH.value, _REPS.value, _TURN.value, workers, peak))
        r = rows[-1]
        print(f"  train {r['train_ratio']:.2f}x torch, eval {r['eval_ratio']:.2f}x torch", flush=True)
    table = markdown(rows, machine)
    print(table)
    if _OUT.value:
        os.makedirs(_OUT.value, exist_ok=True)
        for name, text in (("benchmark.md", table),
                           ("benchmark.json", json.dumps({"machine": machine, "rows": rows}, indent=2))):
            path = os.path.join(_OUT.value, name)
            with open(f"{path}.tmp", "w") as f:
                f.write(text)
            os.replace(f"{path}.tmp", path)


if __name__ == "__main__":
    cli.huge_pages()
    cli.keep_memory()
    app.run(lambda argv: cli.run_user(lambda: main(argv)), flags_parser=cli.flags_parser([]))
