"""Image transforms with torchvision's semantics, configured by big_vision-style preprocessing strings.

Every random op takes an explicit `np.random.Generator` (there is no global RNG), so the pipelines can
make augmentation a function of (seed, example position) only.

Preprocessing strings
---------------------
A string is a chain of ops separated by `|`, applied left to right to an RGB `PIL.Image`:

    "resize(224,224)|hflip(0.5)|random_apply(0.2,'rotate(20)','crop(224,padding=32)')|to_float|normalize('imagenet')|erase(0.5,(0.02,0.25))"

An op is `name` or `name(args)`, where the arguments are Python literals (numbers, strings, tuples,
None; read with `ast.literal_eval`), positional or by keyword. Whitespace is ignored. Ops that act on
images (resize, rotate, crop, affine) come before `to_float`, ops on float arrays (normalize, erase)
after it, `hflip` works on both; the chain must contain `to_float`, so the output is always float32
HWC. An unknown op, bad arguments or a wrong order raise a one-line `ConfigError`.

| op | torchvision equivalent |
|---|---|
| `resize(h, w)` / `resize(s)` | `Resize((h, w))` / `Resize(s)` (shorter side to s), PIL bilinear (antialiased) |
| `hflip(p=0.5)` | `RandomHorizontalFlip(p)` |
| `rotate(degrees)` | `RandomRotation(degrees)`: angle ~ U(-d, d) (or U(lo, hi) for a pair), nearest, fill 0, centre, no expand |
| `crop(size, padding=0)` | `RandomCrop(size, padding)`: constant 0 padding (int, (lr, tb) or (l, t, r, b)), then a random window |
| `affine(degrees, translate=None, scale=None)` | `RandomAffine(degrees, translate, scale)`: nearest, fill 0, no shear |
| `random_apply(p, 'op|op', ...)` | `RandomApply([...], p)`: one coin for the whole group; each argument is itself a chain |
| `to_float` | `ToTensor()`: float32 in [0, 1], but HWC (we are NHWC) |
| `normalize(mean, std)` | `Normalize(mean, std)`; `normalize('imagenet')` and `normalize('half')` (0.5, 0.5) name the constants |
| `erase(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)` | `RandomErasing(p, scale, ratio, value)` on the float image (after normalize, as torchvision) |

The strings that reproduce DAN's recipes (shared/reference/dan.md, section 4) are `DAN_RAFDB_TRAIN`,
`DAN_AFFECTNET_TRAIN` and `DAN_EVAL` below.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from fer_jax.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NAMED_STATS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5,) * 3, (0.5,) * 3)}

DAN_RAFDB_TRAIN = ("resize(224,224)|hflip(0.5)|random_apply(0.2,'rotate(20)','crop(224,padding=32)')"
                   "|to_float|normalize('imagenet')|erase(0.5,(0.02,0.25))")
DAN_AFFECTNET_TRAIN = ("resize(224,224)|hflip(0.5)"
                       "|random_apply(0.7,'affine(20,translate=(0.2,0.2),scale=(0.8,1.0))')"
                       "|to_float|normalize('imagenet')|erase(0.5,(0.02,0.33))")
DAN_EVAL = "resize(224,224)|to_float|normalize('imagenet')"

IMAGE, ARRAY, ANY = "image", "array", "any"
_REGISTRY: dict[str, Callable[..., "Op"]] = {}


def register(name: str):
    """Registers an op class under `name` for preprocessing strings."""
    def wrap(cls):
        _REGISTRY[name] = cls
        return cls
    return wrap


class Op:
    """One preprocessing step: `op(x, rng) -> x`. `accepts` is IMAGE, ARRAY or ANY (type preserved)."""
    accepts = IMAGE
    produces: str | None = None  # None: same type as the input

    def __call__(self, x: Any, rng: np.random.Generator) -> Any:
        raise NotImplementedError


def _pair(value: Any, what: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    raise ConfigError(f"{what} must be a number or a pair of numbers, got {value!r}")


def _degrees(degrees: Any, op: str) -> tuple[float, float]:
    """torchvision's degrees argument: d >= 0 means U(-d, d); a pair (lo, hi) means U(lo, hi)."""
    lo, hi = _pair(degrees, f"{op}: degrees")
    if isinstance(degrees, (int, float)):
        _check(lo >= 0, f"{op}: a single degrees value must be >= 0, got {degrees!r}")
        return -lo, lo
    _check(lo <= hi, f"{op}: degrees must be (low, high) with low <= high, got {degrees!r}")
    return lo, hi


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@register("resize")
class Resize(Op):
    def __init__(self, h: int, w: int | None = None):
        _check(isinstance(h, int) and h > 0 and (w is None or isinstance(w, int) and w > 0),
               f"resize: sizes must be positive ints, got {(h, w)!r}")
        self.h, self.w = h, w

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing; one size means the shorter side, as torchvision."""
        if self.w is not None:
            return self.w, self.h
        if width <= height:
            return self.h, int(self.h * height / width)
        return int(self.h * width / height), self.h

    def __call__(self, img, rng):
        size = self.output_size(*img.size)
        return img if size == img.size else img.resize(size, Image.BILINEAR)


@register("hflip")
class HFlip(Op):
    accepts = ANY

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, x, rng):
        if not rng.random() < self.p:
            return x
        if isinstance(x, Image.Image):
            return x.transpose(Image.FLIP_LEFT_RIGHT)
        return np.ascontiguousarray(x[:, ::-1])


@register("rotate")
class Rotate(Op):
    def __init__(self, degrees: float | Sequence[float]):
        self.low, self.high = _degrees(degrees, "rotate")

    def __call__(self, img, rng):
        angle = float(rng.uniform(self.low, self.high))
        return img.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=(0,) * len(img.getbands()))


def _padding(padding: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) from torchvision's int / (lr, tb) / (l, t, r, b) forms."""
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding, (tuple, list)) and all(isinstance(p, int) for p in padding):
        if len(padding) == 2:
            return padding[0], padding[1], padding[0], padding[1]
        if len(padding) == 4:
            return tuple(padding)
    raise ConfigError(f"crop: padding must be an int, (lr, tb) or (l, t, r, b), got {padding!r}")


@register("crop")
class RandomCrop(Op):
    def __init__(self, size: int | Sequence[int], padding: Any = 0):
        h, w = _pair(size, "crop: size")
        _check(h == int(h) and w == int(w) and h > 0 and w > 0, f"crop: size must be positive ints, got {size!r}")
        self.h, self.w = int(h), int(w)
        self.padding = _padding(padding)

    def __call__(self, img, rng):
        left, top, right, bottom = self.padding
        if any(self.padding):
            padded = Image.new(img.mode, (img.width + left + right, img.height + top + bottom), 0)
            padded.paste(img, (left, top))
            img = padded
        if img.height < self.h or img.width < self.w:
            raise ValueError(f"crop: {self.h}x{self.w} window larger than the padded "
                             f"{img.height}x{img.width} image")
        i = int(rng.integers(0, img.height - self.h + 1))
        j = int(rng.integers(0, img.width - self.w + 1))
        return img.crop((j, i, j + self.w, i + self.h))


def inverse_affine_matrix(center: tuple[float, float], angle: float, translate: tuple[float, float],
                          scale: float) -> list[float]:
    """PIL AFFINE coefficients (output -> input pixel) of torchvision's affine without shear.

    The forward map is T(translate) . C(center) . R(angle) . S(scale) . C^-1 with R = [[cos, -sin],
    [sin, cos]] in image coordinates (y down, so a positive angle turns clockwise on screen).
    """
    rot = math.radians(angle)
    cos, sin = math.cos(rot), math.sin(rot)
    m = [cos / scale, sin / scale, 0.0, -sin / scale, cos / scale, 0.0]
    cx, cy = center
    tx, ty = translate
    m[2] = m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] = m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


@register("affine")
class RandomAffine(Op):
    def __init__(self, degrees: float | Sequence[float], translate: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None):
        self.degrees = _degrees(degrees, "affine")
        self.translate = None if translate is None else _pair(translate, "affine: translate")
        self.scale = None if scale is None else _pair(scale, "affine: scale")

    def __call__(self, img, rng):
        angle = float(rng.uniform(*self.degrees))
        tx = ty = 0
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * img.width, self.translate[1] * img.height
            tx = int(round(float(rng.uniform(-max_dx, max_dx))))
            ty = int(round(float(rng.uniform(-max_dy, max_dy))))
        scale = 1.0 if self.scale is None else float(rng.uniform(*self.scale))
        matrix = inverse_affine_matrix((img.width * 0.5, img.height * 0.5), angle, (tx, ty), scale)
        return img.transform(img.size, Image.AFFINE, matrix, Image.NEAREST,
                             fillcolor=(0,) * len(img.getbands()))


@register("to_float")
class ToFloat(Op):
    produces = ARRAY

    def __call__(self, img, rng):
        return np.asarray(img, dtype=np.float32) / np.float32(255)


@register("normalize")
class Normalize(Op):
    accepts = ARRAY

    def __init__(self, mean: str | Sequence[float], std: Sequence[float] | None = None):
        if isinstance(mean, str):
            _check(mean in _NAMED_STATS and std is None,
                   f"normalize: named constants are {sorted(_NAMED_STATS)}, got {mean!r}")
            mean, std = _NAMED_STATS[mean]
        _check(std is not None, "normalize: give (mean, std) or a name such as 'imagenet'")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, x, rng):
        return (x - self.mean) / self.std


@register("erase")
class RandomErasing(Op):
    accepts = ARRAY

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                 ratio: Sequence[float] = (0.3, 3.3), value: float = 0):
        self.p = float(p)
        self.scale = _pair(scale, "erase: scale")
        self.log_ratio = tuple(math.log(r) for r in _pair(ratio, "erase: ratio"))
        _check(isinstance(value, (int, float)), f"erase: value must be a number, got {value!r}")
        self.value = float(value)

    def __call__(self, x, rng):
        if not rng.random() < self.p:
            return x
        height, width = x.shape[:2]
        for _ in range(10):  # torchvision: up to 10 attempts, then the image is left as it is
            area = height * width * float(rng.uniform(*self.scale))
            aspect = math.exp(float(rng.uniform(*self.log_ratio)))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < height and w < width:
                i = int(rng.integers(0, height - h + 1))
                j = int(rng.integers(0, width - w + 1))
                x = x.copy()
                x[i:i + h, j:j + w] = self.value
                return x
        return x


class Chain(Op):
    """A parsed preprocessing string; `chain(image, rng)`. Its repr is the canonical string."""

    def __init__(self, ops: Sequence[Op], spec: str):
        self.ops = list(ops)
        self.spec = spec
        self.accepts, self.produces = _check_types(self.ops, spec)

    def __call__(self, x, rng):
        for op in self.ops:
            x = op(x, rng)
        return x

    def __repr__(self) -> str:
        return f"Chain({self.spec!r})"


@register("random_apply")
class RandomApply(Op):
    def __init__(self, p: float, *chains: str):
        _check(len(chains) > 0, "random_apply: give a probability and at least one op")
        self.p = float(p)
        self.chain = _parse_chain("|".join(chains))
        _check(self.chain.produces is None, "random_apply: the group must not change the image type")
        self.accepts = self.chain.accepts

    def __call__(self, x, rng):
        return self.chain(x, rng) if rng.random() < self.p else x


def _check_types(ops: Sequence[Op], spec: str) -> tuple[str, str | None]:
    """Checks ops are in image -> to_float -> array order; returns the chain's (accepts, produces)."""
    first = next((op.accepts for op in ops if op.accepts != ANY), ANY)
    current = first
    for op in ops:
        if op.accepts not in (ANY, current):
            raise ConfigError(f"preprocess {spec!r}: {type(op).__name__} needs {op.accepts} input but gets "
                              f"{current} (image ops go before to_float, array ops after it)")
        current = op.produces or current
    return first, (None if current == first else current)


def _split_top_level(spec: str) -> list[str]:
    """Splits at '|' outside quotes and brackets."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(spec):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return parts


def _parse_op(text: str) -> Op:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"preprocess op {text.strip()!r} is not 'name' or 'name(args)'") from None
    call = node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])
    if not isinstance(call.func, ast.Name):
        raise ConfigError(f"preprocess op {text.strip()!r} is not 'name' or 'name(args)'")
    name = call.func.id
    if name not in _REGISTRY:
        raise ConfigError(f"unknown preprocess op {name!r} in {text.strip()!r}; known: {sorted(_REGISTRY)}")
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (ValueError, TypeError, SyntaxError):
        raise ConfigError(f"preprocess op {text.strip()!r}: arguments must be Python literals") from None
    try:
        return _REGISTRY[name](*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"preprocess op {text.strip()!r}: {e}") from None


def _parse_chain(spec: str) -> Chain:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"preprocess must be a non-empty string, got {spec!r}")
    return Chain([_parse_op(part) for part in _split_top_level(spec)], spec)


def parse(spec: str) -> Chain:
    """Parses a preprocessing string into `chain(image: PIL.Image, rng) -> float32 [H, W, C]`.

    Raises:
        ConfigError: unknown op, bad arguments, wrong op order, or no `to_float`.
    """
    chain = _parse_chain(spec)
    if chain.accepts == ARRAY or chain.produces != ARRAY:
        raise ConfigError(f"preprocess {spec!r} must take an image and contain to_float")
    return chain


# FERAtt's operations (cv_resize, gray, feratt_compose) register themselves where preprocessing strings are
# parsed without a dataset (predict.py).
from fer_jax.data import composition as _composition  # noqa: E402,F401
