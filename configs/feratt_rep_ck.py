"""FERAtt+Rep+Cls (`ferattentiongmm`: the embedding z and the DGMM loss) on synthetic CK+ (fold 0).

    python scripts/train.py --config configs/feratt_rep_ck.py --workdir runs/feratt_rep_ck \
        --config.data.root=~/.datasets

Upstream: runs/train.sh with NAMEMETHOD=attgmmnet, ARCH=ferattentiongmm (the options its comments list;
the committed scripts run attnet), DIM 32; torchlib/attentionnet.py `AttentionGMMNeuralNet`: loss CE + DGMM
(mixup with Beta(2, 2) on z and float labels, sigma 0.5) + attention loss, differentiated as is (no x batch
size); the rest as feratt_ck.py (Adam-AMSGrad 1e-4, batch 32, 64 px, 500 x 288,000 composites, kfold 0 /
nactor 10, seed 1). Predictions come from the classifier output y, as eval.py's tables use them.

upstream quirk: `+ 0.0 * z.norm(2)` in the loss adds nothing (its gradient is 0 unless z = 0) and is left out.

Variants: `eval_real`, `eval_synthetic`, `cpu`, `smoke` as in feratt_ck.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    feratt = base_config.sibling(__file__, "feratt_common")
    c = feratt.base("ck", "feratt_rep")
    return base_config.apply_variant(c, arg, {
        "eval_real": lambda c: feratt.eval_real(c, "ck"),
        "eval_synthetic": feratt.eval_synthetic,
        "cpu": lambda c: feratt.cpu(c, "data/feratt_ck", epochs=3, count=480, lr=1e-4),
        "smoke": lambda c: feratt.smoke(c, "data/smoke/feratt_ck")})
