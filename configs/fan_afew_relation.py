"""Emotion-FAN with self + relation attention on AFEW 8.0, as Open-Debin/Emotion-FAN:fan_afew_traintest.py
trains it (`--at_type 1`, the script default).

    python porting/convert.py Resnet18_FER+_pytorch.pth.tar --out models/resnet18_ferplus_flax
    python scripts/train.py --config configs/fan_afew_relation.py --workdir runs/fan_afew_relation \
        --config.data.root=<Emotion-FAN>/data
    python scripts/evaluate.py --model runs/fan_afew_relation/best --config configs/fan_afew_relation.py

Upstream: lr 4e-3, 180 epochs, StepLR(60, 0.2), batch 48 (drop_last) / 64, triplets drawn once, SGD with
momentum 0.9 and weight decay 1e-4 (configs/fan_common.py). Expected (paper, ICIP 2019): 51.18 % video
accuracy on the AFEW 8.0 validation set.

Variants (`--config configs/fan_afew_relation.py:<variant>`):
  cpu    synthetic AFEW (`scripts/make_synthetic.py --layout afew --out data/afew`), 72 px frames, Adam
         1e-3 from scratch, 3 epochs: learns the synthetic expressions on a 2-core CPU.
  smoke  CI: 32x32 frames, batch 8, 4 steps on synthetic data under data/smoke/afew.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    fan = base_config.sibling(__file__, "fan_common")
    c = fan.base("afew", "data/emotion_fan", network="fan_relation", lr=4e-3, epochs=180, step_epochs=60)
    return base_config.apply_variant(c, arg, {"cpu": lambda c: fan.cpu(c, "data/afew", epochs=3),
                                              "smoke": lambda c: fan.smoke(c, "data/smoke/afew")})
