"""FERAtt's PreActResNet18 baseline on synthetic CK+ (fold 0), as the authors trained it with
pedrodiamel/pytorch-classification (train_fersynthetic.py, runs/train-fer-synthetic.sh of Dec 2018 - Jan 2019,
the scripts current when the paper was written).

    python scripts/train.py --config configs/feratt_baseline_ck.py --workdir runs/feratt_baseline_ck \
        --config.data.root=~/.datasets

Upstream: `NeuralNetClassifier` with `preactresnet18` (the same PreActResNet18 as FERAtt's classifier) on the
composites x_img alone (`SyntheticFaceDataset(generate='image_and_label')`: no x_org, no attention), at
**32 px**, **cross-entropy** (`--loss cross`, the plain mean: no x batch size), Adam-AMSGrad lr 1e-4 (pytvision's
Adam branch; the classifier's weight_decay 5e-4 never reaches it), `--scheduler step`: StepLR(step_size=100,
gamma=0.1) per epoch, batch 128, 500 epochs of `count=100000` composites (781 steps), validation on 10,000,
kfold 0 / nactor 10, seed 1. Its generator is stronger than FERAtt's (angle 45, translation 0.3, warp 0.2,
factor 0.2) and takes face i mod N in order ("sequential"). Inputs: CIFAR-10 mean/std normalisation
(misc.py), gray as RGB. CK+ has 8 classes in FER+ order (the Jan 2019 script ran BU-3DFE, 7; set
`--config.data.name=bu3dfe_synthetic --config.model.num_classes=7` for it).

Not reproduced: the baseline's own augmentation chain (misc.get_transforms_aug: square resize to 37 and a
random 32 crop, random scale 0.2, a random affine (angle 30, translation 0.2, warp 0.02) with p 0.5, VFlip
p 0.5, brightness / contrast / gamma / RGB permutation with p 0.5 each) has no counterpart among the
preprocessing ops; of it, this recipe keeps the composite, CLAHE (p 0.25) and noise + blur (sigma 0.05,
p 0.25) at 32 px (`feratt_compose(32, low=32, ...)`). Validation uses get_transforms_det: squash to 32 px.

Variants: `eval_real` (real CK+ faces at 32 px, pytorch-classification eval_fer.py: squash, normalise),
`cpu` (synthetic CK+ at data/feratt_ck, see feratt_ck.py: 32 px, batch 32, 10 epochs of 2,048 composites,
Adam-AMSGrad 1e-3; ~30 s per 1,024 composites here; measured: 8 epochs of 1,024 stayed at chance, so expect
learning only late in the run, if at all), `smoke` (CI).
"""

from fer_jax.train import config as base_config


def pp_train(size: int, normalize: str) -> str:
    return f"feratt_compose({size},low={size},sigma=0.05)|to_float|{normalize}"


def pp_eval(size: int, normalize: str) -> str:
    return f"feratt_compose({size},low={size},clahe=0.0,noise_blur=0.0)|to_float|{normalize}"


def get_config(arg=None):
    feratt = base_config.sibling(__file__, "feratt_common")
    c = base_config.base()
    c.model.name = "preactresnet18"
    c.model.num_classes = feratt.CLASSES["ck"]
    c.task.name = "classification"
    c.data.name = "ck_synthetic"
    c.data.root = feratt.ROOT
    c.data.options = {"backgrounds": feratt.BACKGROUNDS, **feratt.FOLD, "sampling": "sequential", "angle": 45.0,
                      "translation": 0.3, "warp": 0.2, "factor": 0.2}
    c.data.train_options = {"count": 100_000}
    c.data.eval_options = {"count": 10_000}
    c.data.image_size = 32
    c.data.train_pp, c.data.eval_pp = pp_train(32, feratt.CIFAR10), pp_eval(32, feratt.CIFAR10)
    c.optimizer.update(name="adam", lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    c.optimizer.amsgrad = True
    c.schedule.update(name="step", step_epochs=100, gamma=0.1)
    c.num_epochs = 500
    c.batch_size = c.eval_batch_size = 128
    c.seed = 1
    c.log_every_steps = 100
    c.best_metric = "accuracy"

    def cpu(c):
        c.data.root = "data/feratt_ck"
        c.data.train_options = {"count": 2_048}
        c.data.eval_options = {"count": 128}
        c.batch_size, c.eval_batch_size = 32, 64
        c.num_epochs = 10
        c.optimizer.lr = 1e-3
        c.schedule.name = "constant"
        c.log_every_steps = 8

    def smoke(c):
        feratt.smoke(c, "data/smoke/feratt_ck")
        c.batch_size, c.eval_batch_size = 8, 8
        c.data.train_options = {"count": 16}

    return base_config.apply_variant(c, arg, {
        "eval_real": lambda c: feratt.eval_real(c, "ck", feratt.CIFAR10),
        "cpu": cpu, "smoke": smoke})
