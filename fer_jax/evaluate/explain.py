"""Class-activation maps and attention views: what a network looks at when it names an expression.

Grad-CAM (Selvaraju et al., 2017) and Grad-CAM++ (Chattopadhay et al., 2018) of any registered network at
its declared layer (`ModelSpec.cam_layer`) or any module the user names, for the predicted class or a chosen
one; the network's own attention views (`ModelSpec.views`: DAN's per-head spatial attention, FERAtt's
attention image and map); for a video network, the per-frame weights of its aggregation (Emotion-FAN).

The layer's output A is captured, and its gradient dS/dA obtained, by intercepting the module's call
(`flax.linen.intercept_methods`) and adding a zero tensor that the score is differentiated against: nothing
in the networks exists for explanation alone, and any module path works.

    explainer = Explainer(predictor)                     # a predict.Predictor
    result = explainer.images(batch)                     # preprocessed faces [B, H, W, C]
    grad_cam(result.activations, result.gradients)       # [B, h, w], >= 0
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from fer_jax import pretrained, xla
from fer_jax.errors import ConfigError
from fer_jax.evaluate.predict import Predictor
from fer_jax.models.layers import at_least_float32

METHODS = ("gradcam", "gradcam++")


def grad_cam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM: ReLU(Σ_c w_c A_c) with w_c the spatial mean of dS/dA_c. [B, h, w, C] x2 -> [B, h, w]."""
    a, g = np.asarray(activations, np.float64), np.asarray(gradients, np.float64)
    weights = g.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * a).sum(-1), 0.0)


def grad_cam_pp(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ in the closed form of an exponential score (eq. 19 of the paper), as the usual implementation
    (jacobgil/pytorch-grad-cam) computes it: α = g² / (2g² + Σ_ij A · g³ + 1e-6) where g ≠ 0 (else 0),
    w_c = Σ_ij α ReLU(g), map = ReLU(Σ_c w_c A_c)."""
    a, g = np.asarray(activations, np.float64), np.asarray(gradients, np.float64)
    g2, g3 = g ** 2, g ** 3
    denominator = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3 + 1e-6
    alpha = np.where(g != 0, g2 / denominator, 0.0)
    weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2), keepdims=True)
    return np.maximum((weights * a).sum(-1), 0.0)


CAMS = {"gradcam": grad_cam, "gradcam++": grad_cam_pp}


def scale(maps: np.ndarray) -> np.ndarray:
    """Each map to [0, 1] by its own min and max (a constant map gives zeros)."""
    maps = np.asarray(maps, np.float64)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[B, h, w] maps bilinearly resized to size (h, w) with half-pixel centres (torch's align_corners=False)."""
    import cv2

    return np.stack([cv2.resize(m.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                     for m in maps]).astype(np.float64)


@dataclasses.dataclass
class Explanation:
    """One batch explained.

    Attributes:
      logits: the declared prediction [B, classes] (a video: [1, classes]).
      target: the class explained per row of logits.
      activations, gradients: the layer's output A and dS/dA [B (frames), h, w, C] with S the target's logit.
      views: {View.title: array} of the network's attention views.
      frame_weights: a video: {"self-attention": [N], "aggregation": [N]} per-frame weights.
    """

    logits: np.ndarray
    target: np.ndarray
    activations: np.ndarray
    gradients: np.ndarray
    views: dict[str, np.ndarray]
    frame_weights: dict[str, np.ndarray] | None = None


class Explainer:
    """Grad-CAM inputs and attention views for a model directory (via its `Predictor`).

    Args:
      predictor: the loaded model (class names, preprocessing, batch size).
      layer: dotted module path of the map to explain (default: the network's `cam_layer`).

    Raises:
      ConfigError: the layer is not a module of the network whose output is a [B, h, w, C] map called once
        per forward pass (`layer_outputs` lists those that are).
    """

    def __init__(self, predictor: Predictor, layer: str | None = None):
        self.predictor = predictor
        self.spec = predictor.spec
        self.layer = layer or self.spec.cam_layer
        if self.layer is None:
            raise ConfigError(f"{predictor.meta['arch']} declares no layer for class-activation maps; name one "
                              "with --layer")
        self.views = self.spec.views({**self.spec.defaults, **predictor.meta["hparams"]})
        self._image = xla.jit(functools.partial(self._explain, video=False), "eval")
        self._video = xla.jit(functools.partial(self._explain, video=True), "eval")
        self._check_layer()

    def _check_layer(self) -> None:
        h, w = pretrained.input_size(self.predictor.meta)
        size = self.predictor.prepare(np.zeros((h, w, 3), np.uint8)).shape
        maps = layer_outputs(self.predictor, size)
        if maps.get(self.layer) != 1:
            candidates = [path for path, calls in maps.items() if calls == 1]
            raise ConfigError(f"--layer {self.layer!r} is not a module of {self.predictor.meta['arch']} whose output "
                              f"is an image map, called once per forward pass; --list_layers shows the "
                              f"{len(candidates)} that are (e.g. {candidates[-1]})")

    def _forward(self, variables, images, delta, *, video: bool):
        """(named outputs, prediction [B or 1, K], layer output, intermediates) with `delta` added to the
        layer's output."""
        module, spec, captured = self.predictor.module, self.spec, {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and ".".join(context.module.path) == self.layer:
                captured["map"] = out
                out = out + delta
            return out

        with nn.intercept_methods(interceptor):
            if spec.video is None:
                raw, state = module.apply(variables, *spec.batch_inputs({"image": images}), train=False,
                                          mutable=["intermediates"])
                outputs = spec.named(raw)
                prediction = spec.predict(outputs)
            else:
                values, state = module.apply(variables, images, train=False, method=spec.video.frame,
                                             mutable=["intermediates"])
                values = values if isinstance(values, tuple) else (values,)
                n = images.shape[0]
                ids, count = (jnp.zeros(n, jnp.int32), 1) if video else (jnp.arange(n, dtype=jnp.int32), n)
                prediction, aggregate = module.apply(variables, *values, ids, count, method=spec.video.aggregate,
                                                     mutable=["intermediates"])
                outputs = {"frame_values": values}
                state = {"intermediates": {**state.get("intermediates", {}), **aggregate.get("intermediates", {})}}
        return outputs, at_least_float32(prediction), captured["map"], state.get("intermediates", {})

    def _explain(self, variables, images, target, *, video: bool):
        def score(delta):
            outputs, prediction, fmap, inter = self._forward(variables, images, delta, video=video)
            chosen = jnp.where(target >= 0, target, jnp.argmax(jax.lax.stop_gradient(prediction), -1))
            picked = jnp.take_along_axis(prediction, chosen[:, None], axis=1).sum()
            return picked, (outputs, prediction, chosen, fmap, inter)

        shape = jax.eval_shape(lambda: self._forward(variables, images, 0.0, video=video)[2]).shape
        grads, (outputs, prediction, chosen, fmap, inter) = jax.grad(score, has_aux=True)(jnp.zeros(shape))
        views = {v.title: _view_source(v, outputs, inter) for v in self.views}
        weights = {}
        if self.spec.video is not None and self.spec.video.weight is not None:
            weights["self-attention"] = outputs["frame_values"][self.spec.video.weight]
            if "frame_weights" in inter:
                weights["aggregation"] = inter["frame_weights"][0]
        return prediction, chosen, fmap, grads, views, weights

    def images(self, batch: np.ndarray, target: int | None = None) -> Explanation:
        """Explains each preprocessed image [B, H, W, C] (a video network: each as a one-frame video)."""
        return self._run(self._image, batch, target, video=False)

    def video(self, frames: np.ndarray, target: int | None = None) -> Explanation:
        """Explains one video of preprocessed frames [N, H, W, C] (video networks): maps per frame for the
        video's class, and the per-frame weights."""
        if self.spec.video is None:
            raise ConfigError(f"{self.predictor.meta['arch']} is not a video network")
        return self._run(self._video, frames, target, video=True)

    def _run(self, fn, batch, target, *, video: bool) -> Explanation:
        rows = 1 if video else len(batch)
        targets = jnp.full(rows, -1 if target is None else target, jnp.int32)
        prediction, chosen, fmap, grads, views, weights = fn(self.predictor.variables, jnp.asarray(batch), targets)
        to_np = functools.partial(jax.tree.map, lambda a: np.asarray(a, np.float64))
        return Explanation(to_np(prediction), np.asarray(chosen), to_np(fmap), to_np(grads), to_np(views),
                           {k: np.asarray(v, np.float64).reshape(-1) for k, v in weights.items()} if video else None)


def _view_source(view, outputs: Mapping[str, Any], inter: Mapping[str, Any]) -> Any:
    kind, _, name = view.source.partition(":")
    if kind == "output":
        return outputs[name]
    node = inter
    for part in name.split("."):
        node = node[part]
    return node[0]


def layer_outputs(predictor: Predictor, input_shape: tuple[int, ...]) -> dict[str, int]:
    """{dotted module path: calls per forward pass} of every module whose output is a 4-D map [B, h, w, C]
    (the layers `--layer` accepts when called once), in call order, for inputs of `input_shape` (H, W, C)."""
    calls: dict[str, int] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.path and getattr(out, "ndim", 0) == 4:
            path = ".".join(context.module.path)
            calls[path] = calls.get(path, 0) + 1
        return out

    from fer_jax.evaluate.predict import _logits

    with nn.intercept_methods(interceptor):
        jax.eval_shape(functools.partial(_logits, predictor.module, predictor.spec), predictor.variables,
                       jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    return calls


# ---------------------------------------------------------------------------------------------------------
# Figures.


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`heat` in [0, 1] (resized to the image) in the JET colour map over an RGB uint8 image -> RGB uint8."""
    from matplotlib import colormaps

    heat = upsample(heat[None], image.shape[:2])[0]
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def figure(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: str, title: str = "",
           bars: Mapping[str, np.ndarray] | None = None, frames: Sequence[int] | None = None) -> str:
    """A grid: one row per face (or frame), one column per picture, row labels at the left; optional
    per-frame weight bars below (videos). Each row: {"label": str, "pictures": [RGB uint8 per column]}."""
    from fer_jax.evaluate.figures import _pyplot, _save

    plt = _pyplot()
    n, m = len(rows), len(columns)
    extra = 1 if bars else 0
    fig, axes = plt.subplots(n + extra, m, figsize=(2.2 * m + 1.2, 2.3 * n + 2.2 * extra), squeeze=False,
                             gridspec_kw={"height_ratios": [1] * n + [1.2] * extra})
    for i, row in enumerate(rows):
        for j, picture in enumerate(row["pictures"]):
            ax = axes[i][j]
            ax.imshow(picture)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=10)
        axes[i][0].set_ylabel(row["label"], fontsize=8, rotation=0, ha="right", va="center", labelpad=8)
    if bars:
        for ax in axes[n][1:]:
            fig.delaxes(ax)
        ax = fig.add_subplot(axes[n][0].get_gridspec()[n, :])
        fig.delaxes(axes[n][0])
        x = np.arange(len(frames))
        width = 0.8 / len(bars)
        for k, (name, values) in enumerate(bars.items()):
            ax.bar(x + (k - (len(bars) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(x, [str(f) for f in frames], fontsize=8)
        ax.set_xlabel("frame")
        ax.set_ylabel("weight")
        ax.set_ylim(0, 1.3 * max(float(np.max(v)) for v in bars.values()))  # room for the legend
        ax.legend(fontsize=8, ncol=len(bars), loc="upper left")
    height = fig.get_size_inches()[1]
    if title:  # a band of 0.5 inch at the top, above the column titles
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height if title else 1))
    return _save(plt, fig, path)


def picture(view_kind: str, value: np.ndarray, face: np.ndarray, target: int) -> np.ndarray:
    """One attention view of one input as an RGB uint8 picture (see `models.View`)."""
    value = np.asarray(value, np.float64)
    if view_kind == "image":
        import cv2

        low, span = value.min(), np.ptp(value)
        v = (value - low) / span if span > 0 else np.zeros_like(value)
        return cv2.resize(np.round(v * 255).astype(np.uint8), face.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    if view_kind == "class_heatmap":
        return heatmap_overlay(face, 1 / (1 + np.exp(-value[..., target])))
    return heatmap_overlay(face, scale(value.reshape(1, *value.shape[:2]))[0])


# ---------------------------------------------------------------------------------------------------------
# The driver behind scripts/explain.py.

DISPLAY = 160  # pixels per picture in the figures


def explain_inputs(explainer: Explainer, paths: Sequence[str], out: Any, *, detect: bool = True,
                   target: int | None = None, methods: Sequence[str] = METHODS, max_frames: int = 8,
                   on_problem, on_figure=lambda path, record: None) -> list[dict[str, Any]]:
    """One figure per image (a row per face) or per video (a row per frame, weight bars below) in `out.tmp`
    (a `predict.OutputDir`); returns a record per figure. Unusable inputs go to `on_problem(path, reason)`."""
    from fer_jax.errors import DatasetError
    from fer_jax.evaluate import predict

    p = explainer.predictor
    unknown = [m for m in methods if m not in CAMS]
    if unknown or not methods:
        raise ConfigError(f"--method {','.join(methods)}: choose from {', '.join(METHODS)}")
    columns = ["face", *("Grad-CAM" if m == "gradcam" else "Grad-CAM++" for m in methods),
               *(v.title for v in explainer.views)]
    records: list[dict[str, Any]] = []

    def crops_of(rgb: np.ndarray, largest_only: bool) -> list[tuple[int | None, Any, np.ndarray]]:
        if not detect:
            return [(None, None, rgb)]
        return [(i, f.box, crop) for i, f, crop in p.find_faces(rgb, largest_only)]

    def rows_for(e: Explanation, crops: Sequence[np.ndarray], labels: Sequence[str], video: bool) -> list[dict]:
        cams = {m: CAMS[m](e.activations, e.gradients) for m in methods}
        cams = {m: (scale(c.reshape(1, -1, c.shape[-1])).reshape(c.shape) if video else scale(c))
                for m, c in cams.items()}
        rows = []
        for i, (crop, label) in enumerate(zip(crops, labels)):
            import cv2

            shown = cv2.resize(crop, (DISPLAY, DISPLAY), interpolation=cv2.INTER_AREA if crop.shape[0] > DISPLAY
                               else cv2.INTER_LINEAR)
            t = int(e.target[0 if video else i])
            pictures = [shown, *(heatmap_overlay(shown, cams[m][i]) for m in methods),
                        *(picture(v.kind, e.views[v.title][i], shown, t) for v in explainer.views)]
            rows.append({"label": label, "pictures": pictures})
        return rows

    def save(source: str, rows, title: str, record: dict, **bars) -> None:
        path = predict.output_name(out.tmp, len(records) + 1, source)
        figure(rows, columns, path, title, **bars)
        record["figure"] = os.path.basename(path)
        records.append(record)
        on_figure(path, record)

    for item in predict.expand(paths, p.is_video_model, on_problem):
        try:
            if p.is_video_model and item.kind in ("video", "frames"):
                frames = (predict.read_video(item.path, max_frames) if item.kind == "video" else
                          predict._folder_frames(item.path, max_frames, on_problem))
                numbers, crops = [], []
                for number, rgb in frames:
                    found = crops_of(rgb, largest_only=True)
                    if found:
                        numbers.append(number)
                        crops.append(found[0][2])
                if not crops:
                    on_problem(item.path, "no face found in any frame" if detect else "no frames")
                    continue
                e = explainer.video(np.stack([p.prepare(c) for c in crops]), target)
                probs = p.probabilities(e.logits)[0]
                name = list(probs)[int(e.target[0])]
                label = max(probs, key=probs.get)
                record = {"source": item.path, "frames": numbers, "label": label, "probability": probs[label],
                          "explained": name, "frame_weights": {k: v.tolist() for k, v in e.frame_weights.items()}}
                save(item.path, rows_for(e, crops, [f"frame {n}" for n in numbers], video=True),
                     f"{os.path.basename(item.path.rstrip(os.sep))}: {label} {probs[label]:.2f}; maps for {name}",
                     record, bars=e.frame_weights, frames=numbers)
                continue
            images = ([(item.path, predict.read_image(item.path))] if item.kind == "image" else
                      [(f"{item.path}@frame {i}", rgb) for i, rgb in predict.read_video(item.path, max_frames)])
            for source, rgb in images:
                found = crops_of(rgb, largest_only=False)
                if not found:
                    on_problem(source, "no face found")
                    continue
                batch = np.stack([p.prepare(c) for _, _, c in found])
                parts = [explainer.images(batch[i:i + p.batch_size], target)
                         for i in range(0, len(batch), p.batch_size)]
                e = Explanation(*(np.concatenate([getattr(x, f) for x in parts]) for f in
                                  ("logits", "target", "activations", "gradients")),
                                {k: np.concatenate([x.views[k] for x in parts]) for k in parts[0].views})
                labels, faces_out = [], []
                for (index, box, _), probs, t in zip(found, p.probabilities(e.logits), e.target):
                    best = max(probs, key=probs.get)
                    explained = list(probs)[int(t)]
                    head = f"face {index}" if index else "image"
                    labels.append(f"{head}\n{best} {probs[best]:.2f}" + (f"\nmaps: {explained}" if explained != best
                                                                         else ""))
                    faces_out.append({"face": index, "box": list(box) if box else None, "label": best,
                                      "probability": probs[best], "explained": explained})
                save(source, rows_for(e, [c for _, _, c in found], labels, video=False),
                     f"{os.path.basename(source)}: {p.meta['arch']}, layer {explainer.layer}",
                     {"source": source, "faces": faces_out})
        except DatasetError as err:
            on_problem(item.path, str(err))
    return records
