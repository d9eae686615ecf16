"""Shared recipe of MFTN-FER (XuJ1E/MFTN-FER main.py for RAF-DB / AffectNet-7 / ExpW, main8.py for
AffectNet-8; facts in shared/reference/mftn_fer.md sections 3-5). See mftn_rafdb.py, mftn_affectnet7.py,
mftn_affectnet8.py, mftn_expw.py.

Upstream's values:
- `Model(num_classes, pretrained=True, drop_path_rate=0.25)`: ConvNeXt-base from the authors' MS-Celeb
  ConvNeXt (`./pretrain/convnext_base.pth`, timm names under `net.`; not released) — `init_from` a
  converted ConvNeXt: the backbone without its classifier, `backbone.head` and the MsTN new;
- loss 0.45 * LSCE(out1) + 0.55 * LSCE(out2), label smoothing 0.1 (`--lam 0.45`); accuracy from
  argmax(out1 + out2);
- SAM(Adam, rho 0.05, adaptive False), Adam betas (0.9, 0.999), eps 1e-8, no weight decay (the parsed
  `--weight-decay` is never passed on); ExponentialLR stepped once per epoch;
- batch 128 with drop_last; Resize((224, 224)) -> RandomHorizontalFlip -> ToTensor -> Normalize(ImageNet)
  -> RandomErasing (per dataset); evaluation Resize -> ToTensor -> Normalize;
- torchvision ImageFolder on `train/` and `val/`: classes in the alphabetical order of their folder names
  (Anger, [Contempt,] Disgust, Fear, Happy, Neutral, Sad, Surprise), which the confusion matrices in the
  repository's `asset/` show; here each dataset's official files are read and relabelled in that order.

Differences from upstream (whose scripts do not run as written: `util` vs `utils.py`, `args.data`, ...):
none in the arithmetic. The evaluation loss logged here is the cross-entropy of out1 + out2 (upstream logs
0.45 / 0.55-weighted plain cross-entropies of the heads).
"""

from fer_jax.train import config as base_config

CONVNEXT_MSCELEB = "models/convnext_base_msceleb_flax"  # the authors' MS-Celeb ConvNeXt-base, converted


def pp_train(size: int, erase_p: float = 0.5, erase_scale: tuple[float, float] = (0.02, 0.1)) -> str:
    return (f"resize({size},{size})|hflip(0.5)|to_float|normalize('imagenet')"
            f"|erase({erase_p},({erase_scale[0]},{erase_scale[1]}))")


def pp_eval(size: int) -> str:
    return f"resize({size},{size})|to_float|normalize('imagenet')"


def recipe(*, dataset: str, root: str, num_classes: int, lr: float, gamma: float, epochs: int,
           erase_p: float, erase_scale: tuple[float, float], balanced: bool, arg=None):
    """One of upstream's recipes; variants `cpu` (synthetic data at data/<dataset>, learns on 2 CPU cores)
    and `smoke` (CI)."""
    c = base_config.base()
    c.model.name = "mftn"
    c.model.update(num_classes=num_classes, drop_path_rate=0.25, variant="base")
    c.task.update(name="two_heads", lam=0.45, label_smoothing=0.1)
    c.data.name = dataset
    c.data.root = root
    c.data.class_order = "mftn"
    c.data.image_size = 224
    c.data.train_pp, c.data.eval_pp = pp_train(224, erase_p, erase_scale), pp_eval(224)
    c.data.sampler = "balanced" if balanced else "shuffle"  # torchsampler.ImbalancedDatasetSampler
    c.optimizer.update(name="adam", lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, sam_rho=0.05,
                       sam_adaptive=False)
    c.schedule.update(name="exponential", gamma=gamma)
    c.num_epochs = epochs
    c.batch_size = 128
    c.seed = 0
    c.init_from = CONVNEXT_MSCELEB  # the classifier dropped, backbone.head and the MsTN new
    c.best_metric = "accuracy"

    def cpu(c):
        """The ConvNeXt atto widths at 64 px from scratch, no backbone drop-path (the MsTN's first blocks stay
        dropped: rate 1.0), Adam 1e-3 constant, SAM kept. Measured on 1,000 synthetic RAF-DB images (2 cores,
        7.5 min): test accuracy 0.17, 0.30, 0.35 at epochs 1, 3, 7 (chance 0.14): it learns, slowly."""
        c.data.root = f"data/{dataset}"
        c.data.image_size = 64
        c.data.train_pp, c.data.eval_pp = pp_train(64, erase_p, erase_scale), pp_eval(64)
        c.model.variant = "atto"
        c.model.drop_path_rate = 0.0
        c.batch_size, c.eval_batch_size = 32, 64
        c.num_epochs = 8
        c.optimizer.lr = 1e-3
        c.schedule.update(name="constant")
        c.init_from = ""
        c.log_every_steps = 10

    def smoke(c):
        base_config.smoke(c, f"data/smoke/{dataset}", lambda s: pp_train(s, erase_p, erase_scale), pp_eval)
        c.model.variant = "atto"

    return base_config.apply_variant(c, arg, {"cpu": cpu, "smoke": smoke})
