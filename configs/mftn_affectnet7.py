"""MFTN-FER on AffectNet-7: main.py --data_type AffectNet-7: lr 2.5e-4, ExponentialLR 0.95, 100 epochs,
batch 128, RandomErasing(p 1, scale (0.05, 0.07)), class-balanced sampling (ImbalancedDatasetSampler);
README: 66.57 %.

    python scripts/train.py --config configs/mftn_affectnet7.py --workdir runs/mftn_affectnet7 \
        --config.data.root=datasets/affectnet

Variants: `cpu` (synthetic AffectNet at data/affectnet), `smoke` (CI). Shared values: mftn_common.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    c = base_config.sibling(__file__, "mftn_common").recipe(
        dataset="affectnet", root="datasets/affectnet", num_classes=7, lr=2.5e-4, gamma=0.95, epochs=100,
        erase_p=1.0, erase_scale=(0.05, 0.07), balanced=True, arg=arg)
    c.data.options = {"num_class": 7, "layout": "folders"}
    c.data.train_split, c.data.eval_split = "train", "val"
    return c
