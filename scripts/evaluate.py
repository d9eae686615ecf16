"""Evaluate a model: python scripts/evaluate.py --model runs/dan/best --config configs/dan_rafdb.py [--split test] [--out DIR]

`--model` is a fer-jax model directory (a training run's `best/` or `porting/convert.py` output); the
recipe `--config` says where the data is and how to preprocess it (`--config.data.root=...` overrides).
Prints accuracy, balanced accuracy, the confusion matrix and per-class precision / recall / F1; `--out` also
writes report.json, confusion_matrix.png (counts and row-normalised), per_class.png and per_class.csv
(multi-label tasks: per_attribute_accuracy.png and per_attribute.csv); an existing report is replaced only
with `--overwrite`. A model whose classes or
image size do not fit the recipe's data is refused.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from fer_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "recipe file (configs/<network>_<dataset>.py[:variant])",
                                          lock_config=True)
_MODEL = flags.DEFINE_string("model", None, "fer-jax model directory")
_SPLIT = flags.DEFINE_string("split", None, "dataset split (default: the recipe's eval_split)")
_OUT = flags.DEFINE_string("out", None, "directory for the report (JSON, CSV and PNG figures)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace a fer-jax report already in --out")


def main(argv: list[str]) -> None:
    del argv  # flags_parser refuses stray arguments

    def run() -> None:
        from fer_jax.evaluate.run import evaluate_model  # heavy imports after flag parsing

        evaluate_model(_MODEL.value, _CONFIG.value, _SPLIT.value, _OUT.value, overwrite=_OVERWRITE.value)

    cli.run_user(run)


if __name__ == "__main__":
    cli.huge_pages()
    cli.keep_memory()
    app.run(main, flags_parser=cli.flags_parser(["config", "model"]))
