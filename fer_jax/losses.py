"""Training losses of the upstream recipes, with their exact semantics.

DAN (yaoing/DAN:rafdb.py, affectnet.py; facts in shared/reference/dan.md section 3):
total = CE(out, y) + 1 * affinity(feat, y; centers) + 1 * partition(heads).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import optax

PY_FLOAT_EPS = sys.float_info.epsilon  # upstream adds Python's float epsilon (2.2e-16), a no-op in fp32


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """torch.nn.CrossEntropyLoss() defaults: mean over the batch, no smoothing."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def affinity_loss(feat: jax.Array, labels: jax.Array, centers: jax.Array) -> jax.Array:
    """DAN's affinity loss: squared distance of each pooled feature to its class center, divided by the
    summed (unbiased) variance of the centers across classes.

    Every entry of the masked [B, K] distance matrix (the zeros too) is clamped to [1e-12, 1e12] before
    the sum, as upstream does; the sum is divided by the batch size.

    Args:
      feat: [B, H, W, C] feature map (pooled here).
      labels: [B] int class indices.
      centers: [K, C] trainable centers (K = 8 in DAN's RAF-DB script although RAF-DB has 7 classes).
    """
    f = jnp.mean(feat, axis=(1, 2))
    k = centers.shape[0]
    dist = (jnp.sum(f * f, axis=1, keepdims=True) + jnp.sum(centers * centers, axis=1)[None, :]
            - 2.0 * f @ centers.T)
    mask = (labels[:, None] == jnp.arange(k)[None, :]).astype(dist.dtype)
    dist = dist * mask / jnp.sum(jnp.var(centers, axis=0, ddof=1))
    return jnp.sum(jnp.clip(dist, 1e-12, 1e12)) / f.shape[0]


def partition_loss(heads: jax.Array, axis_name: str | None = None) -> jax.Array:
    """DAN's partition loss log(1 + H / (mean unbiased variance across heads + eps)); 0 for one head.

    Args:
      heads: [B, H, C], the log-softmaxed head vectors DAN returns.
      axis_name: pmap axis; the mean variance is averaged across replicas *before* the log so the value
        equals the one on the global batch.
    """
    num_head = heads.shape[1]
    if num_head == 1:
        return jnp.zeros((), heads.dtype)
    v = jnp.mean(jnp.var(heads, axis=1, ddof=1))
    if axis_name is not None:
        v = jax.lax.pmean(v, axis_name)
    return jnp.log(1.0 + num_head / (v + PY_FLOAT_EPS))


def dan_loss(outputs: tuple[jax.Array, jax.Array, jax.Array], labels: jax.Array, centers: jax.Array,
             axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DAN's total training loss and its three terms."""
    out, feat, heads = outputs
    terms = {"ce": cross_entropy(out, labels), "affinity": affinity_loss(feat, labels, centers),
             "partition": partition_loss(heads, axis_name)}
    return terms["ce"] + terms["affinity"] + terms["partition"], terms
