"""What a network is trained for: its loss, its extra trainable parameters, and its logits.

A task turns the model's outputs (whatever upstream's `forward` returns) into a loss, into the logits
that metrics use, and into per-batch evaluation sums; the training step stays network-agnostic.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fer_jax.errors import ConfigError
from fer_jax.train import losses


def at_least_float32(x: jax.Array) -> jax.Array:
    """Losses run in float32 when the model computes in bfloat16 (and stay float64 under x64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@dataclasses.dataclass(frozen=True)
class _Task:
    """No extra trainable parameters; the logits are the first (or only) output."""

    def init_aux(self, rng: jax.Array) -> dict:
        return {}

    def logits(self, outputs: Any) -> jax.Array:
        return outputs[0] if isinstance(outputs, tuple) else outputs


@dataclasses.dataclass(frozen=True)
class Classification(_Task):
    """Single-label classification with cross-entropy on the logits."""

    kind = "multiclass"

    def loss(self, outputs: Any, labels: jax.Array, aux: dict, axis_name: str | None = None
             ) -> tuple[jax.Array, dict]:
        ce = losses.cross_entropy(at_least_float32(self.logits(outputs)), labels)
        return ce, {"ce": ce}

    def correct(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(right decisions, decisions) in a batch: one decision per image."""
        return jnp.sum(jnp.argmax(logits, -1) == labels), jnp.asarray(labels.shape[0])

    def eval_sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int) -> dict:
        """Sums over the real examples: confusion matrix [true, predicted], CE sum, count."""
        m = mask.astype(jnp.int32)
        confusion = jnp.zeros((num_classes, num_classes), jnp.int32).at[labels, jnp.argmax(logits, -1)].add(m)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {"confusion": confusion, "loss_sum": jnp.sum(jnp.where(mask, ce, 0.0)), "count": jnp.sum(m)}


@dataclasses.dataclass(frozen=True)
class MultiLabel(_Task):
    """Independent binary attributes (CelebA's 40): BCE with logits, mean over batch and attributes
    (torch.nn.BCEWithLogitsLoss defaults); an attribute is predicted present when its logit is > 0."""

    kind = "multilabel"

    def loss(self, outputs: Any, labels: jax.Array, aux: dict, axis_name: str | None = None
             ) -> tuple[jax.Array, dict]:
        logits = at_least_float32(self.logits(outputs))
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))
        return bce, {"bce": bce}

    def correct(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(right attribute decisions, decisions) in a batch."""
        return jnp.sum((logits > 0) == (labels > 0)), jnp.asarray(labels.size)

    def eval_sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int) -> dict:
        """Sums over the real examples: per-attribute right decisions, BCE sum, count."""
        hits = jnp.sum(((logits > 0) == (labels > 0)) & mask[:, None], axis=0).astype(jnp.int32)
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)), axis=-1)
        return {"hits": hits, "loss_sum": jnp.sum(jnp.where(mask, bce, 0.0)),
                "count": jnp.sum(mask.astype(jnp.int32))}


@dataclasses.dataclass(frozen=True)
class Dan(Classification):
    """DAN: CE + affinity loss (trainable centers [num_centers, feat_dim]) + partition loss, weights 1.

    `num_centers` is 8 in yaoing/DAN:rafdb.py for the 7 RAF-DB classes (the constructor default; the 8th
    center is never matched but enters the variance), and `--num_class` in affectnet.py.
    """

    num_centers: int = 8
    feat_dim: int = 512

    def init_aux(self, rng: jax.Array) -> dict:
        return {"centers": jax.random.normal(rng, (self.num_centers, self.feat_dim), jnp.float32)}

    def loss(self, outputs: Any, labels: jax.Array, aux: dict, axis_name: str | None = None
             ) -> tuple[jax.Array, dict]:
        outputs = tuple(at_least_float32(o) for o in outputs)
        return losses.dan_loss(outputs, labels, aux["centers"], axis_name)


def create(cfg: ml_collections.ConfigDict) -> Classification:
    """The task named by `config.task.name` with its options.

    Raises:
      ConfigError: unknown task.
    """
    options = {k: v for k, v in cfg.items() if k != "name"}
    known = {"dan": Dan, "classification": Classification, "multilabel": MultiLabel}
    if cfg.name not in known:
        raise ConfigError(f"unknown task.name {cfg.name!r}; use {' or '.join(known)}")
    fields = {f.name for f in dataclasses.fields(known[cfg.name])}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"task.{unknown[0]} is not an option of task {cfg.name!r} (it has: "
                          f"{', '.join(sorted(fields)) or 'none'})")
    return known[cfg.name](**options)
