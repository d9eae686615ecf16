"""Shared recipe of FAER (contextual channel attention on ConvNeXt-base) and its ConvNeXt baseline
(XUJ1Er/FAER; facts in shared/reference/faer.md sections 3-5). See faer_celeba.py, faer_baseline_celeba.py,
faer_rafdb.py, faer_affectnet.py, faer_baseline_rafdb.py.

Every upstream script: AdamW (torch defaults: betas 0.9/0.999, eps 1e-8, weight_decay 0.01 — the scripts'
`--weight-decay 0.001` is never passed to the optimizer), inputs Resize((224, 224)) -> RandomHorizontalFlip
[-> RandomRotation(15)] -> ToTensor -> Normalize(ImageNet), drop-path 0.25 over the 36 blocks, training
batches with drop_last. FAER's optimizer has two parameter groups — backbone (`downsample_layers`,
`stages`) and new layers (`attention`, `head`) — and the final `norm` LayerNorm is in neither, so it
stays at its pretrained value; the Baseline optimises every parameter.
"""

from fer_jax.train import config as base_config

CONVNEXT_BASE = "models/convnext_base_flax"  # porting/convert.py <ConvNeXt-base .pth/.safetensors> --out ...


def pp_train(size: int, rotate: int = 0) -> str:
    rotation = f"|rotate({rotate})" if rotate else ""  # RandomRotation: nearest, fill 0
    return f"resize({size},{size})|hflip(0.5){rotation}|to_float|normalize('imagenet')"


def pp_eval(size: int) -> str:
    return f"resize({size},{size})|to_float|normalize('imagenet')"


def faer_groups(lr_factor_backbone: float = 1.0) -> dict:
    """FAER's AdamW parameter groups (model.base_parameters(), model.large_parameters()); the final `norm`
    is in neither. The center-loss centers (`aux`) join the new layers (the paper does not say)."""
    return {"backbone": {"params": ("downsample_layers", "stages"), "lr_factor": lr_factor_backbone},
            "new": {"params": ("attention", "head", "aux"), "lr_factor": 1.0}}


def base(*, network: str, num_classes: int, dataset: str, root: str, lr: float, epochs: int, batch: int,
         seed: int, rotate: int = 0):
    """One upstream recipe.

    Args:
      network: "faer" or "baseline" (ConvNeXt-base without CC attention: registry "convnext").
      num_classes: 40 CelebA attributes, or 7 expressions.
      dataset, root: fer_jax.data reader and its root.
      lr, epochs, batch, seed: the script's (or the paper's) values.
      rotate: RandomRotation degrees after the flip (test_celeba.py: 15), 0 for none.
    """
    c = base_config.base()
    c.model.name = "faer" if network == "faer" else "convnext"
    c.model.variant = "base"
    c.model.num_classes = num_classes
    c.model.drop_path_rate = 0.25  # --drop_path default
    c.data.name = dataset
    c.data.root = root
    c.data.image_size = 224
    c.data.train_pp, c.data.eval_pp = pp_train(224, rotate), pp_eval(224)
    c.optimizer.update(name="adamw", lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    if network == "faer":
        c.optimizer.groups = faer_groups()
    # utils adjust_learning_rate, at the start of every epoch e (0-based), for every group:
    # lr * [(1 - 1e-6) * (1 + cos(pi e / E)) / 2 + 1e-6]
    c.schedule.update(name="cosine", epochs=epochs)
    c.schedule.min_lr_ratio = 1e-6
    c.num_epochs = epochs
    c.batch_size = batch
    c.seed = seed
    c.init_from = CONVNEXT_BASE  # convnext_base(pretrained=True): the ConvNeXt classifier dropped
    return c


def paper_schedule(c, lr: float, epochs: int) -> None:
    """The paper's recipe (section 3.2): AdamW, batch 256, ExponentialLR(0.95) per epoch, random flip."""
    c.optimizer.lr = lr
    c.schedule.update(name="exponential", gamma=0.95)
    c.num_epochs = epochs
    c.batch_size = 256


def smoke(c, root: str) -> None:
    """CI: the smallest ConvNeXt widths (tiny's 96..768 at 32 px would still be the slowest smoke test),
    batch 8, 4 steps on synthetic data at `root`."""
    base_config.smoke(c, root, pp_train, pp_eval)
    c.model.variant = "atto"


def cpu(c, root: str, epochs: int) -> None:
    """Learns synthetic data on a 2-core CPU without a pretrained backbone: the `atto` widths at 64 px (a 2x2
    last stage, as 224 px gives 7x7), AdamW at 1e-3 with a constant rate, no drop-path."""
    c.data.root = root
    c.data.image_size = 64
    c.data.train_pp, c.data.eval_pp = pp_train(64), pp_eval(64)
    c.model.variant = "atto"
    c.model.drop_path_rate = 0.0
    c.batch_size, c.eval_batch_size = 32, 64
    c.num_epochs = epochs
    c.optimizer.lr = 1e-3
    c.schedule.update(name="constant")
    c.init_from = ""
    c.log_every_steps = 10
