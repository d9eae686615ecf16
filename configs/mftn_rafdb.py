"""MFTN-FER on RAF-DB (7 expressions): main.py --data_type RAF-DB: lr 2.5e-4, ExponentialLR 0.95, 100 epochs,
batch 128, RandomErasing(p 0.5, scale (0.02, 0.1)), shuffled batches; README: 92.20 %.

    python scripts/train.py --config configs/mftn_rafdb.py --workdir runs/mftn_rafdb \
        --config.data.root=datasets/raf-basic

Variants: `cpu` (synthetic RAF-DB at data/rafdb), `smoke` (CI). Shared values: mftn_common.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "mftn_common").recipe(
        dataset="rafdb", root="datasets/raf-basic", num_classes=7, lr=2.5e-4, gamma=0.95, epochs=100,
        erase_p=0.5, erase_scale=(0.02, 0.1), balanced=False, arg=arg)
