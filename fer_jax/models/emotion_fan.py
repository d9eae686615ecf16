"""Emotion-FAN: frame attention networks for video facial expression recognition.

Wang et al., "Frame attention networks for facial expression recognition in videos", ICIP 2019.
Re-expresses Open-Debin/Emotion-FAN:basic_code/networks.py (`ResNet_AT`, built by `resnet18_at`) and the
video aggregation of its scripts (`fan_afew_traintest.py`, `fan_ckplus_traintest.py`: `val`); facts in
shared/reference/emotion_fan.md.

Upstream has one `forward` switched by strings (`phrase`, `AT_level`); here each mode is a named method:

| upstream                                   | here                                              |
|--------------------------------------------|---------------------------------------------------|
| `forward(x)` (phrase='train')              | `__call__(frames, train=True)`                    |
| phrase='eval', AT_level='first_level'      | `frame_features(images)` -> (f, alpha)            |
| the script's index-matrix mean of f        | `video_features(f, alpha, video, num_videos)`     |
| AT_level='pred' / 'second_level'           | `video_logits(f, alpha, video, num_videos)`       |

Upstream's index matrix M [V, N] becomes a per-frame video id [N] and `jax.ops.segment_sum`, so ragged
videos aggregate inside `jit` without a Python loop over videos.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import linen as nn

from fer_jax.models.convolution import Conv
from fer_jax.models.layers import BatchNorm, Dense, kaiming_normal_fan_out, max_pool_torch, torch_linear_init
from fer_jax.models.resnet import STAGE_SIZES, ResLayer

AtType = Literal["self", "relation"]

# Upstream's names for the two attention types (`--at_type 0 / 1` of the scripts).
UPSTREAM_AT_TYPES = {"self": "self-attention", "relation": "self_relation-attention"}

# Heads that the training forward of each attention type never uses. torch gives them no gradient, so
# torch.optim.SGD skips them entirely (no weight decay either); an optax optimizer must mask them to match.
UNUSED_HEADS: dict[str, tuple[str, ...]] = {"self": ("beta", "pred_fc2"), "relation": ("pred_fc1",)}


def _linear(features: int, fan_in: int, dtype: Any, name: str | None = None) -> Dense:
    """torch.nn.Linear with its default initialisation (named by its attribute when made in `setup`)."""
    init = torch_linear_init(fan_in)
    return Dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name)


class AttentionScore(nn.Module):
    """`Sequential(Linear(fan_in, 1), Sigmoid())`: upstream's `alpha` and `beta`, child "0"."""

    fan_in: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.sigmoid(_linear(1, self.fan_in, self.dtype, "0")(x))


class EmotionFAN(nn.Module):
    """Frame Attention Network (ResNet18 + self / relation attention), NHWC.

    Re-expresses Open-Debin/Emotion-FAN:basic_code/networks.py `ResNet_AT(BasicBlock, [2, 2, 2, 2])`.
    Submodules carry the torch attribute names at the root (`conv1`, `bn1`, `layer1`..`layer4`,
    `alpha.0`, `beta.0`, `pred_fc1`, `pred_fc2`), so upstream keys map to Flax paths by the one rule.
    Both heads exist whatever `at_type` (as upstream); `UNUSED_HEADS[at_type]` names the idle ones.

    Attributes:
      num_class: classes of `pred_fc1` / `pred_fc2` (upstream hard-codes 7).
      at_type: "self" (upstream 'self-attention') or "relation" ('self_relation-attention').
      axis_name: pmap axis for cross-replica BatchNorm.
      dtype: computation dtype (None: that of the inputs and parameters).
    """

    num_class: int = 7
    at_type: AtType = "relation"
    axis_name: str | None = None
    dtype: Any = None

    def setup(self):
        if self.at_type not in UPSTREAM_AT_TYPES:
            raise ValueError(f"at_type must be 'self' or 'relation', got {self.at_type!r}")
        self.conv1 = Conv(64, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                          kernel_init=kaiming_normal_fan_out, dtype=self.dtype)
        self.bn1 = BatchNorm(axis_name=self.axis_name, dtype=self.dtype)
        self.layer1 = ResLayer(64, STAGE_SIZES["resnet18"][0], 1, self.axis_name, self.dtype)
        self.layer2 = ResLayer(128, STAGE_SIZES["resnet18"][1], 2, self.axis_name, self.dtype)
        self.layer3 = ResLayer(256, STAGE_SIZES["resnet18"][2], 2, self.axis_name, self.dtype)
        self.layer4 = ResLayer(512, STAGE_SIZES["resnet18"][3], 2, self.axis_name, self.dtype)
        # One Dropout module reused at every site, as upstream: each call draws its own mask.
        self.dropout = nn.Dropout(0.5)
        self.dropout2 = nn.Dropout(0.6)
        self.alpha = AttentionScore(512, self.dtype)
        self.beta = AttentionScore(1024, self.dtype)
        self.pred_fc1 = _linear(self.num_class, 512, self.dtype)
        self.pred_fc2 = _linear(self.num_class, 1024, self.dtype)

    def frame_features(self, x: jax.Array, *, train: bool = False, dropout: bool | None = None
                       ) -> tuple[jax.Array, jax.Array]:
        """One backbone pass over single frames: upstream's eval "first level".

        Sows the layer4 map [N, h, w, 512] as `intermediates/feature_map` (for class-activation maps;
        the name `layer4` is taken by the submodule).

        Args:
          x: frames [N, H, W, 3], RGB in [0, 1] (upstream does not normalise).
          train: BatchNorm uses (and updates) batch statistics.
          dropout: apply the p=0.5 dropout in front of `alpha`; defaults to `train`. False with
            train=True gives train-mode BatchNorm without dropout (parity tests).

        Returns:
          (f [N, 512] pooled features, not dropped out; alpha [N, 1] self-attention weights).
        """
        dropout = train if dropout is None else dropout
        y = nn.relu(self.bn1(self.conv1(x), train=train))
        y = max_pool_torch(y, window=3, stride=2, padding=1)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            y = layer(y, train=train)
        self.sow("intermediates", "feature_map", y)
        f = jnp.mean(y, axis=(1, 2))
        return f, self.alpha(self.dropout(f, deterministic=not dropout))

    def __call__(self, frames: jax.Array, *, train: bool, dropout: bool | None = None) -> jax.Array:
        """Upstream's training forward on groups of frames of the same video.

        Each frame goes through the backbone in its own pass, in frame order: BatchNorm batch statistics
        are per frame and the running statistics update T times per call, as upstream's three passes.

        Args:
          frames: [B, T, H, W, 3]; upstream stacks T=3 frames on the last axis of an NCHW tensor
            [B, 3, H, W, T], here the frame axis is second. Any T >= 1 works.
          train: BatchNorm mode (and the default of `dropout`).
          dropout: apply the dropouts (needs the "dropout" RNG stream); defaults to `train`.

        Returns:
          logits [B, num_class].
        """
        dropout = train if dropout is None else dropout
        # upstream quirk: one backbone pass per frame rather than one over all B*T images; a single
        # pass would normalise with other batch statistics and update the running ones once, not T times.
        fs, alphas = zip(*(self.frame_features(frames[:, t], train=train, dropout=dropout)
                           for t in range(frames.shape[1])))
        f, alpha = jnp.stack(fs, axis=1), jnp.stack(alphas, axis=1)  # [B, T, 512], [B, T, 1]
        vm = jnp.sum(f * alpha, axis=1) / jnp.sum(alpha, axis=1)
        if self.at_type == "self":
            return self.pred_fc1(self.dropout(vm, deterministic=not dropout))
        return self._relation_train(f, alpha, vm, dropout)

    def _relation_train(self, f: jax.Array, alpha: jax.Array, vm: jax.Array, dropout: bool) -> jax.Array:
        """Relation attention of the training forward: the α·β-weighted mean of concat(f_i, vm)."""
        g = jnp.concatenate([f, jnp.broadcast_to(vm[:, None], f.shape)], axis=-1)  # [B, T, 1024]
        # Dropout before beta draws a mask per frame, like upstream's loop over the frames.
        beta = jnp.stack([self.beta(self.dropout(g[:, t], deterministic=not dropout))
                          for t in range(g.shape[1])], axis=1)
        weight = beta * alpha
        out = jnp.sum(g * weight, axis=1) / jnp.sum(weight, axis=1)
        return self.pred_fc2(self.dropout2(out, deterministic=not dropout))

    def video_features(self, f: jax.Array, alpha: jax.Array, video: jax.Array, num_videos: int
                       ) -> jax.Array:
        """The α-weighted mean feature of each video (upstream's script: M·(α f) / M·α).

        Args:
          f: frame features [N, 512] from `frame_features`.
          alpha: frame weights [N, 1] from `frame_features`.
          video: int [N], the video of each frame; ids outside [0, num_videos) (padding) are ignored.
          num_videos: V, static.

        Returns:
          vm [V, 512]; a video without frames gives 0/0 = NaN, as upstream (callers check).
        """
        ids = _segment_ids(video, num_videos)
        return (jax.ops.segment_sum(f * alpha, ids, num_videos)
                / jax.ops.segment_sum(alpha, ids, num_videos))

    def video_logits(self, f: jax.Array, alpha: jax.Array, video: jax.Array, num_videos: int
                     ) -> jax.Array:
        """Upstream's eval "second level" for many ragged videos at once (no dropout: eval only).

        Self attention: pred_fc1(vm). Relation attention: with g = concat(f, vm of the frame's video)
        and β = sigmoid(beta(g)), pred_fc2(Σ α·g / Σ α·β) per video. Sows each frame's factor in that
        weighted mean as `intermediates/frame_weights` (α / Σα, or α / Σαβ), and β as `intermediates/frame_beta`.

        Args:
          f: frame features [N, 512] from `frame_features`.
          alpha: frame weights [N, 1] from `frame_features`.
          video: int [N], the video of each frame; ids outside [0, num_videos) (padding) are ignored.
          num_videos: V, static.

        Returns:
          logits [num_videos, num_class].
        """
        vm = self.video_features(f, alpha, video, num_videos)
        ids = _segment_ids(video, num_videos)
        if self.at_type == "self":
            self._sow_weights(alpha, jax.ops.segment_sum(alpha, ids, num_videos), ids)
            return self.pred_fc1(vm)
        g = jnp.concatenate([f, vm[jnp.clip(ids, 0, num_videos - 1)]], axis=-1)
        beta = self.beta(g)
        # upstream quirk: the eval numerator is weighted by α only while the denominator is Σ α·β
        # (training puts α·β in both); kept so converted checkpoints score as upstream reported.
        numerator = jax.ops.segment_sum(g * alpha, ids, num_videos)
        denominator = jax.ops.segment_sum(alpha * beta, ids, num_videos)
        self.sow("intermediates", "frame_beta", beta)
        self._sow_weights(alpha, denominator, ids)
        return self.pred_fc2(numerator / denominator)

    def _sow_weights(self, alpha: jax.Array, denominator: jax.Array, ids: jax.Array) -> None:
        """Sows `frame_weights` [N, 1]: the factor each frame's features get in its video's aggregate."""
        padded = jnp.concatenate([denominator, jnp.ones((1, 1), denominator.dtype)])  # padding frames: id V
        self.sow("intermediates", "frame_weights", alpha / padded[ids])

    def initialize(self, frames: jax.Array, *, train: bool = False) -> jax.Array:
        """Init entry point: creates every variable (both heads, whatever `at_type`).

        Args:
          frames: [B, T, H, W, 3], as `__call__`.
          train: as `__call__`.

        Returns:
          the training-forward logits [B, num_class].
        """
        logits = self(frames, train=train)
        dtype = logits.dtype
        for head, width in ((self.beta, 1024), (self.pred_fc1, 512), (self.pred_fc2, 1024)):
            head(jnp.zeros((1, width), dtype))
        return logits


def _segment_ids(video: jax.Array, num_videos: int) -> jax.Array:
    """Video ids with padding frames (outside [0, V)) sent to V, a segment `segment_sum` drops."""
    video = jnp.asarray(video, jnp.int32)
    return jnp.where((video >= 0) & (video < num_videos), video, num_videos)
