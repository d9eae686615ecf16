"""FAER on AffectNet-7, the paper's recipe (faer_expression.py): MS-Celeb ConvNeXt, AdamW 2.5e-4,
ExponentialLR 0.95, 60 epochs, batch 256, CE + 0.01 * center loss; reported 66.66 % (paper Table 2).

    python scripts/train.py --config configs/faer_affectnet.py --workdir runs/faer_affectnet \
        --config.data.root=datasets/AffectNet

Data: AffectNet in the folder layout <root>/{train,val}/<code>/*.jpg (7 classes, Contempt dropped).
Variants: `cpu` (synthetic AffectNet at data/affectnet), `smoke` (CI).
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "faer_expression").expression("faer", "affectnet", "datasets/AffectNet",
                                                                       60, arg)
