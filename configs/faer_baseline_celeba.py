"""The paper's ConvNeXt baseline on CelebA (FAER without CC attention), as
XUJ1Er/FAER:FaceAttribute/Baseline/base_celeba.py trains it.

    python scripts/train.py --config configs/faer_baseline_celeba.py --workdir runs/faer_baseline_celeba \
        --config.data.root=dataset/CelebA

Upstream values: ConvNeXt-base (40 outputs; it returns (feature, logits) like FAER), BCEFocalLoss(gamma 2)
with its mean over batch x attributes, AdamW lr 1e-3 over every parameter (the final norm included), the
per-epoch cosine formula, 25 epochs, batch 256, seed 71, Resize -> flip -> Normalize(ImageNet).
(`base_celeba.py` imports a missing `lfwa_dataset` module; the values are those written in it.)

Variants: `paper` (ExponentialLR 0.95, 60 epochs, the paper's summed focal loss), `cpu`, `smoke`.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    faer = base_config.sibling(__file__, "faer_common")
    c = faer.base(network="baseline", num_classes=40, dataset="celeba", root="dataset/CelebA", lr=1e-3,
                  epochs=25, batch=256, seed=71)
    c.task.name = "multilabel"
    c.task.loss_name = "focal"
    c.best_metric = "mean_attribute_accuracy"

    def paper(c):
        faer.paper_schedule(c, lr=1e-3, epochs=60)
        c.task.loss_name = "focal_paper"

    return base_config.apply_variant(c, arg, {"paper": paper, "cpu": lambda c: faer.cpu(c, "data/celeba", epochs=4),
                                              "smoke": lambda c: faer.smoke(c, "data/smoke/celeba")})
