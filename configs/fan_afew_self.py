"""Emotion-FAN with self-attention only on AFEW 8.0: Open-Debin/Emotion-FAN:fan_afew_traintest.py
`--at_type 0`.

    python scripts/train.py --config configs/fan_afew_self.py --workdir runs/fan_afew_self \
        --config.data.root=<Emotion-FAN>/data

The same recipe as configs/fan_afew_relation.py (lr 4e-3, 180 epochs, StepLR(60, 0.2), batch 48 / 64,
FER+ ResNet18 initialisation); the relation head (`beta`, `pred_fc2`) exists but is never trained, as
upstream. The paper reports the self-attention number below the relation one (not verified here).

Variants: `cpu` (synthetic AFEW at data/afew, 72 px, Adam) and `smoke` (CI), as in fan_afew_relation.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    fan = base_config.sibling(__file__, "fan_common")
    c = fan.base("afew", "data/emotion_fan", network="fan_self", lr=4e-3, epochs=180, step_epochs=60)
    return base_config.apply_variant(c, arg, {"cpu": lambda c: fan.cpu(c, "data/afew", epochs=3),
                                              "smoke": lambda c: fan.smoke(c, "data/smoke/afew")})
