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


def label_smoothing_cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    """torch's `F.cross_entropy(label_smoothing=smoothing)`: (1 - s) NLL + s mean_k(-log p_k), batch mean."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))


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


# --- FAER (XUJ1Er/FAER; shared/reference/faer.md section 3) -------------------------------------------


def bce_with_logits(logits: jax.Array, targets: jax.Array, clamp: float | None = None) -> jax.Array:
    """torch.nn.BCEWithLogitsLoss() (mean over every element); FAER's `Loss` first clamps the logits to
    [-clamp, clamp] (10), which also stops their gradient outside that range, as torch.clamp does."""
    if clamp is not None:
        logits = jnp.clip(logits, -clamp, clamp)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype)))


def bce_focal(logits: jax.Array, targets: jax.Array, gamma: float = 2.0, sum_attributes: bool = False
              ) -> jax.Array:
    """FAER Baseline's BCEFocalLoss: p = sigmoid(x); -(1-p)^g q log p - p^g (1-q) log(1-p).

    The code takes the mean over batch x attributes; the paper (eq. 7) sums over the attributes and averages
    over the batch (`sum_attributes`, 40x larger for CelebA). log p and log(1-p) are computed stably from the
    logits (log_sigmoid), which equals upstream's `torch.log(sigmoid(x))` wherever that one is finite.
    """
    q = targets.astype(logits.dtype)
    p = jax.nn.sigmoid(logits)
    loss = -((1 - p) ** gamma * q * jax.nn.log_sigmoid(logits) + p ** gamma * (1 - q) * jax.nn.log_sigmoid(-logits))
    return jnp.mean(jnp.sum(loss, axis=-1)) if sum_attributes else jnp.mean(loss)


def asymmetric(logits: jax.Array, targets: jax.Array, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
               clip: float = 0.05, eps: float = 1e-8) -> jax.Array:
    """FAER's AsymmetricLoss (ASL, Ridnik et al.): negatives' probability shifted by `clip`, probabilities
    clamped to [eps, 1 - eps] inside the logs, focusing weight (1 - p_t)^gamma *with* its gradient, and the
    negated **sum** over every element (not a mean)."""
    y = targets.astype(logits.dtype)
    xs_pos = jax.nn.sigmoid(logits)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = jnp.minimum(xs_neg + clip, 1.0)
    loss = (y * jnp.log(jnp.clip(xs_pos, eps, 1 - eps)) + (1 - y) * jnp.log(jnp.clip(xs_neg, eps, 1 - eps)))
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        loss = loss * jnp.power(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -jnp.sum(loss)


def center_loss(features: jax.Array, labels: jax.Array, centers: jax.Array, axis_name: str | None = None
                ) -> jax.Array:
    """FAER's CenterLoss: sum_i |x_i - c_{y_i}|^2 / 2 / B, with upstream's hand-written gradient.

    Backward, as `CenterLossFunction.backward` defines it (not the autodiff one):
    - features: g * (x_i - c_{y_i}) / B, scaled by the incoming gradient g (so by lambda in CE + lambda L);
    - centers: sum_{i: y_i = j} (c_j - x_i) / (1 + n_j) / B, **not** scaled by g (the weight lambda of the
      loss does not reach the centers), n_j the number of class-j examples in the batch.

    Under pmap (`axis_name`) each device holds B/D examples: n_j is counted over the global batch, and the
    per-device center gradient uses the local B, so that the mean over devices (the training step's pmean)
    equals the gradient on the global batch.

    Args:
      features: [B, D] (the network's pooled `feature` output).
      labels: [B] int class indices.
      centers: [K, D] trainable centers.
      axis_name: pmap axis name, if any.
    """
    return _center_loss(features, labels, centers, axis_name)


def _center_counts(labels, num_centers, axis_name):
    counts = jnp.zeros((num_centers,), jnp.float32).at[labels].add(1.0)
    return jax.lax.psum(counts, axis_name) if axis_name else counts


@jax.custom_vjp
def _center_loss_core(features, labels, centers, counts):
    diff = features - centers[labels]
    return jnp.sum(diff * diff) / 2.0 / features.shape[0]


def _center_fwd(features, labels, centers, counts):
    return _center_loss_core(features, labels, centers, counts), (features, labels, centers, counts)


def _center_bwd(res, g):
    features, labels, centers, counts = res
    batch = features.shape[0]
    diff = centers[labels] - features
    grad_centers = jnp.zeros_like(centers).at[labels].add(diff) / (1.0 + counts.astype(centers.dtype))[:, None]
    return (-g * diff / batch, None, grad_centers / batch, None)


_center_loss_core.defvjp(_center_fwd, _center_bwd)


def _center_loss(features, labels, centers, axis_name):
    counts = jax.lax.stop_gradient(_center_counts(labels, centers.shape[0], axis_name))
    return _center_loss_core(features, labels.astype(jnp.int32), centers, counts)


# --- FERAtt (pedrodiamel/ferattention; shared/reference/feratt.md section 3) ------------------------------

ATT_WEIGHT = 5.0  # Attloss: 5 * clamp(mean, max=30)
ATT_MAX = 30.0
DGMM_SIGMA = 0.5  # DGMMLoss(num_classes) in attentionnet.py: the constructor's sigma 0.5
DGMM_ALPHA = 2.0  # mixup weight ~ Beta(2, 2)
DGMM_EPS = 1e-15


def torch_clamp(x: jax.Array, low: float | None = None, high: float | None = None) -> jax.Array:
    """torch.clamp with torch's gradient: 1 wherever low <= x <= high, the bounds included (jnp.clip passes
    0.5 at a bound, where it splits the gradient between x and the bound)."""
    inside = jnp.ones(x.shape, bool)
    if low is not None:
        inside &= x >= low
    if high is not None:
        inside &= x <= high
    return jnp.where(inside, x, jnp.clip(x, low, high))


def torch_abs(x: jax.Array) -> jax.Array:
    """|x| with torch's gradient sign(x), i.e. 0 at x = 0 (jax.grad(jnp.abs)(0.) is 1)."""
    return x * jnp.sign(x)


def attention_loss(x_org: jax.Array, att: jax.Array) -> jax.Array:
    """FERAtt's `Attloss`: 5 * clamp(mean over every element of tanh(3 |x_org - att|), max=30).

    Upstream writes the bracket as (e^{6|d|} - 1) / (e^{6|d|} + 1), which is tanh(3|d|); that form overflows
    to inf / inf = NaN for |d| > ~14.8 in float32, and loses relative precision to cancellation for tiny |d|
    (~1e-16 / 6|d|); tanh has neither problem. The clamp never binds (the mean of tanh is below 1): it is
    kept with torch's gradient for the record.

    Args:
      x_org: the clean face, [B, H, W, 3] in [0, 1].
      att: the network's attention image `att`, same shape.
    """
    return ATT_WEIGHT * torch_clamp(jnp.mean(jnp.tanh(3.0 * torch_abs(x_org - att))), high=ATT_MAX)


def attention_loss_per_example(x_org: jax.Array, att: jax.Array) -> jax.Array:
    """[B]: `attention_loss` of each example alone (their mean is the batch's loss, the clamp never binding)."""
    axes = tuple(range(1, att.ndim))
    return ATT_WEIGHT * jnp.mean(jnp.tanh(3.0 * torch_abs(x_org - att)), axis=axes)


def feratt_loss(logits: jax.Array, labels: jax.Array, att: jax.Array, x_org: jax.Array
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """FERAtt's training loss (`--loss attloss`): CE(y, label) + attention loss of `att` against `x_org`."""
    terms = {"ce": cross_entropy(logits, labels), "att": attention_loss(x_org, att)}
    return terms["ce"] + terms["att"], terms


def dgmm_draws(key: jax.Array, batch: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """DGMMLoss's mixup draws: (lambda ~ Beta(2, 2), a permutation of the batch)."""
    k_lam, k_perm = jax.random.split(key)
    return (jax.random.beta(k_lam, DGMM_ALPHA, DGMM_ALPHA, dtype=dtype),
            jax.random.permutation(k_perm, batch))


def dgmm_loss(z: jax.Array, labels: jax.Array, num_classes: int, lam: jax.Array | None = None,
              perm: jax.Array | None = None, sigma: float = DGMM_SIGMA) -> jax.Array:
    """FERAtt+Rep's `DGMMLoss` (deep Gaussian mixture in the embedding space), as upstream computes it.

    With mixup (`lam`, `perm` given; upstream's default `mix=True`), the batch is extended by
    z * lam + z[perm] * (1 - lam) with *float* labels y * lam + y[perm] * (1 - lam). For every class c with
    at least one member (label == c exactly: a mixed sample matches a class only if its float label comes
    out exactly integral), mu_c is the mean of its members over the extended batch and
    p_ic = exp(-|z_i - mu_c|^2 / (2 sigma^2)) (0 for a class without members); p is normalised over the
    classes (+1e-15), clamped to [0, 1] (torch's gradient at the bounds), and the loss is
    mean_i sum_c (p_ic - onehot_ic)^2; mixed samples matching no class have an all-zero one-hot row.
    Everything is elementwise (no matmul), so no backend-dependent matmul precision enters.

    Args:
      z: [B, D] embeddings.
      labels: [B] class indices.
      num_classes: C (upstream passes the network's class count).
      lam, perm: the mixup draws (`dgmm_draws`); None for no mixup.
      sigma: the Gaussians' scale.
    """
    y = labels.astype(z.dtype)
    if lam is not None:
        lam = jnp.asarray(lam, z.dtype)
        z = jnp.concatenate([z, z * lam + z[perm] * (1 - lam)])
        y = jnp.concatenate([y, y * lam + y[perm] * (1 - lam)])
    member = y[:, None] == jnp.arange(num_classes, dtype=z.dtype)[None, :]  # [N, C]
    counts = jnp.sum(member, axis=0)
    sums = jnp.sum(jnp.where(member[:, :, None], z[:, None, :], 0.0), axis=0)  # [C, D]
    mu = sums / jnp.maximum(counts, 1).astype(z.dtype)[:, None]
    dist = jnp.sum((z[:, None, :] - mu[None, :, :]) ** 2, axis=-1)  # [N, C]
    p = jnp.where(counts[None, :] > 0, jnp.exp(-dist / (2.0 * sigma ** 2)), 0.0)
    p = torch_clamp(p / (jnp.sum(p, axis=1, keepdims=True) + DGMM_EPS), 0.0, 1.0)
    return jnp.mean(jnp.sum((p - member.astype(z.dtype)) ** 2, axis=1))
