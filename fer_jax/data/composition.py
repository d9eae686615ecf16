"""FERAtt's synthetic composition: a face composited onto a background picture, the data FERAtt trains on.

Re-expresses pedrodiamel/ferattention `torchlib/transforms/ferrender.py` (`Generator`), the sample assembly
of `torchlib/datasets/fersynthetic.py` (`SecuencialSyntheticFaceDataset`) and the two transform chains of
`aug.py` (shared/reference/feratt.md, sections 4 and 5), with OpenCV, drawing every random number from one
`np.random.Generator`, so a composite is a pure function of (face, background, generator state).

One sample, in draw order:

1. Face (the 128x128 "dark" face: face on black) padded by 10 px to 148x148; face mask = non-zero pixels;
   per channel (v - min) / max * 255 over the face (upstream divides by the max, not the range).
2. Geometry, drawn first: scale 1 + factor * U(-1, 1) about the centre (pad or centre-crop back to 148),
   horizontal flip with p 0.5, then three separate warps as upstream: rotation U(-angle, angle) about the
   centre, translation translation * 148 * U(-1, 1) per axis, and an affine warp that moves three corners
   by warp * 148 * U(-1, 1) per coordinate (bilinear for the face, nearest for its mask, black borders).
3. Background window: a 148x148 window of the picture crop-resized to 640x1024 (dz = 50 U, dx, dy as
   upstream, so a window may run past the border and is then stretched), normalised per channel.
4. Relighting in Lab (`illuminate`): the face's L is scaled by w = mean L(background) / mean L(face) under
   the face mask, w clipped to [0.5, 1.5], then L clipped to [10, 90].
5. The mask is cleaned (7x7 close, 7x7 erode, hole filling with a 7x7 structure) and the two images made:
   x_org = mask * face (the clean face at the same geometry, no background, no relighting) and
   x_img = background * (1 - mask) + mask * relit face; both converted to gray.
6. x_img ("image"): resized to 48x48, CLAHE (clip 2.0, 8x8 tiles, on Y of YUV) with p `clahe`, Gaussian noise
   sigma `sigma` on L of Lab plus a Gaussian blur of window 3, 5 or 7 with p `noise_blur`, resized to 64x64;
   x_org: resized to 64x64. Both gray replicated to 3 channels; all resizing is OpenCV bilinear.

In the data layer, a `*_synthetic` dataset (`fer_jax.data.feratt_sources`) decodes each example's "image"
and "x_org" entries to `FaceComposition`s, and the preprocessing op `feratt_compose` turns each into its
image. The source has `shared_draws`, so both entries of an example get generators seeded alike: the
geometry is drawn first and equal for both, and "x_org" stops drawing after it. Augmentation draws thus
depend on (pipeline seed, stream position), fresh each epoch and exactly resumable.

Where this differs from upstream, on purpose: the normalised face is clipped at 0 outside the face (upstream
casts negative values to uint8, which wraps; only the mask's rim can show it); the background window is
sampled from the picture in one bilinear warp (the same sample positions as resize-crop-then-slice, without
building the 640x1024 frame); an empty warped face mask keeps w = 1 instead of dividing by zero. Not
reproduced: the 2-channel mask and the 6 warp parameters upstream also returns (only its STN variants use them).

Preprocessing ops registered here (`fer_jax.data.transforms` strings): `feratt_compose(size=64, low=48,
clahe=0.25, noise_blur=0.25, sigma=0.005)`, and for real faces as FERAtt evaluates them (`get_transforms_det`)
`cv_resize(h, w=None)` (OpenCV bilinear, no antialiasing) and `gray` (RGB -> gray -> 3 channels):
"cv_resize(64)|gray|to_float".
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fer_jax.data import transforms
from fer_jax.errors import ConfigError, DatasetError

FACE_SIZE = 128  # the dark face is resized to this side (ferrender.Generator.generate: imsize = 128)
PAD = 10
CANVAS = FACE_SIZE + 2 * PAD
BACKGROUND_FRAME = (640, 1024)  # (height, width) of the crop-resized background picture
BACKGROUND_ZOOM = 50.0  # dz: how far (px) a window may run past the frame's right and bottom border
COMPOSITION = "composition"  # the transforms type of a FaceComposition
ROLES = ("image", "x_org")
_MISUSE = ("the examples of a FERAtt synthetic dataset are face compositions: start the preprocessing "
           "string with 'feratt_compose', e.g. 'feratt_compose(64)|to_float'")


@dataclasses.dataclass(frozen=True)
class GeneratorOptions:
    """Upstream's `Generator(iluminate, angle, translation, warp, factor)`; defaults are train.py's values."""

    angle: float = 30.0  # max rotation, degrees
    translation: float = 0.2  # max shift per axis, fraction of the canvas side
    warp: float = 0.1  # max corner displacement per coordinate, fraction of the canvas side
    factor: float = 0.2  # scale in 1 +- factor
    illuminate: bool = True

    def __post_init__(self):
        for name in ("angle", "translation", "warp", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.factor >= 1:
            raise ConfigError(f"factor must be < 1 (the scale is 1 +- factor), got {self.factor!r}")
        if not isinstance(self.illuminate, bool):
            raise ConfigError(f"illuminate must be True or False, got {self.illuminate!r}")


class FaceComposition:
    """What a synthetic example's image entry decodes to; `feratt_compose` makes the image.

    Attributes:
        face: uint8 [H, W] or [H, W, 3], the dark face (face on black).
        background: uint8 [h, w, 3] picture, or None for upstream's plain canvas; unused for "x_org".
        role: "image" (the composite x_img) or "x_org" (the clean face).
        options: the generator's options.
        name: the face's name, for error messages.
    """

    __slots__ = ("face", "background", "role", "options", "name")

    def __init__(self, face: np.ndarray, background: np.ndarray | None, role: str, options: GeneratorOptions,
                 name: str = "face"):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.face, self.background, self.role, self.options, self.name = face, background, role, options, name

    def __array__(self, *args, **kwargs):
        raise ConfigError(_MISUSE)

    def __getattr__(self, name: str):  # an image op applied to a composition: say what to do instead
        if name.startswith("__"):
            raise AttributeError(name)
        raise ConfigError(_MISUSE)


# --- Geometry ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Geometry:
    """One draw of the face's random geometry (upstream: scale, hflip, then rotation, translation, warp)."""

    factor: float
    flip: bool
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray]  # rotation, translation, warp: 2x3, applied in turn


def draw_geometry(rng: np.random.Generator, options: GeneratorOptions, size: int = CANVAS) -> Geometry:
    """Draws scale, flip, rotation, translation and warp (pytvision `get_geometric_random_transform`)."""
    factor = 1.0 + options.factor * rng.uniform(-1.0, 1.0)
    flip = bool(rng.random() < 0.5)
    theta = rng.uniform(-options.angle, options.angle)
    rotation = cv2.getRotationMatrix2D((size // 2, size // 2), -theta, 1.0)
    shift = options.translation * size * rng.uniform(-1.0, 1.0, 2)
    translation = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    dx, dy = options.warp * size * rng.uniform(-1.0, 1.0, 3), options.warp * size * rng.uniform(-1.0, 1.0, 3)
    src = np.float32([[0, 0], [0, size], [size, 0]])
    warp = cv2.getAffineTransform(src, src + np.float32(np.stack([dx, dy], 1)))
    return Geometry(float(factor), flip, (rotation, translation, warp))


def _scale(image: np.ndarray, factor: float, interpolation: int) -> np.ndarray:
    """pytvision `F.scale`: resize by `factor`, then pad (black) or centre-crop back to the input size."""
    h, w = image.shape[:2]
    scaled = cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation)
    hn, wn = scaled.shape[:2]
    by, bx = abs(hn - h) / 2.0, abs(wn - w) / 2.0
    if factor < 1:
        return cv2.copyMakeBorder(scaled, math.floor(by), math.ceil(by), math.floor(bx), math.ceil(bx),
                                  cv2.BORDER_CONSTANT, value=0)
    top, left = math.floor(by), math.floor(bx)
    return scaled[top:top + h, left:left + w]


def apply_geometry(face: np.ndarray, mask: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The face (bilinear) and its uint8 mask (nearest) under `geometry`, black outside."""
    face = _scale(face, geometry.factor, cv2.INTER_LINEAR)
    mask = _scale(mask, geometry.factor, cv2.INTER_NEAREST)
    if geometry.flip:
        face, mask = face[:, ::-1], mask[:, ::-1]
    size = (face.shape[1], face.shape[0])
    for matrix in geometry.matrices:  # three warps in turn, as upstream (each one crops at the border)
        face = cv2.warpAffine(np.ascontiguousarray(face), matrix, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = cv2.warpAffine(np.ascontiguousarray(mask), matrix, size, flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return face, mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.binary_fill_holes(mask, structure=np.ones((7, 7)))`, with OpenCV.

    With that structure, background pixels connect when they are at most 3 px apart (Chebyshev), and those
    within 3 px of the image border are outside. Such chains are exactly the 8-connected components of the
    background dilated by 3x3; a background pixel not chained to the border band is a hole.
    """
    background = ~mask
    count, components = cv2.connectedComponents(cv2.dilate(background.astype(np.uint8), np.ones((3, 3), np.uint8)),
                                                connectivity=8)
    band = np.zeros(mask.shape, bool)
    band[:3], band[-3:], band[:, :3], band[:, -3:] = True, True, True, True
    reaches_border = np.zeros(count, bool)
    reaches_border[components[band & background]] = True
    return ~(reaches_border[components] & background)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Upstream's `filtermask`: 7x7 close, 7x7 erode, fill holes; bool."""
    element = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, element)
    return fill_holes(cv2.erode(closed, element) == 1)


# --- Photometry ----------------------------------------------------------------------------------------

def normalize(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Upstream's `norm`: per channel (v - min) / max * 255 over the mask (or everything), as uint8.

    Values below 0 (outside the mask) are clipped to 0 (upstream's uint8 cast wraps them); a channel
    whose max is 0 stays 0.
    """
    where = None if mask is None else mask.astype(np.uint8)
    extremes = [cv2.minMaxLoc(np.ascontiguousarray(image[..., c]), where)[:2] for c in range(image.shape[2])]
    low, high = np.float64(extremes).T
    values = np.arange(256, dtype=np.float64)[:, None] - low
    scaled = np.divide(values, high, out=np.zeros_like(values), where=high > 0) * 255.0
    table = np.clip(scaled, 0, 255).astype(np.uint8)
    return cv2.LUT(image, table[None])  # uint8 in, so the map is a per-channel lookup table


def prepare_face(face: np.ndarray, name: str = "face") -> tuple[np.ndarray, np.ndarray]:
    """The dark face resized to 128, padded to 148, normalised: (uint8 [148, 148, 3], bool mask [148, 148]).

    Raises:
        DatasetError: the face has no non-black pixel.
    """
    if face.ndim == 2:
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
    if face.shape[:2] != (FACE_SIZE, FACE_SIZE):
        face = cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
    face = cv2.copyMakeBorder(face, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
    mask = face[..., 0] >= 1  # upstream: mask = image < 1.0 marks the black surround; channel 0 decides
    if not mask.any():
        raise DatasetError(f"{name}: the face image is black, there is no face to composite")
    return normalize(face, mask), mask


def _crop_frame(height: int, width: int) -> tuple[float, float, float, float]:
    """pytvision `resize_image(..., 640, 1024, 'crop')` as (sx, sy, x0, y0): resized = source scaled by
    (sx, sy) per axis, then the 640x1024 frame starts at (x0, y0) of it."""
    frame_h, frame_w = BACKGROUND_FRAME
    wr, hr = width / frame_w, height / frame_h
    if wr == hr:
        return frame_w / width, frame_h / height, 0.0, 0.0
    if wr > hr:
        rw = int(round(width / hr))
        return rw / width, frame_h / height, float(int(round((rw - frame_w) / 2.0))), 0.0
    rh = int(round(height / wr))
    return frame_w / width, rh / height, 0.0, float(int(round((rh - frame_h) / 2.0)))


def background_window(background: np.ndarray | None, rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """A random size x size window of the picture, as upstream cuts it; uint8 [size, size, 3].

    Upstream crop-resizes the picture to 640x1024, draws dz = 50 U, dx = int(U ((1024 + dz) - size)),
    dy = int(U ((640 + dz) - size)), slices [dy:dy+size, dx:dx+size] (shorter past the border) and resizes
    the slice to size x size. Here the same bilinear sample positions are read from the picture directly.
    """
    frame_h, frame_w = BACKGROUND_FRAME
    dz = BACKGROUND_ZOOM * rng.random()
    dx = int(rng.random() * ((frame_w + dz) - size))
    dy = int(rng.random() * ((frame_h + dz) - size))
    if background is None:
        return np.full((size, size, 3), 255, np.uint8)
    kx, ky = (min(dx + size, frame_w) - dx) / size, (min(dy + size, frame_h) - dy) / size
    sx, sy, x0, y0 = _crop_frame(*background.shape[:2])
    # out (u, v) -> frame: dx + (u + 0.5) kx - 0.5 -> resized: + x0 -> picture: (. + 0.5) / sx - 0.5
    matrix = np.array([[kx / sx, 0.0, (dx + x0 + 0.5 * kx) / sx - 0.5],
                       [0.0, ky / sy, (dy + y0 + 0.5 * ky) / sy - 0.5]])
    return cv2.warpAffine(background, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _lightness(pixels: np.ndarray) -> np.ndarray:
    """Lab L (0..100) of uint8 RGB pixels [n, 3]."""
    return cv2.cvtColor(pixels[None].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[0, :, 0]


def relight(face: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Upstream's `ligthnorm`: the face's Lab L scaled to the background's brightness under `mask`.

    Returns float32 [H, W, 3] in [0, 255]. A gray face is relit through a 256-level table (the conversion
    is per pixel, so the table holds the same values).
    """
    under = mask.astype(bool)
    weight = 1.0
    if under.any():
        ratio = float(_lightness(background[under]).mean()) / (float(_lightness(face[under]).mean())
                                                                + np.finfo(np.float64).eps)
        weight = min(max(ratio, 0.5), 1.5)
    gray = np.array_equal(face[..., 0], face[..., 1]) and np.array_equal(face[..., 0], face[..., 2])
    source = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2) if gray else face
    lab = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lab[..., 0] = np.clip(lab[..., 0] * weight, 10.0, 90.0)
    lit = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0) * np.float32(255.0)
    return lit[0][face[..., 0]] if gray else lit


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def face_geometry(face: np.ndarray, rng: np.random.Generator, options: GeneratorOptions = GeneratorOptions(),
                  name: str = "face") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 and the mask of step 5: (warped face uint8 [148, 148, 3], its uint8 mask, the cleaned bool mask)."""
    prepared, mask = prepare_face(face, name)
    warped, warped_mask = apply_geometry(prepared, mask.astype(np.uint8), draw_geometry(rng, options))
    return warped, warped_mask, clean_mask(warped_mask)


def generate(face: np.ndarray, background: np.ndarray | None, rng: np.random.Generator,
             options: GeneratorOptions = GeneratorOptions(), role: str = "image", name: str = "face",
             geometry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Steps 1-5 of the module docstring: gray uint8 [148, 148] images and the cleaned mask.

    Args:
        face: the dark face, uint8 [H, W] or [H, W, 3].
        background: uint8 [h, w, 3] picture, or None (upstream's plain canvas).
        rng: draws the geometry, then (role "image") the background window.
        role: "x_org" stops after the geometry and returns {"x_org", "mask"}; "image" also returns "x_img".
        name: the face's name, for error messages.
        geometry: `face_geometry(face, rng, options)` if already computed (rng then stands after its draws).
    """
    warped, warped_mask, cleaned = geometry or face_geometry(face, rng, options, name)
    out = {"x_org": _gray(np.where(cleaned[..., None], warped, 0).astype(np.uint8)), "mask": cleaned}
    if role == "x_org":
        return out
    back = normalize(background_window(background, rng))
    lit = relight(warped, warped_mask, back) if options.illuminate else warped
    out["x_img"] = _gray(np.where(cleaned[..., None], lit, back).astype(np.uint8))
    return out


# --- The transform chains of aug.py --------------------------------------------------------------------

def _rgb(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def _clahe(image: np.ndarray) -> np.ndarray:
    yuv = cv2.cvtColor(image, cv2.COLOR_RGB2YUV)
    yuv[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(yuv[..., 0]))
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)


def _noise_blur(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """pytvision `ToGaussianBlur`: Gaussian noise on Lab's L (in [0, 1]), then a 3, 5 or 7 px Gaussian blur."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    light = lab[..., 0].astype(np.float32) / 255.0 + rng.normal(0.0, sigma, lab.shape[:2])
    lab[..., 0] = (np.clip(light, 0.0, 1.0) * 255.0).astype(np.uint8)
    window = int(rng.integers(1, 4)) * 2 + 1
    return cv2.GaussianBlur(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), (window, window), 0)


def augment(x_img: np.ndarray, rng: np.random.Generator, size: int = 64, low: int = 48, clahe: float = 0.25,
            noise_blur: float = 0.25, sigma: float = 0.005) -> np.ndarray:
    """`get_transforms_aug`: gray [148, 148] -> uint8 [size, size, 3] via the low-resolution image."""
    image = _rgb(_resize(x_img, low))
    if rng.random() < clahe:
        image = _clahe(image)
    if rng.random() < noise_blur:
        image = _noise_blur(image, rng, sigma)
    return _rgb(_gray(_resize(image, size)))


def deterministic(x_org: np.ndarray, size: int = 64) -> np.ndarray:
    """`get_transforms_det`: gray [148, 148] -> uint8 [size, size, 3]."""
    return _rgb(_resize(x_org, size))


def compose(face: np.ndarray, background: np.ndarray | None, rng: np.random.Generator,
            options: GeneratorOptions = GeneratorOptions(), *, size: int = 64, low: int = 48, clahe: float = 0.25,
            noise_blur: float = 0.25, sigma: float = 0.005) -> dict[str, np.ndarray]:
    """One synthetic sample: {"image": x_img, "x_org": x_org}, uint8 [size, size, 3] each (gray as RGB).

    Equal to what `feratt_compose` makes of the two entries of an example whose generators are seeded
    like `rng`.
    """
    parts = generate(face, background, rng, options)
    return {"image": augment(parts["x_img"], rng, size, low, clahe, noise_blur, sigma),
            "x_org": deterministic(parts["x_org"], size)}


# --- Preprocessing ops ---------------------------------------------------------------------------------

def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _probability(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value!r}")
    return float(value)


class _LastGeometry(threading.local):
    entry: tuple | None = None


_LAST_GEOMETRY = _LastGeometry()


def _shared_geometry(composition: FaceComposition, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """`face_geometry`, computed once for the two entries of an example.

    The pipeline renders an example's entries one after the other in one thread, from generators in the
    same state (`shared_draws`). So the last result of this thread is reused when the face, the options and
    the generator's state match, and the generator is advanced past the geometry's draws as if it had drawn.
    """
    state = rng.bit_generator.state
    last = _LAST_GEOMETRY.entry
    if last is not None and last[0] is composition.face and last[1] == composition.options and last[2] == state:
        rng.bit_generator.state = last[3]
        return last[4]
    geometry = face_geometry(composition.face, rng, composition.options, composition.name)
    _LAST_GEOMETRY.entry = (composition.face, composition.options, state, rng.bit_generator.state, geometry)
    return geometry


@transforms.register("feratt_compose")
class FerattCompose(transforms.Op):
    """A `FaceComposition` -> its image (x_img for "image", x_org for "x_org"), a size x size gray RGB image."""

    accepts = COMPOSITION
    produces = transforms.IMAGE

    def __init__(self, size: int = 64, low: int = 48, clahe: float = 0.25, noise_blur: float = 0.25,
                 sigma: float = 0.005):
        self.size = _positive_int(size, "feratt_compose: size")
        self.low = _positive_int(low, "feratt_compose: low")
        self.clahe = _probability(clahe, "feratt_compose: clahe")
        self.noise_blur = _probability(noise_blur, "feratt_compose: noise_blur")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
            raise ConfigError(f"feratt_compose: sigma must be a number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def __call__(self, composition, rng):
        if not isinstance(composition, FaceComposition):
            raise ConfigError("feratt_compose needs the examples of a FERAtt synthetic dataset (e.g. "
                              f"'ck_synthetic'), got a {type(composition).__name__}")
        parts = generate(composition.face, composition.background, rng, composition.options, composition.role,
                         composition.name, _shared_geometry(composition, rng))
        if composition.role == "x_org":
            out = deterministic(parts["x_org"], self.size)
        else:
            out = augment(parts["x_img"], rng, self.size, self.low, self.clahe, self.noise_blur, self.sigma)
        return Image.fromarray(out)


@transforms.register("cv_resize")
class CvResize(transforms.Op):
    """pytvision's `ToResize(..., 'squash')`: OpenCV bilinear resize to h x w (w defaults to h), no antialiasing."""

    def __init__(self, h: int, w: int | None = None):
        self.h = _positive_int(h, "cv_resize: h")
        self.w = self.h if w is None else _positive_int(w, "cv_resize: w")

    def __call__(self, img, rng):
        array = np.asarray(img)
        if array.shape[:2] == (self.h, self.w):
            return img
        return Image.fromarray(cv2.resize(array, (self.w, self.h), interpolation=cv2.INTER_LINEAR))


@transforms.register("gray")
class Gray(transforms.Op):
    """pytvision's `ToGrayscale`: RGB -> gray (OpenCV's 0.299 R + 0.587 G + 0.114 B) -> 3 equal channels."""

    def __call__(self, img, rng):
        return Image.fromarray(_rgb(_gray(np.asarray(img.convert("RGB")))))
