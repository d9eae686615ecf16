"""Fixtures for the training tests: small synthetic datasets in the official layouts."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

from fer_jax.data import make_synthetic

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_recipe(name: str, arg: str | None = None):
    """configs/<name>.py's get_config(arg), as ml_collections' --config flag loads it."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """name -> root of a small synthetic dataset: rafdb (RAF-DB layout), affectnet (folders, 8 codes),
    afew and ckplus (Emotion-FAN's data/ folder: face videos and list files; counts are videos)."""
    base = tmp_path_factory.mktemp("synthetic")
    roots = {layout: make_synthetic(layout, str(base / layout), num_train=48, num_test=20, seed=3, image_size=32)
             for layout in ("rafdb", "affectnet")}
    roots.update({layout: make_synthetic(layout, str(base / layout), num_train=14, num_test=7, seed=3,
                                         image_size=32) for layout in ("afew", "ckplus")})
    return roots
