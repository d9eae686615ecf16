"""The frame-level ResNet18 baseline of Emotion-FAN on CK+ (Open-Debin/Emotion-FAN:baseline_ck_plus.py).

    python scripts/train.py --config configs/fan_ckplus_baseline.py --workdir runs/fan_ckplus_baseline \
        --config.data.root=<Emotion-FAN>/data --config.data.options.fold=10

torchvision resnet18(num_classes=7) on every frame, FER+ initialisation, video score = sum of the frames'
softmax probabilities. Upstream: lr 1e-1, 60 epochs, StepLR(30, 0.2), batch 48 / 64, `--fold 10`.

Variants: `cpu` (synthetic CK+ at data/ckplus, 72 px, Adam) and `smoke` (CI).
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    fan = base_config.sibling(__file__, "fan_common")
    c = fan.base("ckplus", "data/emotion_fan", network="baseline", lr=1e-1, epochs=60, step_epochs=30)
    c.data.options = {"fold": 10}
    return base_config.apply_variant(c, arg, {"cpu": lambda c: fan.cpu(c, "data/ckplus", epochs=3),
                                              "smoke": lambda c: fan.smoke(c, "data/smoke/ckplus")})
