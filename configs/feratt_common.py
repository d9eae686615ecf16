"""Shared recipe of FERAtt (+Cls, +Rep+Cls) and its PreActResNet18 baseline (pedrodiamel/ferattention, the
baseline from pedrodiamel/pytorch-classification); see feratt_ck.py, feratt_bu3dfe.py, feratt_rep_ck.py,
feratt_baseline_ck.py. Facts: shared/reference/feratt.md sections 3-5.

FERAtt's scripts (runs/train_ck.sh, train_bu3dfe.sh, train.sh -> train.py, torchlib/attentionnet.py, the
optimizer from pytvision's NeuralNetAbstract):
- torch.optim.Adam(lr=1e-4, amsgrad=True), betas (0.9, 0.999), eps 1e-8, no weight decay (the scripts'
  momentum 0.5 and pytvision's default weight_decay 5e-4 never reach the Adam branch), `--scheduler fixed`;
- batch 32 (drop_last), 64 px, 500 epochs, an "epoch" being `--trainiteration 288000` synthetic composites
  (9,000 steps); validation on `--testiteration 2880` composites of the held-out subjects after every epoch;
- the dark faces of `ckdark` / `bu3dfedark` composited onto COCO pictures (`--databack ~/.datasets/coco`) by
  `SecuencialSyntheticFaceDataset` (class i mod C for example i: class-balanced batches), generator
  angle 30, translation 0.2, warp 0.1, factor 0.2, illumination on;
- `--kfold 0 --nactor 10`: the 10 subjects with the smallest ids are held out;
- `--seed 1`; the network takes x_img (gray as RGB, [0, 1]) and the loss compares `att` with the clean x_org.

Here the data root is upstream's data directory (`~/.datasets`: `ck/ck.mat`, `bu3dfe/bu3dfe.mat`, `coco/`).

Differences from upstream:
- the validation composites are a fixed set here (drawn from the evaluation seed), where upstream draws new
  ones (unseeded NumPy / random) at every evaluation, so its validation numbers are noisy;
- none in the start: upstream's `AttentionResNet` always builds its encoder from torchvision's ImageNet
  ResNet34, and so do these recipes (`init_from`, RESNET34): convert torchvision's `resnet34-b627a593.pth`
  once with `python porting/convert.py resnet34-b627a593.pth --out models/resnet34_imagenet_flax`; the file
  loads whole into `attention_map.encoder` (fc included), the rest starts from its initialisation. The
  `cpu` and `smoke` variants start from scratch.
"""

from fer_jax.models import feratt as feratt_model
from fer_jax.train import config as base_config

ROOT = "data/feratt"  # upstream's ~/.datasets: ck/ck.mat, bu3dfe/bu3dfe.mat and the coco/ pictures
BACKGROUNDS = "coco"  # --databack ~/.datasets/coco, relative to the root (or an absolute path)
CLASSES = {"ck": 8, "bu3dfe": 7}  # NUMCLASS in runs/train_ck.sh, runs/train_bu3dfe.sh
FOLD = {"kfold": 0, "nactor": 10}
RESNET34 = "models/resnet34_imagenet_flax"  # torchvision's ImageNet ResNet34, converted by porting/convert.py
CIFAR10 = feratt_model.CIFAR10_NORMALIZE  # pytorch-classification misc.py


def pp_feratt(size: int = 64) -> str:
    # aug.py get_transforms_aug (x_img: 48 px, CLAHE p 0.25, noise + blur p 0.25, back to 64) and
    # get_transforms_det (x_org: resize to 64); gray as RGB, ToTensor: [0, 1], no normalisation
    return f"feratt_compose({size})|to_float"


def pp_real(size: int = 64, normalize: str = "") -> str:
    # eval.py on real faces: get_transforms_det = ToResize((64, 64), 'squash') -> ToGrayscale -> ToTensor
    return f"cv_resize({size})|gray|to_float" + (f"|{normalize}" if normalize else "")


def base(dataset: str, network: str):
    """FERAtt's recipe on `dataset` ("ck" or "bu3dfe") for `network` ("feratt": FERAtt+Cls, `attnet`;
    "feratt_rep": FERAtt+Rep+Cls, `attgmmnet` with `ferattentiongmm`)."""
    c = base_config.base()
    c.model.name = network
    c.model.num_classes = CLASSES[dataset]
    c.model.num_filters = 32
    if network == "feratt_rep":
        c.model.dim = 32  # --dim 32: the embedding z
    c.task.name = "feratt"
    # attnet differentiates (loss * batch_size); attgmmnet the loss, with the DGMM term on z
    c.task.scale_by_batch = network == "feratt"
    c.task.dgmm = network == "feratt_rep"
    c.data.name = f"{dataset}_synthetic"
    c.data.root = ROOT
    c.data.options = {"backgrounds": BACKGROUNDS, **FOLD}
    c.data.train_options = {"count": 288_000}  # --trainiteration: one epoch = 9,000 steps of 32
    c.data.eval_options = {"count": 2_880}  # --testiteration
    c.data.image_size = 64
    c.data.train_pp = c.data.eval_pp = pp_feratt(64)  # upstream validates on augmented composites too
    c.optimizer.update(name="adam", lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    c.optimizer.amsgrad = True
    c.schedule.name = "constant"  # --scheduler fixed
    c.num_epochs = 500
    c.batch_size = 32
    c.eval_batch_size = 32  # the validation loader's batch (evaluation sums are exact whatever the batch)
    c.seed = 1
    c.checkpoint_every_steps = 9_000  # upstream saves every 10 epochs and on a new best; here every epoch too
    c.log_every_steps = 100  # --print-freq 100
    c.best_metric = "accuracy"  # upstream keeps model_best.pth.tar on the best validation top-1
    c.init_from = RESNET34  # AttentionResNet's encoder: resnet34(pretrained=True), always
    return c


def eval_real(c, dataset: str, normalize: str = "") -> None:
    """eval.py on real faces: the reader's stored images (crop "none", no composition), the held-out
    subjects of the same fold ("test"; `--split train` for the training subjects), OpenCV squash to the
    recipe's size, gray, [0, 1]. For scripts/evaluate.py; there is no x_org, so "loss" is the CE alone."""
    c.data.name = dataset
    c.data.options = {"crop": "none", **FOLD}
    c.data.train_options = {}
    c.data.eval_options = {}
    c.data.train_pp = c.data.eval_pp = pp_real(c.data.image_size, normalize)
    c.eval_batch_size = 100  # eval.py's loader


def eval_synthetic(c) -> None:
    """eval.py's synthetic evaluation (the paper's "synthetic" columns): `SyntheticFaceDataset` with
    count 2000, face i mod N in order ("sequential"), generator angle 45, translation 0.3, warp 0.2,
    factor 0.2, the augmenting transform on x_img; batch 100."""
    c.data.eval_options = {"count": 2_000, "sampling": "sequential", "angle": 45.0, "translation": 0.3,
                           "warp": 0.2, "factor": 0.2}
    c.eval_batch_size = 100


def smoke(c, root: str) -> None:
    """CI: 64 px (the smallest size FERAtt's U-Net takes: its centre max-pools the 2x2 layer4 map), batch
    4, 2 steps over 8 composites, 8 held-out composites, synthetic data at `root` (its backgrounds in
    `root`/coco)."""
    c.data.root = root
    c.data.train_options = {"count": 8}
    c.data.eval_options = {"count": 8}
    c.batch_size, c.eval_batch_size = 4, 8
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.init_from = ""


def cpu(c, root: str, epochs: int, count: int, lr: float) -> None:
    """Trains on synthetic data on a 2-core CPU: batch 8, `count` composites per epoch, 64 held out,
    Adam-AMSGrad at `lr` (constant). Measured here: ~4 s per step of 8 (46M parameters at 64 px), so 480
    composites take ~4 min an epoch; a check of the whole pipeline at upstream's settings, too short to
    expect learning (not measured)."""
    c.data.root = root
    c.data.train_options = {"count": count}
    c.data.eval_options = {"count": 64}
    c.batch_size, c.eval_batch_size = 8, 32
    c.num_epochs = epochs
    c.optimizer.lr = lr
    c.log_every_steps = 10
    c.checkpoint_every_steps = 500
    c.init_from = ""
