"""FERAtt+Cls on synthetic CK+ (fold 0), as pedrodiamel/ferattention:runs/train_ck.sh trains it.

    python scripts/train.py --config configs/feratt_ck.py --workdir runs/feratt_ck \
        --config.data.root=~/.datasets          # ck/ck.mat (the authors' MATLAB file) and coco/ pictures

Upstream (train.py --name-method attnet --arch ferattention --loss attloss --name-dataset ckdark): 8 classes in
FER+ order, Adam-AMSGrad lr 1e-4 without weight decay at a constant rate, batch 32, 64 px, 500 epochs of
288,000 composites (9,000 steps), validation on 2,880 composites of the 10 held-out subjects (kfold 0,
nactor 10), seed 1, (CE + attention loss) x batch size differentiated; shared/reference/feratt.md section 4.
The paper (CVPRW 2019) reports accuracy, precision, recall and F1 on synthetic and real CK+; the repository
publishes no numbers, so none is expected here.

Evaluation reports those four columns (`precision`, `recall`, `f1` as eval.py computes them). Variants:
- `eval_real`: the real faces (ck with crop "none", `cv_resize(64)|gray|to_float`, eval.py), e.g.
  `python scripts/evaluate.py --model runs/feratt_ck/best --config configs/feratt_ck.py:eval_real
  --config.data.root=~/.datasets [--split train]`;
- `eval_synthetic`: eval.py's synthetic test set (2,000 composites, angle 45, translation 0.3, warp 0.2);
- `cpu`: synthetic CK+ written by `make_synthetic("ck", "data/feratt_ck")` and
  `make_synthetic("backgrounds", "data/feratt_ck/coco")` (fer_jax.data), batch 8, trains on 2 CPU cores;
- `smoke`: CI, 2 steps on the same layout at data/smoke/feratt_ck.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    feratt = base_config.sibling(__file__, "feratt_common")
    c = feratt.base("ck", "feratt")
    return base_config.apply_variant(c, arg, {
        "eval_real": lambda c: feratt.eval_real(c, "ck"),
        "eval_synthetic": feratt.eval_synthetic,
        "cpu": lambda c: feratt.cpu(c, "data/feratt_ck", epochs=3, count=480, lr=1e-4),
        "smoke": lambda c: feratt.smoke(c, "data/smoke/feratt_ck")})
