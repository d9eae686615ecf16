"""Emotion-FAN (self + relation attention) on CK+, one fold of the 10-fold protocol, as
Open-Debin/Emotion-FAN:fan_ckplus_traintest.py trains it.

    python scripts/train.py --config configs/fan_ckplus.py --workdir runs/fan_ckplus_fold10 \
        --config.data.root=<Emotion-FAN>/data --config.data.options.fold=10

Upstream: lr 1e-2, 60 epochs, StepLR(30, 0.2), batch 48 / 64, `--fold 10` by default (test on that fold of
CK+_10-fold_sample_IDascendorder_step10.txt, train on the other nine); triplets drawn from the first ~60 %
of each sequence only (the CK+ rule); label index 5 is Contempt. The paper protocol runs folds 1..10 and
averages: 99.69 % (paper, ICIP 2019).

upstream quirk: the CK+ training loader has no drop_last; here every epoch drops the last partial batch
(static batch shapes), i.e. at most 47 of the ~290 training sequences' triplets per epoch.

Variants: `cpu` (synthetic CK+ at data/ckplus, `make_synthetic.py --layout ckplus`, 72 px, Adam) and `smoke`.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    fan = base_config.sibling(__file__, "fan_common")
    c = fan.base("ckplus", "data/emotion_fan", network="fan_relation", lr=1e-2, epochs=60, step_epochs=30)
    c.data.options = {"fold": 10}
    return base_config.apply_variant(c, arg, {"cpu": lambda c: fan.cpu(c, "data/ckplus", epochs=3),
                                              "smoke": lambda c: fan.smoke(c, "data/smoke/ckplus")})
