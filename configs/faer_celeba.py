"""FAER on CelebA (40 attributes), as XUJ1Er/FAER:FaceAttribute/FAER/test_celeba.py trains it.

    python porting/convert.py convnext_base.pth --out models/convnext_base_flax   # the ConvNeXt backbone
    python scripts/train.py --config configs/faer_celeba.py --workdir runs/faer_celeba \
        --config.data.root=dataset/CelebA

Which upstream recipe, and why: FAER ships two CelebA training scripts. `main_celeba.py` trains with its
`FocalLoss`, which expects probabilities but is given the network's logits, so `F.binary_cross_entropy`
refuses the first batch: that script cannot train as written (shared/reference/faer.md section 3).
`test_celeba.py` trains with `Loss`, a BCE with logits on logits clamped to [-10, 10], and runs; its values
are these: AdamW lr 2.5e-4 (backbone group written as lr/10, but `adjust_learning_rate` sets every group to
the same cosine value before the first step, so both groups train at lr: `lr_factor` 1.0), 35 epochs,
batch 128, seed 102, Resize((224,224)) -> flip -> RandomRotation(15) -> Normalize(ImageNet).

The paper's loss (BCE-focal, gamma 2, summed over the attributes: its eq. 7 and Table 3's best, 91.87 %) is
the `paper` variant, with the paper's schedule (lr 1e-3, ExponentialLR 0.95, 60 epochs, batch 256); or set
`--config.task.loss_name=focal_paper` (or `focal`, `asymmetric`, `bce`) on any variant.

Data: CelebA in the official release layout (img_align_celeba/ + list_attr_celeba.txt +
list_eval_partition.txt: partitions 0 train, 2 test), FAER's pre-split layout (train/, test/,
train_label.txt, test_label.txt), or a TFDS-prepared celeb_a (`--config.data.options.layout=tfds`).
Evaluation: mean attribute accuracy (FAER's metric, 100 - its "error") and the per-attribute accuracy
chart (`per_attribute_accuracy.png` in the workdir's eval folder).

Variants: `paper`; `cpu` (synthetic CelebA at data/celeba from `scripts/make_synthetic.py --layout celeba
--out data/celeba`, ConvNeXt atto widths at 64 px, learns in a few minutes); `smoke` (CI).
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    faer = base_config.sibling(__file__, "faer_common")
    c = faer.base(network="faer", num_classes=40, dataset="celeba", root="dataset/CelebA", lr=2.5e-4, epochs=35,
                  batch=128, seed=102, rotate=15)
    c.task.name = "multilabel"
    c.task.loss_name = "bce_clamp"
    c.best_metric = "mean_attribute_accuracy"  # upstream keeps the lowest error = the highest mean accuracy

    def paper(c):
        faer.paper_schedule(c, lr=1e-3, epochs=60)
        c.task.loss_name = "focal_paper"

    def cpu(c):
        faer.cpu(c, "data/celeba", epochs=4)

    return base_config.apply_variant(c, arg, {"paper": paper, "cpu": cpu,
                                              "smoke": lambda c: faer.smoke(c, "data/smoke/celeba")})
