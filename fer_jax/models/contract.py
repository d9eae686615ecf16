"""The contract every registered network meets, and the helpers that read it.

Training, evaluation, prediction, explanation, porting checks and benchmarks build, initialise and run a
network only through its `ModelSpec`: none of them assumes that the first output is the logits, or that
one NHWC image in eval mode creates every variable. A new network is a new spec, not a special case.

A spec declares:

- `outputs`: the names of what `__call__` returns, in upstream's order (DAN: out, feat, heads);
- `predict`: how the logits (or scores) metrics and prediction use come from the named outputs;
- `inputs` / `example`: the batch entries `__call__` takes, and example shapes for them;
- `init_method`: the method whose `init` creates *every* variable (layers that only some methods use
  included), with `rng_streams`: the RNG streams the network draws from in training (dropout, drop-path);
- `num_classes_key`: the name of the class-count hyperparameter;
- `cam_layer`: the module (dotted path, as in the parameters and upstream's torch names) whose output is
  the feature map class-activation maps use: the map also sown as `intermediates/.../feature_map`;
- `views`: what the network attends to, drawn beside the class-activation maps (DAN's per-head spatial
  attention, FERAtt's attention image and maps);
- `video`: for frame-level networks with their own video aggregation (Emotion-FAN), the methods that give
  per-frame values and aggregate them per video;
- `frozen`: parameters upstream's optimizer never touches (Emotion-FAN's idle head);
- `init_from`: how pretrained weights of other architectures initialise it;
- `face`: how a face found in a photograph becomes its input (crop margin, preprocessing), as upstream's
  inference does; written into every model directory (`fer_jax.pretrained.preprocessing`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class InitRule:
    """How a pretrained model of another architecture initialises this one (see `fer_jax.merge`).

    Attributes:
      renames: module-path prefix renames from the source's names to ours.
      drop: source module paths (after renaming) not used, e.g. the source classifier.
      init: our module paths that keep their initialisation (the new parts).
    """

    renames: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    init: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FacePreprocess:
    """How a detected face becomes the network's input (prediction and explanation on photographs).

    Attributes:
      pp: preprocessing of the square face crop (`fer_jax.data.transforms` syntax) with `{h}` and `{w}`
        standing for the model's input size.
      margin: context added around the detector's box on every side, as a fraction of its longer side.
      align: with a detector that gives landmarks (dlib), the face is instead aligned from them with this
        padding (`fer_jax.faces.align`), as upstream's preprocessing did; None: always the box crop.
    """

    pp: str = "resize({h},{w})|to_float|normalize('imagenet')"
    margin: float = 0.1
    align: float | None = None

    def at(self, size: tuple[int, int] | list[int]) -> dict[str, Any]:
        """{"pp", "margin", "align"} for an input of `size` (h, w): what model directories store."""
        h, w = size
        return {"pp": self.pp.format(h=int(h), w=int(w)), "margin": self.margin, "align": self.align}


@dataclasses.dataclass(frozen=True)
class View:
    """A picture of what the network attends to for one input (`scripts/explain.py` draws it).

    Attributes:
      title: the column title, e.g. "head 1".
      source: "output:NAME" (a declared output) or "sown:PATH" (`intermediates` sown at the dotted PATH,
        e.g. "cat_head0.sa.attention").
      kind: "heatmap": a map [B, h, w] or [B, h, w, 1], scaled to [0, 1] and overlaid on the input;
        "class_heatmap": [B, h, w, classes] logits, the explained class's channel through a sigmoid, overlaid;
        "image": [B, H, W, 3] shown as an image (scaled to [0, 1] per image).
    """

    title: str
    source: str
    kind: str = "heatmap"


@dataclasses.dataclass(frozen=True)
class VideoMethods:
    """Methods of a frame-level network that classify videos of any length (Emotion-FAN).

    Attributes:
      frame: `method(images [N,H,W,C], train=False) -> per-frame values` (a tuple of arrays [N, ...]).
      aggregate: `method(*per_frame_values, video [N] int32, num_videos) -> logits [V, classes]`; frames
        whose video id is outside [0, V) are ignored.
      weight: index of the per-frame value that is each frame's attention weight [N, 1] (reported by
        prediction and explanation), or None.
    """

    frame: str
    aggregate: str
    weight: int | None = None


def first_output(outputs: Mapping[str, Array]) -> Array:
    """The default prediction: the first declared output."""
    return next(iter(outputs.values()))


def image_example(batch: int, size: tuple[int, int], dtype: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """The default example inputs: one NHWC RGB image batch."""
    return {"image": jax.ShapeDtypeStruct((batch, *size, 3), dtype)}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build, initialise and read a registered network (module docstring).

    Attributes:
      build: constructor taking the architecture's hyperparameters as keywords.
      image_size: (height, width) of the upstream input.
      defaults: default hyperparameters (the upstream constructor defaults).
      outputs: names of `__call__`'s outputs, in upstream order.
      predict: named outputs -> the logits (or scores) that metrics and predictions use.
      inputs: the batch entries passed positionally to `__call__` (and to `init_method`).
      example: (batch, (h, w), dtype) -> example arrays for `inputs`, as ShapeDtypeStructs.
      init_method: the method that creates every variable when initialised (None: `__call__`).
      rng_streams: RNG streams used in training, besides "params".
      num_classes_key: the hyperparameter that sets the number of classes (None: no classifier).
      cam_layer: the module (dotted path) whose output is the map class-activation maps use.
      views: hyperparameters -> pictures of what the network attends to (see `View`).
      video: per-frame and per-video methods of a video network (None: an image network).
      frozen: hyperparameters -> module-path patterns of parameters that upstream's optimizer never changes
        (they get no gradient in its training forward, so torch.optim skips them, weight decay included);
        the training optimizer leaves them untouched.
      init_from: source architecture -> how its pretrained weights initialise this network.
      face: crop margin and preprocessing of a face found in a photograph (upstream's inference).
    """

    build: Callable[..., nn.Module]
    image_size: tuple[int, int]
    defaults: dict[str, Any]
    outputs: tuple[str, ...]
    predict: Callable[[Mapping[str, Array]], Array] = first_output
    inputs: tuple[str, ...] = ("image",)
    example: Callable[[int, tuple[int, int], Any], dict[str, jax.ShapeDtypeStruct]] = image_example
    init_method: str | None = None
    rng_streams: tuple[str, ...] = ()
    num_classes_key: str | None = None
    cam_layer: str | None = None
    video: VideoMethods | None = None
    frozen: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda hparams: ()
    init_from: dict[str, InitRule] = dataclasses.field(default_factory=dict)
    face: FacePreprocess = FacePreprocess()
    views: Callable[[Mapping[str, Any]], tuple[View, ...]] = lambda hparams: ()

    def named(self, raw: Any) -> dict[str, Array]:
        """`__call__`'s raw return value -> {output name: array} in upstream order.

        Raises:
          ValueError: the number of outputs differs from the declaration.
        """
        values = tuple(raw) if isinstance(raw, tuple | list) else (raw,)
        if len(values) != len(self.outputs):
            raise ValueError(f"the model returned {len(values)} outputs; its spec declares {self.outputs}")
        return dict(zip(self.outputs, values))

    def example_inputs(self, batch: int = 1, image_size: tuple[int, int] | int | None = None,
                       dtype: Any = jnp.float32) -> dict[str, jax.ShapeDtypeStruct]:
        """Abstract example inputs {batch entry: ShapeDtypeStruct} at `image_size` (default: upstream's)."""
        size = image_size or self.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return self.example(batch, size, dtype)

    def init_rngs(self, rng: Array) -> dict[str, Array]:
        """{"params": ..., <each rng stream>: ...} for `init` (`rng` itself is "params" when there are none)."""
        if not self.rng_streams:
            return {"params": rng}
        keys = jax.random.split(rng, 1 + len(self.rng_streams))
        return {"params": keys[0], **dict(zip(self.rng_streams, keys[1:]))}

    def train_rngs(self, rng: Array) -> dict[str, Array]:
        """One key per declared RNG stream for a training `apply`, derived from `rng`."""
        return {name: jax.random.fold_in(rng, i) for i, name in enumerate(self.rng_streams)}

    def init(self, module: nn.Module, rng: Array, inputs: Mapping[str, Any]) -> Any:
        """Creates every variable of `module` (eval mode, the declared init method).

        Only the shapes of `inputs` matter: Flax's `lazy_init` traces the forward pass abstractly and
        executes just the variable initialisers, op by op as `init` does, so the values are bit-identical
        to `module.init`'s; the forward's own operations are neither compiled nor run. In a fresh process,
        where each operation compiles once: DAN at 32 px 10.4 -> 8.0 s, FERAtt at 64 px 22.8 -> 15.4 s, FAER
        at 224 px 12.2 -> 8.0 s (2-core CPU). Most of what remained was compiling `random.normal` per shape, which
        `fer_jax.models.initializers` now compiles per size class: at 64 px, DAN 7.6 -> 4.5 s, FERAtt 14.5 -> 6.3 s,
        MFTN-FER 17.2 -> 10.3 s, the same values bit for bit.
        """
        args = [jax.ShapeDtypeStruct(jnp.shape(inputs[k]), jnp.result_type(inputs[k])) for k in self.inputs]
        return module.lazy_init(self.init_rngs(rng), *args, **self.init_kwargs())

    def init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `module.init` besides the inputs (for callers that intercept init)."""
        return {"train": False, **({"method": self.init_method} if self.init_method else {})}

    def abstract_variables(self, module: nn.Module, image_size: tuple[int, int] | int | None = None,
                           dtype: Any = jnp.float32) -> Any:
        """Shapes and dtypes of every variable of `module`, computed without allocating them."""
        example = self.example_inputs(1, image_size, dtype)
        zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in example.items()}
        return jax.eval_shape(lambda: self.init(module, jax.random.key(0), zeros))

    def batch_inputs(self, batch: Mapping[str, Any], dtype: Any = None) -> list[Any]:
        """The positional `__call__` arguments from a batch; floating inputs cast to `dtype` if given.

        Raises:
          KeyError: the batch lacks an input the network needs (the message names it).
        """
        missing = [k for k in self.inputs if k not in batch]
        if missing:
            raise KeyError(f"the batch has {sorted(batch)} but the network takes {list(self.inputs)}")
        return [batch[k].astype(dtype) if dtype is not None and jnp.issubdtype(batch[k].dtype, jnp.floating)
                else batch[k] for k in self.inputs]

    def num_classes(self, hparams: Mapping[str, Any]) -> int | None:
        """The class count set by `hparams` (or the default), None for a network without a classifier."""
        if self.num_classes_key is None:
            return None
        return {**self.defaults, **hparams}.get(self.num_classes_key)


def frames_example(num_frames: int) -> Callable[[int, tuple[int, int], Any], dict[str, jax.ShapeDtypeStruct]]:
    """Example inputs of a network trained on groups of frames: {"frames": [B, T, H, W, 3]}."""

    def example(batch: int, size: tuple[int, int], dtype: Any) -> dict[str, jax.ShapeDtypeStruct]:
        return {"frames": jax.ShapeDtypeStruct((batch, num_frames, *size, 3), dtype)}

    return example


def output(name: str) -> Callable[[Mapping[str, Array]], Array]:
    """A `predict` that takes the output called `name` (FAER: "logits", its second output)."""

    def predict(outputs: Mapping[str, Array]) -> Array:
        return outputs[name]

    predict.__name__ = f"output_{name}"
    return predict


def sum_of(names: Sequence[str]) -> Callable[[Mapping[str, Array]], Array]:
    """A `predict` that adds several outputs (MFTN-FER: out1 + out2)."""

    def predict(outputs: Mapping[str, Array]) -> Array:
        total = outputs[names[0]]
        for name in names[1:]:
            total = total + outputs[name]
        return total

    predict.__name__ = "sum_of_" + "_".join(names)
    return predict
