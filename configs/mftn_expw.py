"""MFTN-FER on ExpW (7 expressions): main.py --data_type ExpW: lr 2.5e-4, ExponentialLR 0.95, 100 epochs,
batch 128, RandomErasing(p 1, scale (0.05, 0.07)), class-balanced sampling; README: 74.29 %. Upstream does
not say how it cropped ExpW's faces or split it (mftn_fer.md section 5): the `expw` reader's crops and splits
are used.

    python scripts/train.py --config configs/mftn_expw.py --workdir runs/mftn_expw \
        --config.data.root=datasets/expw

Variants: `cpu` (synthetic ExpW at data/expw), `smoke` (CI). Shared values: mftn_common.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "mftn_common").recipe(
        dataset="expw", root="datasets/expw", num_classes=7, lr=2.5e-4, gamma=0.95, epochs=100,
        erase_p=1.0, erase_scale=(0.05, 0.07), balanced=True, arg=arg)
