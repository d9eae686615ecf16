"""Train a recipe: python scripts/train.py --config configs/dan_rafdb.py --workdir runs/dan [--config.x=v]

`--config configs/<recipe>.py[:variant]` picks the recipe (variants such as `smoke` and `quick` are
listed in each recipe's docstring); `--config.<key>=<value>` overrides a key (unknown keys are refused).
Restarting the same command continues from the workdir's latest checkpoint. Multi-host: see README.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from fer_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "recipe file (configs/<network>_<dataset>.py[:variant])",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and the best model")


def main(argv: list[str]) -> None:
    del argv
    from fer_jax.train.loop import train_and_evaluate  # heavy imports after flags (grain re-imports __main__)

    import jax

    config = _CONFIG.value
    result = cli.run_user(lambda: train_and_evaluate(config, _WORKDIR.value))
    if jax.process_index() != 0:
        return
    best = result.get("best") or {}
    print(f"done: best {config.best_metric} {best.get(config.best_metric, float('nan')):.4f} at epoch "
          f"{best.get('epoch')}; model in {_WORKDIR.value}/best")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(["config", "workdir"]))
