"""FERAtt+Cls on synthetic BU-3DFE (fold 0), as pedrodiamel/ferattention:runs/train_bu3dfe.sh trains it.

    python scripts/train.py --config configs/feratt_bu3dfe.py --workdir runs/feratt_bu3dfe \
        --config.data.root=~/.datasets          # bu3dfe/bu3dfe.mat (the authors' MATLAB file) and coco/

Upstream: `--name-dataset bu3dfedark`, NUMCLASS 7 (FER+ order without Contempt); everything else as
feratt_ck.py (Adam-AMSGrad 1e-4, no weight decay, constant rate, batch 32, 64 px, 500 epochs of 288,000
composites, 2,880 validation composites, kfold 0 / nactor 10, seed 1, (CE + attention loss) x batch size).
No published numbers to expect (shared/reference/feratt.md section 7).

Variants: `eval_real` (real BU-3DFE faces, eval.py), `eval_synthetic` (eval.py's synthetic test set), `cpu`
(`make_synthetic("bu3dfe", "data/feratt_bu3dfe")` + `make_synthetic("backgrounds",
"data/feratt_bu3dfe/coco")`), `smoke` (CI, data/smoke/feratt_bu3dfe); see feratt_ck.py.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    feratt = base_config.sibling(__file__, "feratt_common")
    c = feratt.base("bu3dfe", "feratt")
    return base_config.apply_variant(c, arg, {
        "eval_real": lambda c: feratt.eval_real(c, "bu3dfe"),
        "eval_synthetic": feratt.eval_synthetic,
        "cpu": lambda c: feratt.cpu(c, "data/feratt_bu3dfe", epochs=3, count=480, lr=1e-4),
        "smoke": lambda c: feratt.smoke(c, "data/smoke/feratt_bu3dfe")})
