"""Shared recipe of FAER and its baseline on facial expressions (RAF-DB, AffectNet-7): the paper's recipe.

Upstream released no expression code ("same code as FaceAttribute, different classification head", its
readmes), so the values come from the paper (section 3.2, eqs. 8-10; shared/reference/faer.md section 4):
backbone pre-trained on MS-Celeb-1M, whole network fine-tuned with AdamW, batch 256, ExponentialLR(0.95)
per epoch, random horizontal flip, lr 2.5e-4; FAER adds the center loss on its 1024-d feature with
lambda = 1e-2 (CE + 0.01 * center loss). The optimizer groups and the frozen final norm are FAER's CelebA
code's (the readme says the code is the same). Labels are in alphabetical order (Anger, Disgust, Fear,
Happy, Neutral, Sad, Surprise: what torchvision's ImageFolder gives for folders named by emotion, the
order of the paper's per-class table).
"""

from fer_jax.train import config as base_config

CONVNEXT_MSCELEB = "models/convnext_base_msceleb_flax"  # the authors' MS-Celeb ConvNeXt-base, converted


def expression(network: str, dataset: str, root: str, epochs: int, arg=None):
    """The recipe for `network` ("faer" or "baseline") on `dataset` ("rafdb" or "affectnet")."""
    faer = base_config.sibling(__file__, "faer_common")
    c = faer.base(network=network, num_classes=7, dataset=dataset, root=root, lr=2.5e-4, epochs=epochs,
                  batch=256, seed=0)
    faer.paper_schedule(c, lr=2.5e-4, epochs=epochs)
    c.init_from = CONVNEXT_MSCELEB
    c.data.class_order = "alphabetical"
    if dataset == "affectnet":
        c.data.options = {"num_class": 7, "layout": "folders"}
        c.data.train_split, c.data.eval_split = "train", "val"
    else:
        c.data.train_split, c.data.eval_split = "train", "test"
    if network == "faer":
        c.task.name = "center"
        c.task.update(weight=0.01, num_centers=7, feat_dim=1024, feature="feature")
    c.best_metric = "accuracy"

    def cpu(c):
        faer.cpu(c, f"data/{dataset}", epochs=6)
        if network == "faer":
            c.task.feat_dim = 320  # the atto widths' last stage

    def smoke(c):
        faer.smoke(c, f"data/smoke/{dataset}")
        if network == "faer":
            c.task.feat_dim = 320

    return base_config.apply_variant(c, arg, {"cpu": cpu, "smoke": smoke})
