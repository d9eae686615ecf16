"""Every command-line tool fed bad input, pointed at outputs it must not clobber, and interrupted.

Each case of the table runs a tool as a user would and asserts its exit code, that stderr is one line
without a traceback, and which files are left on disk: a refused run leaves every file as it was. The
cases that need training (Ctrl-C and resume, the best-metric direction, a diverging run) share one trained
workdir, trained by the same command. porting/ tools run in-process through their `main(argv)` (an argparse
exit code), the absl scripts as subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = None  # set by the `env` fixture
SMOKE = ROOT / "configs" / "dan_rafdb.py:smoke"
# The shared run: 2 epochs of 2 steps (16 training images, batch 8), best model by the lowest test loss.
TRAIN = ("--config", str(SMOKE), "--config.data.root={data}")
RUN_FLAGS = ("--config.num_train_steps=4", "--config.checkpoint_every_steps=4", "--config.log_every_steps=3",
             "--config.best_metric=loss")


def tool(name: str, *args, env: dict | None = None, umask: int = -1, wait: bool = True):
    """Runs scripts/<name>.py like a user (fer_jax importable from this checkout). The training runs of
    this module share XLA's persistent compilation cache (the same program compiles once)."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "PYTHONUNBUFFERED": "1", "JAX_COMPILATION_CACHE_DIR": str(CACHE),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **(env or {})}
    cmd = [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                umask=umask)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=600, umask=umask)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every file and directory under `root` with its size, modification time and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A synthetic RAF-DB, a trained workdir (`area/run`) and the files the cases point at, in `area/`."""
    from fer_jax import models, pretrained
    from fer_jax.data import make_synthetic

    base = tmp_path_factory.mktemp("bad_inputs")
    global CACHE
    CACHE = base / "xla_cache"
    data = make_synthetic("rafdb", str(base / "rafdb"), num_train=16, num_test=10, seed=3, image_size=32)
    area = base / "area"
    area.mkdir()
    r = tool("train", *(a.format(data=data) for a in TRAIN), "--workdir", area / "run", *RUN_FLAGS)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, arch, hparams in (("dan8", "dan", {"num_class": 8, "num_head": 4}),
                                ("r1000", "resnet18", {"num_classes": 1000})):
        spec = models.spec(arch)
        module = models.create(arch, **hparams)
        variables = spec.init(module, jax.random.key(0), {"image": np.zeros((1, 32, 32, 3), np.float32)})
        pretrained.save_pretrained(area / name, arch, hparams, variables)
    shutil.copytree(area / "run" / "best", area / "edited")  # metadata that disagrees with the weights
    meta = json.loads((area / "edited" / "fer_jax.json").read_text())
    meta["hparams"]["num_class"] = 8
    (area / "edited" / "fer_jax.json").write_text(json.dumps(meta))
    (area / "afile").write_text("not a directory\n")
    (area / "foreign").mkdir()
    (area / "foreign" / "config.json").write_text('{"my": "project"}\n')
    (area / "foreign" / "report.json").write_text('{"my": "report"}\n')
    (area / "reports").mkdir()
    (area / "reports" / "report.json").write_text('{"format": "fer-jax-report/1"}\n')
    (area / "notes.pth").write_text("my notes, not a checkpoint\n")
    try:  # a DAN release file for the porting cases (skipped without torch)
        import torch_helpers
    except ImportError:
        pass
    else:
        torch_helpers.save_dan_release(torch_helpers.random_dan(7, 4, seed=2, image_size=32), base / "dan.pth")
    (base / "bad_syntax.py").write_text("def get_config(:\n")
    (base / "bad_raise.py").write_text("def get_config(arg=None):\n    raise RuntimeError('boom')\n")
    return {"base": base, "data": data, "area": area}


@dataclasses.dataclass
class Case:
    """A tool, its arguments ({data}, {area}, {base} filled in), the exit code and the one line expected."""

    tool: str
    args: tuple[str, ...]
    code: int
    message: str  # a regular expression searched in the line
    env: dict = dataclasses.field(default_factory=dict)


TRAIN_NEW = (*TRAIN, "--workdir", "{area}/new")
EVAL = ("--config", str(SMOKE), "--config.data.root={data}", "--model")
REFUSED = {
    # scripts/train.py: the config, the devices, the model, the workdir; nothing is written.
    "train_unknown_key": Case("train", (*TRAIN_NEW, "--config.bath_size=8"), 2, "unknown config key .*bath_size"),
    "train_missing_dataset": Case("train", (*TRAIN_NEW, "--config.data.root={base}/nowhere"), 1,
                                  r"RAF-DB: directory .*nowhere not found"),
    "train_config_syntax_error": Case("train", ("--config", "{base}/bad_syntax.py", "--workdir", "{area}/new"), 2,
                                      r"bad_syntax.py line 1: invalid syntax"),
    "train_config_raises": Case("train", ("--config", "{base}/bad_raise.py", "--workdir", "{area}/new"), 2,
                                r"RuntimeError: boom \(.*bad_raise.py line 2\)"),
    "train_negative_seed": Case("train", (*TRAIN_NEW, "--config.seed=-1"), 1, r"seed=-1 must be an integer in"),
    "train_process_id_out_of_range": Case("train", (*TRAIN_NEW, "--config.distributed.process_id=3"), 1,
                                          r"distributed.process_id=3 must be in \[0, 1\)"),
    "train_bad_num_head": Case("train", (*TRAIN_NEW, "--config.model.num_head=-1"), 1,
                               r"model dan .*'num_head': -1.* cannot be built"),
    "train_class_count_vs_data": Case("train", (*TRAIN_NEW, "--config.model.num_class=8"), 1,
                                      "model.num_class=8 but the rafdb train split has 7 classes"),
    "train_zero_steps": Case("train", (*TRAIN_NEW, "--config.num_train_steps=0"), 1,
                             r"num_train_steps=0: use a positive integer, or -1"),
    "train_unknown_best_metric": Case("train", (*TRAIN_NEW, "--config.best_metric=top5"), 1,
                                      r"best_metric='top5' is not an evaluation metric; use one of accuracy \(higher "
                                      r"is better\).* loss \(lower is better\)"),
    "train_best_metric_of_another_task": Case("train", (*TRAIN_NEW, "--config.best_metric=mean_attribute_accuracy"),
                                              1, "not reported by a multiclass task"),
    "train_eval_batch_vs_devices": Case("train", (*TRAIN_NEW, "--config.eval_batch_size=7"), 1,
                                        "eval_batch_size=7 is not divisible by the 2 devices",
                                        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
    "train_init_from_class_count": Case("train", (*TRAIN_NEW, "--config.init_from={area}/dan8"), 1,
                                        r"init_from .*dan8 is a dan with 8 classes .*config.init_drop"),
    "train_workdir_is_a_file": Case("train", (*TRAIN, "--workdir", "{area}/afile"), 1,
                                    "--workdir .*afile exists and is not a directory"),
    "train_workdir_under_a_file": Case("train", (*TRAIN, "--workdir", "{area}/afile/w"), 1,
                                       "afile is a file, not a directory"),
    "train_workdir_unwritable": Case("train", (*TRAIN, "--workdir", "/proc/fer_jax_run"), 1, "/proc is not writable"),
    "train_workdir_of_another_network": Case("train", (*TRAIN, "--workdir", "{area}/run", *RUN_FLAGS,
                                                       "--config.model.num_head=2"), 1,
                                             r"holds checkpoints of a run with model.num_head=4 .* this command has "
                                             r"model.num_head=2"),
    "train_foreign_workdir": Case("train", (*TRAIN, "--workdir", "{area}/foreign"), 1,
                                  "holds a config.json that fer-jax did not write"),
    "train_stray_argument": Case("train", (*TRAIN_NEW, "extra"), 2, "unexpected arguments 'extra'"),
    # scripts/evaluate.py: a model that does not fit the data, an output that cannot or may not be written.
    "eval_8_class_dan_on_7_classes": Case("evaluate", (*EVAL, "{area}/dan8"), 1,
                                          r"is a dan with 8 classes \(num_class\) but rafdb test has 7"),
    "eval_1000_way_resnet": Case("evaluate", (*EVAL, "{area}/r1000"), 1,
                                 r"is a resnet18 with 1000 classes \(num_classes\) but rafdb test has 7"),
    "eval_metadata_disagrees_with_weights": Case("evaluate", (*EVAL, "{area}/edited"), 1,
                                                 r"its weights do not fit the dan .*6 variables differ, first "
                                                 r"batch_stats/bn/mean: stored \[7\], expected \[8\]"),
    "eval_class_order": Case("evaluate", (*EVAL, "{area}/run/best", "--config.data.class_order=expw"), 1,
                             "was trained on the classes Surprise, .* pass --config.data.class_order=rafdb"),
    "eval_image_size": Case("evaluate", (*EVAL, "{area}/run/best", "--config.data.image_size=64"), 1,
                            "trained on 32 px images but the recipe evaluates at 64 px"),
    "eval_out_is_a_file": Case("evaluate", (*EVAL, "{area}/run/best", "--out", "{area}/afile"), 1,
                               "exists and is not a directory"),
    "eval_out_under_a_file": Case("evaluate", (*EVAL, "{area}/run/best", "--out", "{area}/afile/r"), 1,
                                  "afile is a file, not a directory"),
    "eval_out_unwritable": Case("evaluate", (*EVAL, "{area}/run/best", "--out", "/proc/fer_jax_report"), 1,
                                "/proc is not writable"),
    "eval_existing_report": Case("evaluate", (*EVAL, "{area}/run/best", "--out", "{area}/reports"), 1,
                                 "already holds report.json; choose another --out or pass --overwrite"),
    "eval_overwrite_foreign_report": Case("evaluate", (*EVAL, "{area}/run/best", "--out", "{area}/foreign",
                                                       "--overwrite"), 1, "is not a fer-jax report"),
    "eval_stray_argument": Case("evaluate", (*EVAL, "{area}/run/best", "extra"), 2, "unexpected arguments"),
    # scripts/predict.py
    "predict_top_0": Case("predict", ("--model", "{area}/run/best", "--top", "0", "{area}/afile"), 2,
                          r"flag --top=0: 0 is not"),
    "predict_missing_image": Case("predict", ("--model", "{area}/run/best", "{area}/none.jpg"), 1,
                                  "none.jpg: not found"),
    "predict_no_image": Case("predict", ("--model", "{area}/run/best"), 2, "give one or more images, folders or videos"),
    "predict_labels_of_another_count": Case("predict", ("--model", "{area}/run/best", "--labels", "affectnet",
                                                        "{data}/Image/aligned/test_0001_aligned.jpg"), 1,
                                            "the model has 7 outputs but --labels affectnet names 8 classes"),
    # scripts/make_synthetic.py
    "synthetic_out_under_a_file": Case("make_synthetic", ("--layout", "rafdb", "--out", "{area}/afile/d"), 1,
                                       "afile is a file, not a directory"),
    "synthetic_out_unwritable": Case("make_synthetic", ("--layout", "rafdb", "--out", "/proc/fer_jax_data"), 1,
                                     "/proc is not writable"),
    "synthetic_out_not_empty": Case("make_synthetic", ("--layout", "rafdb", "--out", "{area}/foreign"), 1,
                                    "exists and is not an empty directory"),
    "synthetic_image_size_0": Case("make_synthetic", ("--layout", "rafdb", "--out", "{area}/d", "--image_size", "0"),
                                   2, r"flag --image_size=0: 0 is not integer >= 32"),
    "synthetic_negative_seed": Case("make_synthetic", ("--layout", "rafdb", "--out", "{area}/d", "--seed=-1"), 2,
                                    "flag --seed=-1"),
    "synthetic_stray_argument": Case("make_synthetic", ("--layout", "rafdb", "--out", "{area}/d", "extra"), 2,
                                     "unexpected arguments 'extra'"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_in_one_line_leaving_every_file(env, case):
    c = REFUSED[case]
    fill = {k: env[k] for k in ("data", "area", "base")}
    before = snapshot(env["area"])
    r = tool(c.tool, *(a.format(**fill) for a in c.args), env=c.env)
    line = one_line(r.stderr)
    print(f"{case}: exit {r.returncode}: {line}")  # `-rA` prints the table of observed lines
    assert r.returncode == c.code, (r.returncode, line)
    assert line.startswith("error: ") and re.search(c.message, line), line
    assert snapshot(env["area"]) == before


PORTING = {
    # porting/convert.py: checked before the checkpoint is read (area/notes.pth is not one), but for the
    # architecture, which is checked against the file's keys.
    "convert_hparam_of_another_kind": ("convert", ["--hparam", "num_class='7'"], "--hparam num_class='7': dan takes "
                                       "an integer here"),
    "convert_no_classes": ("convert", ["--hparam", "num_class=0"], "num_class=0: a model needs at least one class"),
    "convert_bad_num_head": ("convert", ["{base}/dan.pth", "--arch", "dan", "--hparam", "num_head=-1"],
                             r"the checkpoint is not a dan .*'num_head': -1"),
    "convert_out_under_a_file": ("convert", ["--out", "{area}/afile/m"], "afile is a file, not a directory"),
    "convert_out_unwritable": ("convert", ["--out", "/proc/fer_jax_model"], "/proc is not writable"),
    "convert_out_exists": ("convert", ["--out", "{area}/dan8"], "dan8 already exists; choose another --out or pass "
                           "--overwrite"),
    "convert_overwrite_foreign_directory": ("convert", ["--out", "{area}/foreign", "--overwrite"],
                                            "is not a fer-jax model directory .*--overwrite replaces only model "
                                            "directories"),
    # porting/export.py
    "export_out_under_a_file": ("export", ["{area}/run/best", "--out", "{area}/afile/x.pth"],
                                "afile is a file, not a directory"),
    "export_out_unwritable": ("export", ["{area}/run/best", "--out", "/proc/fer_jax.pth"], "/proc is not writable"),
    "export_out_is_a_directory": ("export", ["{area}/run/best", "--out", "{area}/foreign"],
                                  "exists and is not a file"),
    "export_out_exists": ("export", ["{area}/run/best", "--out", "{area}/notes.pth"], "already exists"),
    "export_overwrite_foreign_file": ("export", ["{area}/run/best", "--out", "{area}/notes.pth", "--overwrite"],
                                      "notes.pth is not a PyTorch checkpoint; --overwrite replaces only those"),
    "export_metadata_disagrees_with_weights": ("export", ["{area}/edited", "--out", "{area}/e.pth"],
                                               "its weights do not fit the dan"),
}


@pytest.mark.parametrize("case", list(PORTING))
def test_porting_refused_in_one_line_leaving_every_file(env, case, capsys):
    pytest.importorskip("torch")
    from porting import convert, export

    name, args, message = PORTING[case]
    fill = {k: env[k] for k in ("area", "base")}
    args = [a.format(**fill) for a in args]
    before = snapshot(env["area"])
    main = convert.main if name == "convert" else export.main
    if name == "convert" and not args[0].endswith(".pth"):
        args = [str(env["area"] / "notes.pth"), *args]
    code = main(args)
    line = one_line(capsys.readouterr().err)
    print(f"{case}: exit {code}: {line}")  # `-rA` prints the table of observed lines
    assert code == 2 and line.startswith("error: ") and re.search(message, line), line
    assert snapshot(env["area"]) == before


def final_state(workdir: pathlib.Path, step: int):
    with ocp.StandardCheckpointer() as c:
        return c.restore(str(workdir / "checkpoints" / str(step) / "state"))


def rows(workdir: pathlib.Path) -> list[dict]:
    """metrics.jsonl without the timing column."""
    out = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_second"} for r in out]


def test_ctrl_c_saves_the_step_and_the_same_command_resumes_exactly(env, tmp_path):
    """Ctrl-C: one line, exit 130, the step reached saved; the same command (umask 002) resumes it, removes
    what a killed run left, logs every step once, covers the whole epoch in its summary and ends with the
    state, metrics and best model (lowest loss) of the uninterrupted run."""
    work = tmp_path / "w"
    cmd = (*[a.format(data=env["data"]) for a in TRAIN], "--workdir", work, *RUN_FLAGS)
    proc = tool("train", *cmd, wait=False)
    # Ctrl-C while the first step compiles: the loop stops after step 1, before the first logged step (3),
    # so the sums of the steps not logged yet are saved with the state.
    for line in proc.stdout:
        if "steps 0..4" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    m = re.fullmatch(r"interrupted at step (\d+); run the same command to resume", one_line(err))
    assert proc.returncode == 130 and m, err
    stopped = int(m[1])
    assert 1 <= stopped < 4 and str(stopped) in os.listdir(work / "checkpoints")
    (work / "best.tmp-killed").mkdir()  # what a kill during a save leaves
    (work / "metrics.jsonl.tmp-99").write_text("{")

    r = tool("train", *cmd, umask=0o002)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    assert f"resuming: {work / 'checkpoints'}/{stopped} (epoch 1)" in r.stdout
    assert not list(work.glob("*.tmp-*"))
    ref = env["area"] / "run"
    for a, b in zip(jax.tree.leaves(final_state(ref, 4)), jax.tree.leaves(final_state(work, 4)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise: same program, same inputs
    assert rows(work) == rows(ref)  # every step once; the resumed epoch's summary covers both steps
    tests = [r for r in rows(work) if r["split"] == "test"]
    best = json.loads((work / "best_metrics.json").read_text())
    assert best["loss"] == min(t["loss"] for t in tests) and best["step"] == min(tests, key=lambda t: t["loss"])["step"]
    assert r.stdout.strip().splitlines()[-1] == (f"done: steps {stopped}..4; best loss {best['loss']:.4f} at epoch "
                                                 f"{best['epoch']} (step {best['step']}); model in {work}/best")
    assert os.stat(work / "best").st_mode & 0o777 == 0o775  # the umask, not tempfile's 0700
    assert os.stat(work / "best" / "fer_jax.json").st_mode & 0o777 == 0o664

    again = tool("train", *cmd)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1].startswith(
        f"nothing to train: {work} already holds step 4 of 4; best loss")


def test_a_diverging_run_saves_no_checkpoint(env, tmp_path):
    """The issue's probe: lr 1e38 with a checkpoint every step. The state after step 1 is not finite, so
    nothing is saved and the message says to start again with a lower learning rate."""
    work = tmp_path / "w"
    r = tool("train", *[a.format(data=env["data"]) for a in TRAIN], "--workdir", work, "--config.optimizer.lr=1e38",
             "--config.checkpoint_every_steps=1")
    line = one_line(r.stderr)
    assert r.returncode == 1 and re.fullmatch(
        r"error: (the parameters or optimizer state|loss) became non-finite .*by step 1; stopped.*; no checkpoint was "
        r"written: run the same command with a lower --config.optimizer.lr \(now 1e\+38\) to start again", line), line
    assert not [p for p in (work / "checkpoints").iterdir() if p.name.isdigit()]


def test_overwrite_replaces_only_its_own_outputs(env, tmp_path, capsys):
    """`--overwrite` replaces what the tool wrote before (stale temporaries of it removed), nothing else; the
    replacement honours the umask."""
    torch = pytest.importorskip("torch")
    import torch_helpers
    from porting import convert, export

    ckpt = tmp_path / "r18.pth"
    torch_helpers.save_msceleb(torch_helpers.random_resnet18(1000, seed=1, image_size=32), ckpt)
    out = tmp_path / "model"
    assert convert.main([str(ckpt), "--out", str(out), "--no-verify"]) == 0
    (tmp_path / "model.tmp-killed").mkdir()
    (out / "variables" / "stale").write_text("from the first conversion")
    mask = os.umask(0o002)
    try:
        assert convert.main([str(ckpt), "--out", str(out), "--no-verify", "--overwrite"]) == 0
        assert export.main([str(out), "--out", str(tmp_path / "back.pth")]) == 0
        (tmp_path / "back.pth.tmp-killed").write_text("")
        assert export.main([str(out), "--out", str(tmp_path / "back.pth"), "--overwrite"]) == 0
    finally:
        os.umask(mask)
    capsys.readouterr()
    assert sorted(os.listdir(tmp_path)) == ["back.pth", "model", "r18.pth"]
    assert not (out / "variables" / "stale").exists()
    assert os.stat(out).st_mode & 0o777 == 0o775 and os.stat(tmp_path / "back.pth").st_mode & 0o777 == 0o664
    assert set(torch.load(tmp_path / "back.pth", weights_only=True)) == {"state_dict"}

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "mine.txt").write_text("kept")
    for extra in ([], ["--overwrite"]):
        r = tool("evaluate", "--config", SMOKE, f"--config.data.root={env['data']}", "--model",
                 env["area"] / "run" / "best", "--out", reports, *extra)
        assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    assert sorted(os.listdir(reports)) == ["confusion_matrix.png", "mine.txt", "per_class.csv", "per_class.png",
                                           "report.json"]
    report = json.loads((reports / "report.json").read_text())
    assert report["format"] == "fer-jax-report/1" and report["count"] == 10


def test_make_synthetic_removes_stale_temporaries_and_honours_the_umask(tmp_path):
    (tmp_path / ".faces.tmp-killed").mkdir()  # what a killed make_synthetic leaves
    r = tool("make_synthetic", "--layout", "rafdb", "--out", tmp_path / "faces", "--num_train", "7", "--num_test",
             "7", "--image_size", "32", umask=0o002)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert os.listdir(tmp_path) == ["faces"] and os.stat(tmp_path / "faces").st_mode & 0o777 == 0o775


def test_predict_reads_every_image_kind_and_batches(env, tmp_path):
    """16-bit grayscale keeps its levels (PIL's convert clips it to white); 8-bit grayscale, palette, RGBA
    and CMYK become RGB; an image beyond PIL's decompression-bomb guard is refused in one line; faces run
    a batch at a time give what one batch gives."""
    from PIL import Image

    from fer_jax.errors import DatasetError
    from fer_jax.evaluate import predict

    levels = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "g16.png")
    rgb = predict.read_image(str(tmp_path / "g16.png"))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.round(levels / 257).astype(np.uint8))  # exact: 65535 = 255 * 257
    colour = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(colour).convert("RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(predict.read_image(str(tmp_path / "rgba.png")), colour)
    Image.fromarray(colour[..., 0]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(predict.read_image(str(tmp_path / "gray.png")), np.repeat(colour[..., :1], 3, 2))
    Image.fromarray(colour).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert predict.read_image(str(tmp_path / "cmyk.jpg")).shape == (16, 24, 3)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, 100  # 16 x 24 > 2 x 100: PIL's hard limit
    try:
        with pytest.raises(DatasetError, match="too large to decode safely"):
            predict.read_image(str(tmp_path / "gray.png"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit

    images = sorted(str(p) for p in pathlib.Path(env["data"], "Image", "aligned").glob("test_*"))[:3]
    model = str(env["area"] / "run" / "best")

    def run(batch_size):
        predictor = predict.Predictor(model, batch_size=batch_size)
        return list(predict.predict_inputs(predictor, images, detect=False, on_problem=pytest.fail))

    chunked, whole = run(2), run(3)
    assert [p.source for p in chunked] == images and [p.face for p in chunked] == [None] * 3
    # float32 logits of the same images in batches of 2 and 3: XLA may order the reductions differently.
    np.testing.assert_allclose([list(p.probabilities.values()) for p in chunked],
                               [list(p.probabilities.values()) for p in whole], rtol=1e-5)
