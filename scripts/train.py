"""Train a recipe: python scripts/train.py --config configs/dan_rafdb.py --workdir runs/dan [--config.x=v]

`--config configs/<recipe>.py[:variant]` picks the recipe (variants such as `smoke` and `quick` are
listed in each recipe's docstring); `--config.<key>=<value>` overrides a key (unknown keys are refused).
Restarting the same command continues from the workdir's latest checkpoint; the learning rate, schedule
and length may change between restarts, the network, task and data may not. Ctrl-C saves the step reached
and stops (exit 130); a second Ctrl-C stops at once. Multi-host: see README.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from fer_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "recipe file (configs/<network>_<dataset>.py[:variant])",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and the best model")


def summary(result: dict, metric: str, workdir: str) -> str:
    """The closing line: what this run did and where its best model is (only what exists)."""
    best = result.get("best")
    where = (f"best {metric} {best[metric]:.4f} at epoch {best['epoch']} (step {best['step']}); model in "
             f"{workdir}/best" if best else f"no evaluation gave a finite {metric}, so no best model was written")
    if result["start"] >= result["total"]:
        return f"nothing to train: {workdir} already holds step {result['start']} of {result['total']}; {where}"
    return f"done: steps {result['start']}..{result['total']}; {where}"


def main(argv: list[str]) -> None:
    del argv  # flags_parser refuses stray arguments

    def run() -> str:
        import jax

        from fer_jax.train.loop import train_and_evaluate  # heavy imports after flags (grain re-imports __main__)

        result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        return summary(result, _CONFIG.value.best_metric, _WORKDIR.value) if jax.process_index() == 0 else ""

    line = cli.run_user(run)
    if line:
        print(line)


if __name__ == "__main__":
    cli.huge_pages()
    cli.keep_memory()
    app.run(main, flags_parser=cli.flags_parser(["config", "workdir"]))
