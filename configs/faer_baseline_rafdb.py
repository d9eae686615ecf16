"""The paper's ConvNeXt baseline on RAF-DB (Table 2: 90.74 %): ConvNeXt-base, CE only, the paper's recipe
(faer_expression.py), 120 epochs. AffectNet-7: faer_baseline_affectnet.py.

Variants: `cpu`, `smoke`.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "faer_expression").expression("baseline", "rafdb", "datasets/raf-basic",
                                                                       120, arg)
