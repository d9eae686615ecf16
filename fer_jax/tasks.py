"""What a network is trained for: its loss, its extra trainable parameters, and its evaluation.

A task sees the model's named outputs (`ModelSpec.outputs`), the declared prediction (`ModelSpec.predict`)
*and the whole batch* (a loss may need a clean target image, an evaluation the video of each frame). It
returns the objective to differentiate and the terms to log (they may differ), and owns its evaluation:

- `eval_batch(forward, batch)` runs inside the compiled evaluation step and returns `{"sums": ...}`,
  summed over the real examples of the batch (and over devices), and/or `{"examples": ...}`, per-example
  arrays gathered from every device (padding included, with the batch's `mask`);
- `metrics(sums, examples, context)` turns the totals of a whole pass into metrics on the host.

The training step and the evaluation driver (`fer_jax.evaluate.driver`) stay network- and task-agnostic.
This module does not import the training code, so evaluation does not either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from fer_jax import losses
from fer_jax.errors import ConfigError, DatasetError
from fer_jax.evaluate import metrics as metrics_lib
from fer_jax.models.contract import ModelSpec
from fer_jax.models.layers import at_least_float32  # losses run in at least float32 under bfloat16

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Forward:
    """The model in eval mode as a task's `eval_batch` sees it (inside the compiled step)."""

    module: nn.Module
    spec: ModelSpec
    variables: Any
    compute_dtype: Any = None

    def __call__(self, batch: Mapping[str, Array]) -> tuple[dict[str, Array], Array]:
        """(named outputs, prediction in at least float32) of `__call__` on the batch's inputs."""
        raw = self.module.apply(self.variables, *self.spec.batch_inputs(batch, self.compute_dtype), train=False)
        outputs = self.spec.named(raw)
        return outputs, at_least_float32(self.spec.predict(outputs))

    def method(self, name: str, *args: Any) -> Any:
        """Another declared method of the network in eval mode (e.g. Emotion-FAN's frame_features)."""
        if self.compute_dtype is not None:
            args = tuple(a.astype(self.compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in args)
        return self.module.apply(self.variables, *args, train=False, method=name)


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What a task's `metrics` may need besides the totals.

    Attributes:
      class_names: names of the classes (or attributes), in label order.
      num_videos: videos in the split (video datasets).
      aggregate: per-frame values, video ids, number of videos -> per-video logits (the network's declared
        video method, compiled; video datasets with a video network).
    """

    class_names: Sequence[str]
    num_videos: int | None = None
    aggregate: Callable[..., np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class Classification:
    """Single-label classification with cross-entropy on the declared prediction."""

    kind = "multiclass"

    def init_aux(self, rng: Array) -> dict:
        """The task's own trainable parameters (none here)."""
        return {}

    def loss(self, outputs: Mapping[str, Array], logits: Array, batch: Mapping[str, Array], aux: dict,
             axis_name: str | None = None, rng: Array | None = None) -> tuple[Array, dict[str, Array]]:
        """(objective to differentiate, terms to log; "loss" is the logged total).

        `rng` is the step's key for the task's own random draws, the same on every device (the training
        step derives it from the state's key and the step; the network's streams get other keys).
        """
        ce = losses.cross_entropy(at_least_float32(logits), batch["label"])
        return ce, {"loss": ce, "ce": ce}

    def train_counts(self, logits: Array, batch: Mapping[str, Array]) -> tuple[Array, Array]:
        """(right decisions, decisions) in a training batch: one decision per example."""
        labels = batch["label"]
        return jnp.sum(jnp.argmax(logits, -1) == labels), jnp.asarray(labels.shape[0])

    def eval_batch(self, forward: Forward, batch: Mapping[str, Array]) -> dict:
        """Sums over the real examples: confusion matrix [true, predicted], CE sum, count."""
        _, logits = forward(batch)
        labels, mask = batch["label"], batch["mask"]
        m = mask.astype(jnp.int32)
        k = logits.shape[-1]
        confusion = jnp.zeros((k, k), jnp.int32).at[labels, jnp.argmax(logits, -1)].add(m)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {"sums": {"confusion": confusion, "loss_sum": jnp.sum(jnp.where(mask, ce, 0.0)),
                         "count": jnp.sum(m)}}

    def metrics(self, sums: dict, examples: dict, context: EvalContext) -> dict[str, Any]:
        """Accuracy, balanced accuracy, per-class recall, confusion matrix and mean loss."""
        return metrics_lib.from_sums(sums, context.class_names)


MULTILABEL_LOSSES = ("bce", "bce_clamp", "focal", "focal_paper", "asymmetric")


@dataclasses.dataclass(frozen=True)
class MultiLabel(Classification):
    """Independent binary attributes (CelebA's 40); an attribute is predicted present when its logit is > 0.

    `loss` (shared/reference/faer.md section 3):

    | loss        | definition                                                                 | upstream             |
    |-------------|----------------------------------------------------------------------------|----------------------|
    | bce         | BCE with logits, mean over batch x attributes (torch.nn.BCEWithLogitsLoss) | -                    |
    | bce_clamp   | the same on logits clamped to [-clamp, clamp] (10)                         | FAER `Loss`          |
    | focal       | BCE-focal, gamma 2, mean over batch x attributes                           | Baseline BCEFocalLoss|
    | focal_paper | BCE-focal, gamma 2, summed over attributes, mean over the batch            | FAER paper, eq. 7    |
    | asymmetric  | ASL (gamma- 4, gamma+ 1, clip 0.05), negated sum over every element       | FAER AsymmetricLoss  |

    Evaluation logs the mean BCE with logits whatever the training loss (a comparable number across losses).
    """

    kind = "multilabel"
    loss_name: str = "bce"
    gamma: float = 2.0
    clamp: float = 10.0

    def __post_init__(self):
        if self.loss_name not in MULTILABEL_LOSSES:
            raise ConfigError(f"task.loss_name {self.loss_name!r}: use one of {', '.join(MULTILABEL_LOSSES)}")

    def loss(self, outputs, logits, batch, aux, axis_name=None, rng=None):
        logits = at_least_float32(logits)
        y = batch["label"]
        value = {"bce": lambda: losses.bce_with_logits(logits, y),
                 "bce_clamp": lambda: losses.bce_with_logits(logits, y, self.clamp),
                 "focal": lambda: losses.bce_focal(logits, y, self.gamma),
                 "focal_paper": lambda: losses.bce_focal(logits, y, self.gamma, sum_attributes=True),
                 "asymmetric": lambda: losses.asymmetric(logits, y)}[self.loss_name]()
        return value, {"loss": value, self.loss_name: value}

    def train_counts(self, logits, batch):
        """(right attribute decisions, decisions) in a batch."""
        labels = batch["label"]
        return jnp.sum((logits > 0) == (labels > 0)), jnp.asarray(labels.size)

    def eval_batch(self, forward, batch):
        """Sums over the real examples: per-attribute right decisions, BCE sum, count."""
        _, logits = forward(batch)
        labels, mask = batch["label"], batch["mask"]
        hits = jnp.sum(((logits > 0) == (labels > 0)) & mask[:, None], axis=0).astype(jnp.int32)
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)), axis=-1)
        return {"sums": {"hits": hits, "loss_sum": jnp.sum(jnp.where(mask, bce, 0.0)),
                         "count": jnp.sum(mask.astype(jnp.int32))}}


@dataclasses.dataclass(frozen=True)
class Dan(Classification):
    """DAN: CE + affinity loss (trainable centers [num_centers, feat_dim]) + partition loss, weights 1.

    `num_centers` is 8 in yaoing/DAN:rafdb.py for the 7 RAF-DB classes (the constructor default; the 8th
    center is never matched but enters the variance), and `--num_class` in affectnet.py.
    """

    num_centers: int = 8
    feat_dim: int = 512

    def init_aux(self, rng):
        return {"centers": jax.random.normal(rng, (self.num_centers, self.feat_dim), jnp.float32)}

    def loss(self, outputs, logits, batch, aux, axis_name=None, rng=None):
        out, feat, heads = (at_least_float32(outputs[k]) for k in ("out", "feat", "heads"))
        total, terms = losses.dan_loss((out, feat, heads), batch["label"], aux["centers"], axis_name)
        return total, {"loss": total, **terms}


@dataclasses.dataclass(frozen=True)
class CenterLoss(Classification):
    """FAER's expression loss (paper eqs. 8-10): CE(prediction) + weight * center loss on an output feature.

    The center loss has upstream's hand-written gradient (`fer_jax.losses.center_loss`: the centers' gradient
    is not scaled by `weight`). Centers [num_centers, feat_dim] start as upstream's CenterLoss draws them:
    Xavier-uniform with gain sqrt(2) (the normal draw before it is overwritten).

    Attributes:
      weight: lambda (1e-2 in the paper).
      num_centers: one center per class.
      feat_dim: the feature size (1024 for ConvNeXt-base; upstream's constructor default 512 would not fit).
      feature: the named model output the centers live on.
    """

    weight: float = 0.01
    num_centers: int = 7
    feat_dim: int = 1024
    feature: str = "feature"

    def init_aux(self, rng):
        fan_in, fan_out = self.feat_dim, self.num_centers  # torch: fan_in = size(1), fan_out = size(0)
        bound = np.sqrt(2.0) * np.sqrt(6.0 / (fan_in + fan_out))
        return {"centers": jax.random.uniform(rng, (self.num_centers, self.feat_dim), jnp.float32, -bound, bound)}

    def loss(self, outputs, logits, batch, aux, axis_name=None, rng=None):
        ce = losses.cross_entropy(at_least_float32(logits), batch["label"])
        feature = at_least_float32(outputs[self.feature])
        if feature.ndim != 2 or feature.shape[-1] != self.feat_dim:
            raise ConfigError(f"task.feat_dim={self.feat_dim} but the model's {self.feature!r} output has shape "
                              f"{list(feature.shape)}; set task.feat_dim to its last dimension")
        center = losses.center_loss(feature, batch["label"], aux["centers"].astype(feature.dtype), axis_name)
        total = ce + self.weight * center
        return total, {"loss": total, "ce": ce, "center": center}


@dataclasses.dataclass(frozen=True)
class VideoClassification(Classification):
    """Videos classified from their frames (Emotion-FAN and its baselines, shared/reference/emotion_fan.md).

    Training is cross-entropy on whatever the network predicts for a training example (a group of frames
    for Emotion-FAN, a single frame for the baselines). Evaluation runs over every frame of every video
    and decides per video:

    - a network that declares `ModelSpec.video` gives per-frame values (Emotion-FAN: features and
      self-attention weights) and aggregates them per video with its own method;
    - any other network classifies each frame, and a video's score is the **sum** of its frames' softmax
      probabilities (upstream's baseline scripts).

    A video's label is the mean of its frames' labels cast to an integer, as upstream computes it.
    """

    def eval_batch(self, forward, batch):
        """Per-frame values with the frame's video, label and mask (gathered, aggregated in `metrics`)."""
        common = {"video": batch["video"], "label": batch["label"], "mask": batch["mask"]}
        if forward.spec.video is not None:
            values = forward.method(forward.spec.video.frame, batch["image"])
            values = values if isinstance(values, tuple) else (values,)
            return {"examples": {**common, "values": tuple(at_least_float32(v) for v in values)}}
        _, logits = forward(batch)
        return {"examples": {**common, "values": (jax.nn.softmax(logits, axis=-1),)}}

    def metrics(self, sums, examples, context):
        keep = np.asarray(examples["mask"], bool)
        video = np.asarray(examples["video"])[keep]
        labels = np.asarray(examples["label"])[keep]
        values = tuple(np.asarray(v)[keep] for v in examples["values"])
        num_videos = context.num_videos
        frames = np.bincount(video, minlength=num_videos)
        if (frames == 0).any():
            empty = np.flatnonzero(frames == 0)
            raise DatasetError(f"{len(empty)} of {num_videos} videos have no readable frame (first: video index "
                               f"{empty[0]}); a video-level score needs at least one frame per video")
        video_labels = (np.bincount(video, weights=labels, minlength=num_videos) / frames).astype(np.int64)
        if context.aggregate is not None:
            logits = np.asarray(context.aggregate(*values, video, num_videos), np.float64)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, video_labels)
        else:  # baseline: sum of per-frame probabilities; the loss is the NLL of their per-video mean
            logits = np.stack([np.bincount(video, weights=values[0][:, c], minlength=num_videos)
                               for c in range(values[0].shape[-1])], axis=-1)
            loss = -np.log(np.maximum(logits[np.arange(num_videos), video_labels] / frames, 1e-300))
        k = len(context.class_names)
        confusion = np.zeros((k, k), np.int64)
        np.add.at(confusion, (video_labels, np.argmax(logits, -1)), 1)
        result = metrics_lib.from_sums({"confusion": confusion, "loss_sum": float(np.sum(loss)),
                                        "count": num_videos}, context.class_names)
        result["frames"] = int(keep.sum())
        return result


# --- FERAtt (pedrodiamel/ferattention; shared/reference/feratt.md sections 3 and 7) ----------------------


def paper_scores(confusion: np.ndarray) -> dict[str, Any]:
    """The columns of FERAtt's tables, as its eval.py computes them with scikit-learn: macro precision and
    macro recall over the labels that occur in the truth *or* the predictions (a class never predicted has
    precision 0, a predicted class with no example recall 0), and F1 = 2 P R / (P + R) of those two macro
    averages (not the mean of per-class F1 scores); 0 where a denominator is 0.

    Args:
      confusion: [K, K] counts, rows true class, columns predicted class.
    """
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    labels = (support > 0) | (predicted > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    p = float(precision[labels].mean()) if labels.any() else 0.0
    r = float(recall[labels].mean()) if labels.any() else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
            "per_class_precision": precision.tolist()}


@dataclasses.dataclass(frozen=True)
class FERAtt(Classification):
    """FERAtt+Cls and FERAtt+Rep+Cls (`torchlib/attentionnet.py`: AttentionNeuralNet, AttentionGMMNeuralNet).

    Loss: CE(y, label) + 5 * clamp(mean tanh(3 |x_org - att|), 30) (`fer_jax.losses.feratt_loss`), against
    the clean face the batch carries as "x_org"; with `dgmm`, + the DGMM loss on the embedding "z"
    (`fer_jax.losses.dgmm_loss`, mixup on). The logged "loss" is that sum; the objective differentiated is
    the sum x the *global* batch size when `scale_by_batch` (attnet's `(loss * batch_size).backward()`;
    attgmmnet calls `loss.backward()`). Under pmap (`axis_name`) each device holds B / D examples and the
    training step averages the devices' gradients, so each device multiplies its loss by the global B:
    the mean of the devices' gradients is then the gradient of upstream's (CE + Latt) * B on the whole
    batch. The DGMM term needs the class means of the whole (mixed) batch: under pmap the embeddings and
    labels of every device are gathered, each device computes the global term, and the gradients that flow
    back through the gather sum to D times each device's share, which the step's average brings back to the
    global gradient. The mixup draws come from the step's task key `rng`, equal on every device.

    Evaluation: accuracy, balanced accuracy, the paper's precision, recall and F1 (`paper_scores`), the
    confusion matrix, and the mean CE; with "x_org" in the batch (synthetic composites) also the mean
    attention loss, and "loss" is CE + attention loss as upstream's validation logs it (without the DGMM
    term, which depends on the batch and its random draws).

    Attributes:
      scale_by_batch: differentiate loss x global batch size (FERAtt+Cls) or the loss (FERAtt+Rep+Cls).
      dgmm: add the DGMM loss on the output "z" (FERAtt+Rep+Cls).
      mixup: DGMMLoss's mixup (upstream's default, True).
    """

    kind = "feratt"  # multiclass metrics and the paper's precision, recall and F1 (a `best_metric` each)

    scale_by_batch: bool = True
    dgmm: bool = False
    mixup: bool = True

    def loss(self, outputs, logits, batch, aux, axis_name=None, rng=None):
        needed = ("att", "z") if self.dgmm else ("att",)
        missing = [k for k in needed if k not in outputs]
        if missing:
            raise ConfigError(f"task feratt{' with dgmm' if self.dgmm else ''} needs the model output "
                              f"{missing[0]!r}; the model gives {list(outputs)} (use model.name feratt"
                              f"{'_rep' if self.dgmm else ' or feratt_rep'})")
        if "x_org" not in batch:
            raise ConfigError("task feratt needs the clean face 'x_org' in each example: train on a FERAtt "
                              "synthetic dataset (ck_synthetic, bu3dfe_synthetic, ckplus_release_synthetic)")
        logits, att = at_least_float32(logits), at_least_float32(outputs["att"])
        total, terms = losses.feratt_loss(logits, batch["label"], att, batch["x_org"].astype(att.dtype))
        if self.dgmm:
            terms["dgmm"] = self._dgmm(at_least_float32(outputs["z"]), batch, logits.shape[-1], axis_name, rng)
            total = total + terms["dgmm"]
        terms["loss"] = total
        if not self.scale_by_batch:
            return total, terms
        size = batch["label"].shape[0] * (jax.lax.psum(1, axis_name) if axis_name else 1)
        return total * size, terms

    def _dgmm(self, z: Array, batch: Mapping[str, Array], num_classes: int, axis_name: str | None,
              rng: Array | None) -> Array:
        labels = batch["label"]
        if axis_name:
            z = jax.lax.all_gather(z, axis_name, tiled=True)
            labels = jax.lax.all_gather(labels, axis_name, tiled=True)
        lam = perm = None
        if self.mixup:
            if rng is None:
                raise ValueError("task feratt with dgmm and mixup draws at random: pass the step's `rng`")
            lam, perm = losses.dgmm_draws(rng, z.shape[0], z.dtype)
        return losses.dgmm_loss(z, labels, num_classes, lam, perm)

    def eval_batch(self, forward, batch):
        outputs, logits = forward(batch)
        labels, mask = batch["label"], batch["mask"]
        k = logits.shape[-1]
        confusion = jnp.zeros((k, k), jnp.int32).at[labels, jnp.argmax(logits, -1)].add(mask.astype(jnp.int32))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        sums = {"confusion": confusion, "count": jnp.sum(mask.astype(jnp.int32)),
                "ce_sum": jnp.sum(jnp.where(mask, ce, 0.0))}
        loss = ce
        if "x_org" in batch:
            att = at_least_float32(outputs["att"])
            att_loss = losses.attention_loss_per_example(batch["x_org"].astype(att.dtype), att)
            sums["att_sum"] = jnp.sum(jnp.where(mask, att_loss, 0.0))
            loss = ce + att_loss
        sums["loss_sum"] = jnp.sum(jnp.where(mask, loss, 0.0))
        return {"sums": sums}

    def metrics(self, sums, examples, context):
        result = metrics_lib.from_sums(sums, context.class_names)
        scores = paper_scores(sums["confusion"])
        names = list(context.class_names)
        result.update({k: v for k, v in scores.items() if k != "per_class_precision"},
                      per_class_precision=dict(zip(names, scores["per_class_precision"])))
        count = max(int(sums["count"]), 1)
        if "ce_sum" in sums:
            result["ce"] = float(sums["ce_sum"]) / count
        if "att_sum" in sums:
            result["att"] = float(sums["att_sum"]) / count
        return result


@dataclasses.dataclass(frozen=True)
class TwoHeads(Classification):
    """Two classifier heads trained together (MFTN-FER: `loss = lam * LSCE(out1) + (1 - lam) * LSCE(out2)`,
    label-smoothing cross-entropy with epsilon `label_smoothing`, utils.py with `--lam 0.45`); predictions and
    evaluation use the network's declared prediction (MFTN-FER: out1 + out2). The logged evaluation loss is
    the cross-entropy of that prediction (upstream logs lam-weighted plain cross-entropies of each head)."""

    heads: tuple[str, ...] = ("out1", "out2")
    lam: float = 0.45
    label_smoothing: float = 0.1

    def __post_init__(self):
        if len(self.heads) != 2 or not 0 <= self.lam <= 1 or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"task two_heads: heads {self.heads!r} (two output names), lam {self.lam} in [0, 1] "
                              f"and label_smoothing {self.label_smoothing} in [0, 1) expected")

    def loss(self, outputs, logits, batch, aux, axis_name=None, rng=None):
        first, second = (losses.label_smoothing_cross_entropy(at_least_float32(outputs[k]), batch["label"],
                                                              self.label_smoothing) for k in self.heads)
        total = self.lam * first + (1 - self.lam) * second
        return total, {"loss": total, f"lsce_{self.heads[0]}": first, f"lsce_{self.heads[1]}": second}


TASKS = {"classification": Classification, "multilabel": MultiLabel, "dan": Dan, "center": CenterLoss,
         "video": VideoClassification, "feratt": FERAtt, "two_heads": TwoHeads}


def create(cfg: ml_collections.ConfigDict) -> Classification:
    """The task named by `config.task.name` with its options.

    Raises:
      ConfigError: unknown task or option.
    """
    options = {k: v for k, v in cfg.items() if k != "name"}
    if cfg.name not in TASKS:
        raise ConfigError(f"unknown task.name {cfg.name!r}; use one of {', '.join(TASKS)}")
    fields = {f.name for f in dataclasses.fields(TASKS[cfg.name])}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"task.{unknown[0]} is not an option of task {cfg.name!r} (it has: "
                          f"{', '.join(sorted(fields)) or 'none'})")
    return TASKS[cfg.name](**options)
