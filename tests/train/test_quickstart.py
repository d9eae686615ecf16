"""The quickstart in small: DAN (float32 and bfloat16 compute) and Emotion-FAN learn the synthetic expressions far
above chance in a few hundred steps."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT, load_recipe
from fer_jax.data import make_synthetic
from fer_jax.train.loop import train_and_evaluate


# best test accuracy measured here after 5 epochs at 64 px (about 90 s each alone), by compute dtype, with the
# quick recipe's Adam at 3e-4. Over training seeds (`c.seed`) it spreads: float32 0.643-0.857 (seeds 0-9),
# bfloat16 0.638-0.805 (seeds 0-3). At the recipe's earlier 1e-3, float32 gave 0.205-0.900 over seeds 0-5, one
# run at chance, and this seed 0.495: the bound below sat within the spread. With DAN's channel attention in
# bfloat16 (before it computed in float32), bfloat16 stayed at chance here: 0.167.
MEASURED = {"float32": 0.805, "bfloat16": 0.805}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", list(MEASURED))
def test_dan_learns_synthetic_rafdb(tmp_path, dtype):
    """The README quickstart made smaller, in float32 and in the bfloat16 compute path (float32 parameters),
    which must learn as float32 does: with DAN's attention tail in bfloat16 it stayed at chance (0.15 at 72 px,
    where float32 reached 0.59), and so it did with the heads' channel attention in bfloat16 (MEASURED)."""
    root = make_synthetic("rafdb", str(tmp_path / "rafdb"), num_train=1600, num_test=210, seed=7)
    c = load_recipe("dan_rafdb", "quick")
    spec = importlib.util.spec_from_file_location("r", ROOT / "configs" / "dan_rafdb.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    c.data.root = root
    c.data.image_size = 64
    c.data.train_pp, c.data.eval_pp = recipe.pp_train(64), recipe.pp_eval(64)
    c.num_epochs = 5  # 250 steps of 32
    c.log_every_steps = 25
    c.compute_dtype = dtype
    result = train_and_evaluate(c, str(tmp_path / "run"), log=lambda *a: None)
    print(f"quickstart-small ({dtype}): best accuracy {result['best']['accuracy']:.3f} at epoch "
          f"{result['best']['epoch']}")
    # Chance is 1/7 = 0.14; measured in MEASURED. The bound, over three times chance and 0.19 below the lowest
    # seed measured, leaves room for other CPUs rounding differently along the way.
    assert result["best"]["accuracy"] >= 0.45


@pytest.mark.slow
def test_emotion_fan_learns_synthetic_afew_videos(tmp_path):
    """Emotion-FAN (relation attention) on synthetic AFEW videos: trained on frame triplets, judged per video."""
    root = make_synthetic("afew", str(tmp_path / "afew"), num_train=420, num_test=35, seed=7, image_size=72)
    c = load_recipe("fan_afew_relation", "cpu")
    c.data.root = root
    c.num_train_steps = 80  # of 16 triplets: half an epoch (many identities beat many passes over few)
    result = train_and_evaluate(c, str(tmp_path / "run"), log=lambda *a: None)
    best = result["best"]
    print(f"emotion-fan-small: best video accuracy {best['accuracy']:.3f} ({result['final']['count']} videos)")
    # Chance is 1/7 = 0.14 over 35 videos; measured here 0.571, and 0.571-0.657 over training seeds 0-3. The
    # bound, three times chance, leaves room for other CPUs rounding differently along the way.
    assert result["final"]["count"] == 35 and best["accuracy"] >= 0.43
