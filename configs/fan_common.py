"""Shared recipe of Emotion-FAN and its baselines (Open-Debin/Emotion-FAN); see fan_afew_*.py, fan_ckplus*.py.

Upstream facts (shared/reference/emotion_fan.md section 4): every script uses SGD over all parameters
(momentum 0.9, weight_decay 1e-4 coupled, BatchNorm and biases included), StepLR stepped once per epoch,
batch 48 for training and 64 for evaluation, inputs Resize(224) -> [RandomHorizontalFlip] -> ToTensor with
no normalisation, and initialises from the FER+ ResNet18 (`Resnet18_FER+_pytorch.pth.tar`, its `fc`
dropped, the attention layers at their random init). Evaluation is per video over every frame.
"""

from fer_jax.train import config as base_config

FERPLUS_RESNET18 = "models/resnet18_ferplus_flax"  # porting/convert.py Resnet18_FER+_pytorch.pth.tar --out ...


def pp_train(size: int) -> str:
    # upstream: Resize(224) (shorter side; a no-op on the 224x224 aligned faces) -> RandomHorizontalFlip ->
    # ToTensor; no Normalize. In frame groups the flip is drawn independently for each frame.
    return f"resize({size},{size})|hflip(0.5)|to_float"


def pp_eval(size: int) -> str:
    return f"resize({size},{size})|to_float"  # Resize(224) -> ToTensor


def base(dataset: str, root: str, *, network: str, lr: float, epochs: int, step_epochs: int):
    """The recipe of one upstream script.

    Args:
      dataset: "afew" or "ckplus" (fer_jax.data readers of Emotion-FAN's data/ folder).
      root: Emotion-FAN's data/ folder (face/ and txt/ inside).
      network: "fan_self", "fan_relation" or "baseline".
      lr, epochs, step_epochs: the script's values.
    """
    c = base_config.base()
    if network == "baseline":
        c.model.name = "resnet18"  # torchvision resnet18(num_classes=7), classifying single frames
        c.model.num_classes = 7
        c.data.train_options = {"unit": "frame"}  # trained on every frame of every video
    else:
        c.model.name = "emotion_fan"
        c.model.num_class = 7
        c.model.at_type = "self" if network == "fan_self" else "relation"
        # Triplets drawn once when the dataset is built (upstream: load_imgs_tsn*), reused every epoch.
        c.data.train_options = {"unit": "group", "group_size": 3, "group_seed": 0}
    c.data.eval_options = {"unit": "frame"}  # every frame of every video, aggregated per video
    c.task.name = "video"
    c.data.name = dataset
    c.data.root = root
    c.data.image_size = 224
    c.data.train_pp, c.data.eval_pp = pp_train(224), pp_eval(224)
    c.optimizer.update(name="sgd", lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=False)
    c.schedule.update(name="step", step_epochs=step_epochs, gamma=0.2)
    c.num_epochs = epochs
    c.batch_size = 48
    c.eval_batch_size = 64
    c.init_from = FERPLUS_RESNET18
    c.best_metric = "accuracy"  # video accuracy; upstream saves a checkpoint whenever it improves
    return c


def smoke(c, root: str) -> None:
    """CI: 32x32 frames, batch 8, 4 steps, synthetic videos at `root`."""
    base_config.smoke(c, root, pp_train, pp_eval)


def cpu(c, root: str, epochs: int) -> None:
    """Learns the synthetic videos on a 2-core CPU without the FER+ backbone: 72 px frames (a 3x3 layer4
    map), Adam 1e-3."""
    c.data.root = root
    c.data.image_size = 72
    c.data.train_pp, c.data.eval_pp = pp_train(72), pp_eval(72)
    c.batch_size, c.eval_batch_size = 16, 64
    c.num_epochs = epochs
    c.optimizer.update(name="adam", lr=1e-3, weight_decay=0.0)
    c.schedule.update(name="constant")
    c.init_from = ""
    c.log_every_steps = 10
