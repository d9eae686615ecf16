"""FAER on RAF-DB (7 expressions), the paper's recipe (faer_expression.py): 120 epochs, CE + 0.01 * center
loss, AdamW 2.5e-4, ExponentialLR 0.95, batch 256; reported 91.75 % (paper Table 2).

    python scripts/train.py --config configs/faer_rafdb.py --workdir runs/faer_rafdb \
        --config.data.root=datasets/raf-basic

Variants: `cpu` (synthetic RAF-DB at data/rafdb: `scripts/make_synthetic.py --layout rafdb --out
data/rafdb`), `smoke` (CI).
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "faer_expression").expression("faer", "rafdb", "datasets/raf-basic", 120, arg)
