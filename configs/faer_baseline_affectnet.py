"""The paper's ConvNeXt baseline on AffectNet-7 (Table 2: 64.77 %): ConvNeXt-base, CE only, the paper's
recipe (faer_expression.py), 60 epochs.

Variants: `cpu`, `smoke`.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "faer_expression").expression("baseline", "affectnet", "datasets/AffectNet",
                                                                       60, arg)
