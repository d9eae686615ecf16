"""MFTN-FER on AffectNet-8: main8.py: Model(num_classes=8), lr 2.5e-5, ExponentialLR 0.98, 60 epochs, batch
128, RandomErasing(p 1, scale (0.05, 0.07)), class-balanced sampling; README: 63.48 %.

    python scripts/train.py --config configs/mftn_affectnet8.py --workdir runs/mftn_affectnet8 \
        --config.data.root=datasets/affectnet

Variants: `cpu` (synthetic AffectNet at data/affectnet), `smoke` (CI). Shared values: mftn_common.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    c = base_config.sibling(__file__, "mftn_common").recipe(
        dataset="affectnet", root="datasets/affectnet", num_classes=8, lr=2.5e-5, gamma=0.98, epochs=60,
        erase_p=1.0, erase_scale=(0.05, 0.07), balanced=True, arg=arg)
    c.data.options = {"num_class": 8, "layout": "folders"}
    c.data.train_split, c.data.eval_split = "train", "val"
    return c
