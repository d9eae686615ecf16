"""The frame-level ResNet18 baseline of Emotion-FAN on AFEW 8.0 (Open-Debin/Emotion-FAN:baseline_afew.py).

    python scripts/train.py --config configs/fan_afew_baseline.py --workdir runs/fan_afew_baseline \
        --config.data.root=<Emotion-FAN>/data

torchvision resnet18(num_classes=7) trained on every frame, initialised from the FER+ ResNet18 (its `fc`
dropped); a video's score is the sum of its frames' softmax probabilities. Upstream: lr 4e-6, 180 epochs,
StepLR(60, 0.2), batch 48 / 64.

Variants: `cpu` (synthetic AFEW at data/afew, 72 px, Adam) and `smoke` (CI).
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    fan = base_config.sibling(__file__, "fan_common")
    c = fan.base("afew", "data/emotion_fan", network="baseline", lr=4e-6, epochs=180, step_epochs=60)
    return base_config.apply_variant(c, arg, {"cpu": lambda c: fan.cpu(c, "data/afew", epochs=3),
                                              "smoke": lambda c: fan.smoke(c, "data/smoke/afew")})
