"""What the porting layer knows about each architecture: its torch reference model, how to read its
hyperparameters from a checkpoint, how to feed the reference, and the container upstream saves it in.

Recognition is exact: for every architecture, the hyperparameters readable from the checkpoint's shapes
(and file name, where upstream encodes one there) build the reference model, and the checkpoint must have
exactly that model's keys and shapes (BatchNorm `num_batches_tracked` may be absent, as torch's loader
allows). So a checkpoint never matches a loose look-alike: a PreActResNet18 or an Emotion-FAN file is not a
ResNet18. When none fits, the error names the closest candidates and what differs.

Adding a network = one `ArchSpec` here plus its `ModelSpec` in `fer_jax.models.REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fer_jax import models
from fer_jax.errors import CheckpointError
from fer_jax.merge import matches, short
from fer_jax.models.convnext import VARIANTS as CONVNEXT_VARIANTS
from porting import reference

Shapes = Mapping[str, tuple[int, ...]]
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # torch's BatchNorm loader accepts files without them


def nchw(x: np.ndarray) -> np.ndarray:
    """NHWC -> NCHW, the default layout change from a Flax input to a torch one."""
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Another naming of the same weights (timm's ConvNeXt names for the facebookresearch ones): ordered
    regex substitutions that turn its keys into the reference's. Declared data; the one mapping rule then
    applies unchanged.

    Attributes:
      name: what the report calls it.
      rules: (pattern, replacement) pairs, applied in order to every key (`re.sub`).
    """

    name: str
    rules: tuple[tuple[str, str], ...]

    def rename(self, key: str) -> str:
        for pattern, replacement in self.rules:
            key = re.sub(pattern, replacement, key)
        return key

    def apply(self, items: Mapping[str, Any]) -> dict[str, Any]:
        """The entries under the reference's names.

        Raises:
          CheckpointError: two keys land on the same name.
        """
        out: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for key, value in items.items():
            new = self.rename(key)
            if new in out:
                raise CheckpointError(f"{self.name} layout: {origin[new]!r} and {key!r} both map to {new!r}")
            out[new], origin[new] = value, key
        return out


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Porting facts for one registered architecture.

    Attributes:
      name: key in `fer_jax.models.REGISTRY`.
      infer: shapes of a (prefix-stripped) state_dict -> the hyperparameters readable from them.
      reference: hyperparameters -> the plain-torch reference module (same state_dict keys as upstream).
      weights_key: the container entry upstream saves the weights under (None: bare state_dict).
      container_extras: other entries upstream writes next to the weights, with the values we write on export
        when the source did not have them (or a function of the hyperparameters giving them).
      from_filename: file name -> (hyperparameters upstream encodes in its file names, a note saying where
        they came from); only for hyperparameters the keys cannot show.
      torch_inputs: the Flax example inputs ({batch entry: NHWC array}) -> the reference's positional inputs.
      prefix: the key prefix of the files upstream's training writes (DataParallel's "module."), used when
        exporting a model trained here.
      layouts: other namings of the same weights that users hold (timm's ConvNeXt), recognised by their keys.
      check_size: image side of the conversion's parity batch (None: the network's upstream input size). A
        fully convolutional network with global pooling uses every weight the same way at any size, and torch's
        float64 depthwise convolutions make a 224 px check of ConvNeXt-base take a minute (64 px: seconds);
        the full-size parity is in the test suite.
      aliases: (alias module prefix, canonical prefix) pairs: modules registered twice upstream (FERAtt's
        encoder), so the state_dict holds each tensor under both names. One copy is loaded (after checking
        that both are identical) and export writes both.
      weights_by_position: upstream may save only an optimizer state whose per-parameter entries hold the
        weights (MFTN-FER's `…model_best.pth`: SAM's `old_p`), keyed by position in `model.parameters()`;
        parameters without a gradient (the network's `frozen` ones) have no entry (`from_positions`). The
        hyperparameter sets (over the defaults) whose parameter lists may name the positions; empty: not saved
        that way.
    """

    name: str
    infer: Callable[[Shapes], dict[str, Any]]
    reference: Callable[..., torch.nn.Module]
    weights_key: str | None
    container_extras: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]] = dataclasses.field(
        default_factory=dict)
    from_filename: Callable[[str], tuple[dict[str, Any], str]] | None = None
    torch_inputs: Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, ...]] = lambda ex: (nchw(ex["image"]),)
    prefix: str = ""
    layouts: tuple[Layout, ...] = ()
    check_size: int | None = None
    aliases: tuple[tuple[str, str], ...] = ()
    weights_by_position: tuple[dict[str, Any], ...] = ()

    def extras_for(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """The container entries written next to the weights of a model trained here."""
        extras = self.container_extras
        return dict(extras(hparams) if callable(extras) else extras)

    def alias_of(self, key: str) -> str | None:
        """The canonical key that `key` aliases, or None."""
        for alias, canonical in self.aliases:
            if key.startswith(alias + "."):
                return canonical + key[len(alias):]
        return None

    def with_aliases(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """`state_dict` (canonical keys) with every alias added back as the same value."""
        out = dict(state_dict)
        for alias, canonical in self.aliases:
            out.update({alias + k[len(canonical):]: v for k, v in state_dict.items() if k.startswith(canonical + ".")})
        return out


FP64_TOLERANCE = 1e-10  # float64 on both sides: a correct port agrees to ~1e-12; anything larger is semantic
FP32_FLOOR = 1e-5  # the smallest float32 bound; above it, a multiple of torch's own float32 error
FP32_FACTOR = 4.0  # ours may be as far from exact as torch is, on a different summation order: 4x leaves margin


def _resnet_infer(shapes: Shapes) -> dict[str, Any]:
    return {"num_classes": shapes["fc.weight"][0] if "fc.weight" in shapes else None}


def _dan_infer(shapes: Shapes) -> dict[str, Any]:
    heads = sum(f"cat_head{i}.sa.conv1x1.0.weight" in shapes for i in range(64))
    hp: dict[str, Any] = {"num_head": heads or 4}
    if "fc.weight" in shapes:
        hp["num_class"] = shapes["fc.weight"][0]
    return hp


def stem_hparam(pattern: str, values: Sequence[tuple[str, Any]], name: str, default: Any, default_why: str
                ) -> Callable[[str], tuple[dict[str, Any], str]]:
    """A `from_filename` reading one hyperparameter from the start of upstream's file names.

    Args:
      pattern: regex over the file name; its group 1 is looked up in `values`.
      values: (text in the file name, hyperparameter value) pairs.
      name: the hyperparameter.
      default: its value when the file name says nothing.
      default_why: why that default (shown to the user).
    """
    table = dict(values)

    def read(filename: str) -> tuple[dict[str, Any], str]:
        m = re.match(pattern, filename)
        if m and m.group(1) in table:
            return {name: table[m.group(1)]}, f"{name}={table[m.group(1)]!r} from the file name {filename!r}"
        return {name: default}, (f"{name}={default!r} assumed ({default_why}); the file name {filename!r} does "
                                 f"not say; pass --hparam {name}=... otherwise")

    return read


def _fan_infer(shapes: Shapes) -> dict[str, Any]:
    return {"num_class": shapes["pred_fc1.weight"][0]} if "pred_fc1.weight" in shapes else {}


def _frames_last(example: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Emotion-FAN's training input: NHWC frames [B, T, H, W, C] -> upstream's [B, C, H, W, T]."""
    return (np.ascontiguousarray(np.transpose(example["frames"], (0, 4, 2, 3, 1))),)


def _convnext_infer(shapes: Shapes) -> dict[str, Any]:
    """ConvNeXt width and depth from the stem and the stages, class count from the head."""
    from fer_jax.models.convnext import VARIANTS

    hp: dict[str, Any] = {}
    if "downsample_layers.0.0.weight" in shapes:
        dims = [shapes["downsample_layers.0.0.weight"][0]] + [
            shapes.get(f"downsample_layers.{i}.1.weight", (0,))[0] for i in (1, 2, 3)]
        depths = [len({k.split(".")[2] for k in shapes if k.startswith(f"stages.{s}.")}) for s in range(4)]
        found = [name for name, (d, w) in VARIANTS.items() if list(d) == depths and list(w) == dims]
        hp["variant"] = found[0] if found else f"(depths {depths}, dims {dims})"
    if "head.weight" in shapes:
        hp["num_classes"] = shapes["head.weight"][0]
    return hp


# timm's ConvNeXt names -> facebookresearch's (backbones.md section 4; what FAER's and MFTN-FER's
# `repeat_checkpoint` does), with or without the `net.` prefix those loaders expect.
TIMM_CONVNEXT = Layout("timm", (
    (r"^net\.", ""),
    (r"^stem\.", "downsample_layers.0."),
    (r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".dwconv."),
    (r"\.mlp\.fc(\d)\.", r".pwconv\1."),
    (r"^head\.fc\.", "head."),
    (r"^head\.norm\.", "norm."),
))


def _mftn_infer(shapes: Shapes) -> dict[str, Any]:
    """MFTN-FER: the backbone's variant and class count (the MsTN's widths follow the backbone's)."""
    return _convnext_infer({k[len("backbone."):]: v for k, v in shapes.items() if k.startswith("backbone.")})


def _feratt_infer(shapes: Shapes) -> dict[str, Any]:
    """FERAtt: classes from the classifier (the embedding classifier for +Rep), the reconstruction width,
    the embedding size."""
    hp: dict[str, Any] = {}
    if "netclass.classification.weight" in shapes:
        hp["num_classes"] = shapes["netclass.classification.weight"][0]
        hp["dim"] = shapes["netclass.linear.weight"][0]
    elif "netclass.linear.weight" in shapes:
        hp["num_classes"] = shapes["netclass.linear.weight"][0]
    if "reconstruction.0.conv.weight" in shapes:
        hp["num_filters"] = shapes["reconstruction.0.conv.weight"][0]
    return hp


def _feratt_reference(gmm: bool) -> Callable[..., torch.nn.Module]:
    def build(num_classes: int = 8, num_filters: int = 32, dim: int = 32) -> torch.nn.Module:
        return reference.FERAttentionNet(dim, num_classes, 3, num_filters, gmm=gmm)
    return build


def _feratt_extras(arch: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """What AttentionNeuralNetAbstract.save writes next to the weights (checkpoints.md, FERAtt): `load()`
    rebuilds the model from arch, num_classes, num_output_channels (the --dim) and num_input_channels."""
    def extras(hp: Mapping[str, Any]) -> dict[str, Any]:
        return {"epoch": 0, "arch": arch, "imsize": 64, "num_output_channels": hp.get("dim", 32),
                "num_input_channels": 3, "num_classes": hp.get("num_classes", 8)}
    return extras


def feratt_aliases() -> tuple[tuple[str, str], ...]:
    from fer_jax.models.feratt import ENCODER_ALIASES

    return tuple(ENCODER_ALIASES)


def _preact_infer(shapes: Shapes) -> dict[str, Any]:
    return {"num_classes": shapes["linear.weight"][0]} if "linear.weight" in shapes else {}


ARCHS: dict[str, ArchSpec] = {
    "dan": ArchSpec(name="dan", infer=_dan_infer, reference=reference.DAN, weights_key="model_state_dict",
                    container_extras={"iter": 0}),
    # Both attention types save the same keys; upstream names its files after the type
    # (`./model/<at_type>_<epoch>_<acc>`), so that is where it is read from.
    "emotion_fan": ArchSpec(
        name="emotion_fan", infer=_fan_infer, reference=reference.ResNetAT, weights_key="state_dict",
        container_extras={"epoch": 0, "accuracy": 0.0}, prefix="module.", torch_inputs=_frames_last,
        from_filename=stem_hparam(
            r"^(self-attention|self_relation-attention)_", (("self-attention", "self"),
                                                             ("self_relation-attention", "relation")),
            "at_type", "relation", "upstream's scripts default to --at_type 1, relation attention")),
    # Official facebookresearch files ({"model": ...}), FAER's Baseline saves ({epoch, state_dict (module.),
    # best_acc, optimizer}) and timm's weights (.pth or .safetensors, bare or under `net.`).
    "convnext": ArchSpec(name="convnext", infer=_convnext_infer, reference=reference.ConvNeXt,
                         weights_key="state_dict", container_extras={"epoch": 0}, prefix="module.",
                         layouts=(TIMM_CONVNEXT,), check_size=64),
    # FAER's save_checkpoint: {epoch, state_dict (module.), best_acc (best error), optimizer}.
    "faer": ArchSpec(name="faer", infer=_convnext_infer, reference=reference.FAER, weights_key="state_dict",
                     container_extras={"epoch": 0}, prefix="module.", check_size=64),
    # MFTN-FER's save_checkpoint: {epoch, state_dict (module.), best_acc, optimizer (SAM), recorder1, recorder}
    # (the recorders are pickled custom objects, read as inert placeholders and not converted); its
    # `…model_best.pth` holds SAM's state alone, whose `old_p` entries are the weights by position.
    "mftn": ArchSpec(name="mftn", infer=_mftn_infer, reference=reference.MFTN, weights_key="state_dict",
                     container_extras={"epoch": 0}, prefix="module.", check_size=64,
                     weights_by_position=tuple({"variant": v} for v in CONVNEXT_VARIANTS)),
    # FERAtt's AttentionNeuralNetAbstract.save: the encoder registered twice (216 aliased keys).
    "feratt": ArchSpec(name="feratt", infer=_feratt_infer, reference=_feratt_reference(False),
                       weights_key="state_dict", container_extras=_feratt_extras("ferattention"),
                       aliases=feratt_aliases()),
    "feratt_rep": ArchSpec(name="feratt_rep", infer=_feratt_infer, reference=_feratt_reference(True),
                           weights_key="state_dict", container_extras=_feratt_extras("ferattentiongmm"),
                           aliases=feratt_aliases()),
    "preactresnet18": ArchSpec(name="preactresnet18", infer=_preact_infer,
                               reference=lambda num_classes=8: reference.preactresnet18(num_classes),
                               weights_key="state_dict",
                               container_extras=lambda hp: {"epoch": 0, "arch": "preactresnet18", "imsize": 32,
                                                            "num_classes": hp.get("num_classes", 8),
                                                            "num_channels": 3}),
    "resnet18": ArchSpec(name="resnet18", infer=_resnet_infer, reference=reference.resnet18,
                         weights_key="state_dict"),
    "resnet34": ArchSpec(name="resnet34", infer=_resnet_infer, reference=reference.resnet34,
                         weights_key="state_dict"),
}


def register(spec: ArchSpec) -> ArchSpec:
    """Adds a network's porting facts (each network's module calls this once)."""
    ARCHS[spec.name] = spec
    return spec


def expected_shapes(spec: ArchSpec, hparams: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference's state_dict, built on torch's meta device (nothing allocated)."""
    with torch.device("meta"):
        model = spec.reference(**hparams)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclasses.dataclass
class KeyDiff:
    """How a checkpoint's keys and shapes differ from a reference model's."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]  # "key: file [..] vs model [..]"

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.shapes)

    def describe(self) -> str:
        parts = [f"{len(self.missing)} keys missing ({short(self.missing, 3)})" if self.missing else "",
                 f"{len(self.unexpected)} unexpected ({short(self.unexpected, 3)})" if self.unexpected else "",
                 f"{len(self.shapes)} shapes differ ({short(self.shapes, 2)})" if self.shapes else ""]
        return ", ".join(p for p in parts if p)


def key_diff(shapes: Shapes, expected: Shapes) -> KeyDiff:
    """Exact comparison of a checkpoint with a reference (optional BatchNorm counters aside)."""
    missing = [k for k in expected if k not in shapes and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k}: file {list(shapes[k])} vs model {list(v)}" for k, v in expected.items()
             if k in shapes and tuple(shapes[k]) != tuple(v)]
    return KeyDiff(missing, unexpected, wrong)


@dataclasses.dataclass
class Detection:
    """A recognised architecture, its hyperparameters, notes on where non-key ones came from, and the
    layout the file names its weights in (None: the reference's own names)."""

    spec: ArchSpec
    hparams: dict[str, Any]
    notes: list[str]
    layout: Layout | None = None

    def prepare(self, state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The checkpoint's weights under the reference's key names with one copy of every aliased tensor,
        ready for the mapping rule (a note says what was folded).

        Raises:
          CheckpointError: an alias differs from its canonical tensor (not a file upstream's model wrote).
        """
        sd = self.layout.apply(state_dict) if self.layout else dict(state_dict)
        if not self.spec.aliases:
            return sd
        out, folded = {}, 0
        for key, value in sd.items():
            canonical = self.spec.alias_of(key)
            if canonical is None:
                out[key] = value
                continue
            if canonical not in sd or not np.array_equal(np.asarray(sd[canonical]), np.asarray(value)):
                raise CheckpointError(f"{key} should be the same tensor as {canonical} (upstream registers the "
                                      "module twice) but differs; the file was not written from upstream's model")
            folded += 1
        if folded:
            pairs = ", ".join(f"{a} = {c}" for a, c in self.spec.aliases)
            note = f"{folded} aliased keys ({pairs}) identical to their canonical copies; loaded once"
            if note not in self.notes:
                self.notes.append(note)
        return out


def _candidate(spec: ArchSpec, shapes: Shapes, filename: str, overrides: Mapping[str, Any]
               ) -> tuple[Detection, KeyDiff]:
    """The best reading of `shapes` as `spec`: in the reference's own names or one of its layouts."""
    results = [_candidate_in(spec, shapes, filename, overrides)]
    for layout in spec.layouts:
        try:
            renamed = layout.apply(shapes)
        except CheckpointError:
            continue
        det, diff = _candidate_in(spec, renamed, filename, overrides)
        det.layout = layout
        if diff.size == 0:
            det.notes.append(f"{layout.name} layout: {len(shapes)} keys renamed onto {spec.name}'s names")
        results.append((det, diff))
    return min(results, key=lambda r: r[1].size)


def _candidate_in(spec: ArchSpec, shapes: Shapes, filename: str, overrides: Mapping[str, Any]
                  ) -> tuple[Detection, KeyDiff]:
    defaults = models.spec(spec.name).defaults
    notes: list[str] = []
    hparams = dict(spec.infer(shapes))
    if spec.from_filename is not None:
        named, note = spec.from_filename(filename)
        hparams.update({k: v for k, v in named.items() if k not in overrides})
        if not all(k in overrides for k in named):
            notes.append(note)
    given = {k: v for k, v in overrides.items() if k in defaults}
    hparams.update(given)
    notes += [f"{k}={v!r} from --hparam" for k, v in given.items() if spec.from_filename is not None]
    try:
        diff = key_diff(shapes, expected_shapes(spec, {**defaults, **hparams}))
    except (TypeError, ValueError, RuntimeError) as e:  # hyperparameters the reference cannot take
        diff = KeyDiff([f"(cannot build {spec.name} with {hparams}: {e})"], [], [])
    return Detection(spec, hparams, notes), diff


def parameter_shapes(spec: ArchSpec, hparams: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the reference's parameters in `model.parameters()` order (meta device)."""
    with torch.device("meta"):
        model = spec.reference(**hparams)
    return [(k, tuple(p.shape)) for k, p in model.named_parameters()]


def from_positions(positions: Mapping[int, np.ndarray], count: int, arch: str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> tuple[Detection, dict[str, np.ndarray], list[str]]:
    """Names weights kept by position (an optimizer state's copies: MFTN-FER's `…model_best.pth`).

    Position i is the i-th of `model.parameters()` of an architecture that upstream saves this way
    (`ArchSpec.weights_by_position`); the file must hold exactly the positions of the parameters that get a
    gradient, each with its parameter's shape, and lack only the network's `frozen` parameters.

    Returns:
      (detection, state_dict of the named weights, names of the parameters the file lacks).

    Raises:
      CheckpointError: no such architecture fits the positions and shapes (naming what differs).
    """
    overrides = dict(overrides or {})
    names = [arch] if arch else [n for n, s in ARCHS.items() if s.weights_by_position]
    problems = []
    for name in names:
        spec = ARCHS[name]
        if not spec.weights_by_position:
            problems.append(f"{name} is not saved this way upstream")
            continue
        defaults = models.spec(name).defaults
        given = {k: v for k, v in overrides.items() if k in defaults}
        fits = [params for candidate in spec.weights_by_position
                for params in [parameter_shapes(spec, {**defaults, **candidate, **given})]
                if len(params) == count and max(positions, default=-1) < count]
        if not fits:
            problems.append(f"{name}'s parameter counts are not the optimizer's {count}")
            continue
        # the shapes say what the candidate cannot (the class count): name the positions, read, rebuild
        named_shapes = {fits[0][i][0]: tuple(v.shape) for i, v in positions.items()}
        hparams = {**spec.infer(named_shapes), **given}
        params = parameter_shapes(spec, {**defaults, **hparams})
        wrong = [f"position {i} ({params[i][0]}) {list(v.shape)}, expected {list(params[i][1])}"
                 for i, v in positions.items() if tuple(v.shape) != params[i][1]]
        missing = [n for i, (n, _) in enumerate(params) if i not in positions]
        frozen = models.spec(name).frozen({**defaults, **hparams})
        unexpected = [n for n in missing if not matches(n.rsplit(".", 1)[0], frozen)]
        if wrong or unexpected:
            problems.append(f"{name} {hparams}: " + "; ".join(
                ([f"{len(wrong)} shapes differ, first {wrong[0]}"] if wrong else [])
                + ([f"{len(unexpected)} parameters with a gradient are absent, first {unexpected[0]}"]
                   if unexpected else [])))
            continue
        note = (f"weights by position in {name}'s parameters: {len(positions)} of {len(params)} present; the "
                f"{len(missing)} absent ones ({', '.join(frozen)}) are never used by the forward")
        return Detection(spec, hparams, [note]), {params[i][0]: v for i, v in positions.items()}, missing
    raise CheckpointError(f"an optimizer state holding weight copies by position ({len(positions)} of {count}) "
                          f"that fits no network saved that way: {'; '.join(problems) or 'none is registered'}")


def detect(shapes: Shapes, arch: str | None = None, *, filename: str = "",
           overrides: Mapping[str, Any] | None = None) -> Detection:
    """Recognises the architecture of a state_dict by its exact keys and shapes.

    Args:
      shapes: key -> shape of the prefix-stripped state_dict.
      arch: only consider this architecture (its hyperparameters are still read from the shapes).
      filename: the checkpoint's file name (some upstreams encode hyperparameters there).
      overrides: hyperparameters given by the user (`--hparam`), applied where an architecture has them.

    Raises:
      CheckpointError: unknown `arch`; no architecture fits exactly (naming the closest and what differs);
        or several fit.
    """
    if arch is not None and arch not in ARCHS:
        raise CheckpointError(f"unknown --arch {arch!r}; known: {', '.join(sorted(ARCHS))}")
    overrides = dict(overrides or {})
    names = [arch] if arch else list(ARCHS)
    results = [_candidate(ARCHS[n], shapes, filename, overrides) for n in names]
    exact = [det for det, diff in results if diff.size == 0]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise CheckpointError(f"the keys fit several architectures ({', '.join(d.spec.name for d in exact)}); "
                              "pass --arch NAME")
    ranked = sorted(results, key=lambda r: r[1].size)
    closest = "; ".join(f"{det.spec.name} {det.hparams}: {diff.describe()}" for det, diff in ranked[:2])
    if arch:
        raise CheckpointError(f"the checkpoint is not a {arch} ({len(shapes)} keys): {closest}")
    raise CheckpointError(f"unrecognised architecture ({len(shapes)} keys, starting {short(list(shapes), 3)}); "
                          f"closest: {closest}")
