"""Learnable synthetic cartoon faces: the expression (or CelebA attributes) decides what is drawn.

Expressions: each class is one distinct combination of eyes, brows and mouth (below); every class has its
own mouth, and eyes and brows repeat the signal. Nuisance variation keeps the task from being trivial:
face position, size and aspect, skin tone, background colour, background clutter, optional hair, feature
jitter (sizes, curvature, brow angles), a small rotation of the whole picture and pixel noise.

| class | eyes | brows | mouth |
|---|---|---|---|
| Neutral | normal | flat | flat line |
| Happy | closed, curved (^ ^) | flat | smile |
| Sad | normal | inner ends raised | frown |
| Surprise | wide | raised, arched | open O |
| Fear | wide | inner ends raised | wide open, flat oval |
| Disgust | narrowed | knitted (low, close, inner ends down) | pursed, small |
| Anger | narrowed | angled down to the centre (V) | clenched teeth |
| Contempt | normal | one raised | one-sided smirk |

CelebA: see `CELEBA_DRAWN`; every other attribute is an independent coin flip (a noise label).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer_jax.data import labels as label_tables

EXPRESSIONS = {  # canonical name -> (eyes, brows, mouth)
    "Neutral": ("normal", "flat", "flat"),
    "Happy": ("closed", "flat", "smile"),
    "Sad": ("normal", "inner_up", "frown"),
    "Surprise": ("wide", "raised", "open_o"),
    "Fear": ("wide", "inner_up", "wide_open"),
    "Disgust": ("narrow", "knitted", "pursed"),
    "Anger": ("narrow", "angry", "teeth"),
    "Contempt": ("normal", "one_raised", "smirk"),
}

# CelebA attributes that change the picture; the other 20 of the 40 are random noise labels.
CELEBA_DRAWN = (
    "Arched_Eyebrows", "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Eyeglasses", "Gray_Hair", "Male", "Mouth_Slightly_Open", "Narrow_Eyes", "No_Beard", "Pale_Skin",
    "Rosy_Cheeks", "Smiling", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
)
_HAIR_COLOURS = {"Black_Hair": (25, 20, 20), "Blond_Hair": (235, 205, 120), "Brown_Hair": (110, 65, 30),
                 "Gray_Hair": (165, 165, 165), None: (160, 50, 25)}  # None: red hair, no colour label
_DARK = (30, 20, 20)


class _Face:
    """Geometry of one face: `p(u, v)` maps face units (radius 1, origin at the centre) to pixels."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: np.random.Generator):
        self.draw, self.cx, self.cy, self.r, self.rng = draw, cx, cy, r, rng
        self.line = max(2, round(0.06 * r))

    def p(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.r, self.cy + v * self.r

    def box(self, u: float, v: float, hu: float, hv: float) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.p(u - hu, v - hv), self.p(u + hu, v + hv)
        return x0, y0, x1, y1

    def jitter(self, scale: float) -> float:
        return float(self.rng.uniform(-scale, scale))


def draw_background(rng: np.random.Generator, size: tuple[int, int]
                    ) -> tuple[Image.Image, tuple[int, ...]]:
    """A random plain colour with a few random shapes; returns the image and the plain colour."""
    bg = tuple(int(c) for c in rng.integers(0, 256, 3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):  # clutter
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        s = rng.uniform(0.1, 0.35) * min(size)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - s, y - s, x + s, y + s), fill=colour)
    return img, bg


def _skin(rng: np.random.Generator, pale: bool | None = None) -> tuple[int, int, int]:
    """A skin tone: any (pale=None), very light (True) or clearly not very light (False)."""
    light, dark = np.array([255, 226, 200]), np.array([120, 75, 40])
    low, high = {None: (0.0, 1.0), True: (0.0, 0.08), False: (0.2, 1.0)}[pale]
    t = rng.uniform(low, high)
    return tuple(int(c) for c in np.clip(light + t * (dark - light) + rng.normal(0, 6, 3), 0, 255))


def _eyes(f: _Face, kind: str, narrow_size: float = 1.0) -> None:
    e = 0.13 * float(f.rng.uniform(0.85, 1.15))
    dy = f.jitter(0.03)
    for side in (-1, 1):
        u, v = side * 0.36, -0.12 + dy
        if kind == "closed":
            f.draw.arc(f.box(u, v + 0.06, 1.1 * e, 0.9 * e), 200, 340, fill=_DARK, width=f.line)
        elif kind == "narrow":
            f.draw.ellipse(f.box(u, v, 1.1 * e, 0.28 * e * narrow_size), fill=_DARK)
        else:
            h = 1.15 if kind == "wide" else 0.65
            f.draw.ellipse(f.box(u, v, 1.1 * e if kind == "wide" else e, h * e), fill=(250, 250, 250),
                           outline=_DARK, width=max(1, f.line // 2))
            f.draw.ellipse(f.box(u + f.jitter(0.03), v, 0.45 * e, 0.45 * e), fill=_DARK)


def _brows(f: _Face, kind: str, thick: float = 1.0, arched: bool = False) -> None:
    width = max(2, round(0.07 * f.r * thick))
    base = -0.38 + f.jitter(0.03)
    raised_side = 1 if f.rng.random() < 0.5 else -1
    for side in (-1, 1):
        inner_dv, outer_dv, shift = {
            "flat": (0.0, 0.0, 0.0), "raised": (-0.13, -0.11, 0.0), "inner_up": (-0.12, 0.05, 0.0),
            "angry": (0.1, -0.07, 0.0), "knitted": (0.07, -0.01, -0.06),
            "one_raised": ((-0.14, -0.14, 0.0) if side == raised_side else (0.0, 0.0, 0.0)),
        }[kind]
        inner_dv, outer_dv = inner_dv + f.jitter(0.02), outer_dv + f.jitter(0.02)
        inner = f.p(side * (0.18 + shift), base + inner_dv)
        outer = f.p(side * (0.52 + shift), base + outer_dv)
        mid_lift = -0.06 if (kind == "raised" or arched) else 0.0
        mid = f.p(side * (0.35 + shift), base + (inner_dv + outer_dv) / 2 + mid_lift)
        f.draw.line([outer, mid, inner], fill=_DARK, width=width, joint="curve")


def _mouth(f: _Face, kind: str, colour: tuple[int, int, int] = (120, 30, 40), open_inside: bool = False
           ) -> None:
    w = 0.3 * float(f.rng.uniform(0.85, 1.15))
    v = 0.48 + f.jitter(0.03)
    bend = 0.16 * float(f.rng.uniform(0.8, 1.2))
    if kind == "flat":
        f.draw.line([f.p(-w, v), f.p(w, v)], fill=colour, width=f.line)
    elif kind == "smile":
        f.draw.arc(f.box(0, v - bend, w, bend * 1.6), 20, 160, fill=colour, width=f.line + 1)
    elif kind == "frown":
        f.draw.arc(f.box(0, v + bend, w, bend * 1.6), 200, 340, fill=colour, width=f.line + 1)
    elif kind == "open_o":
        f.draw.ellipse(f.box(0, v, 0.13, 0.19), fill=_DARK, outline=colour, width=f.line)
    elif kind == "wide_open":
        f.draw.ellipse(f.box(0, v, w, 0.1), fill=_DARK, outline=colour, width=f.line)
    elif kind == "pursed":
        f.draw.ellipse(f.box(0, v, 0.09, 0.075), fill=colour, outline=_DARK, width=max(1, f.line // 2))
    elif kind == "teeth":
        f.draw.rectangle(f.box(0, v, 0.8 * w, 0.08), fill=(250, 250, 250), outline=colour, width=f.line)
        f.draw.line([f.p(-0.8 * w, v), f.p(0.8 * w, v)], fill=_DARK, width=max(1, f.line // 2))
    elif kind == "smirk":
        side = 1 if f.rng.random() < 0.5 else -1
        f.draw.line([f.p(-side * w, v), f.p(0, v), f.p(side * w, v - bend)], fill=colour, width=f.line,
                    joint="curve")
    if open_inside:
        f.draw.ellipse(f.box(0, v + 0.02, 0.5 * w, 0.07), fill=_DARK)


def _finish(img: Image.Image, rng: np.random.Generator, bg: tuple[int, ...], max_angle: float = 10.0
            ) -> Image.Image:
    img = img.rotate(float(rng.uniform(-max_angle, max_angle)), resample=Image.BILINEAR, fillcolor=bg)
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, rng.uniform(2.0, 10.0), (img.height, img.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_expression(expression: str, rng: np.random.Generator, size: int = 100) -> Image.Image:
    """A size x size RGB cartoon face showing `expression` (a canonical name, `EXPRESSIONS`)."""
    eyes, brows, mouth = EXPRESSIONS[label_tables.canonical(expression)]
    img, bg = draw_background(rng, (size, size))
    draw = ImageDraw.Draw(img)
    r = float(rng.uniform(0.32, 0.42)) * size
    cx = size / 2 + float(rng.uniform(-0.07, 0.07)) * size
    cy = size / 2 + float(rng.uniform(-0.05, 0.07)) * size
    aspect = float(rng.uniform(0.78, 0.9))
    if rng.random() < 0.6:  # hair: nuisance only
        hair = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((cx - 1.0 * aspect * r, cy - 1.12 * r, cx + 1.0 * aspect * r, cy + 0.3 * r), fill=hair)
    draw.ellipse((cx - aspect * r, cy - r, cx + aspect * r, cy + r), fill=_skin(rng))
    face = _Face(draw, cx, cy, r, rng)
    _eyes(face, eyes)
    _brows(face, brows)
    _mouth(face, mouth)
    return _finish(img, rng, bg)


def draw_expression_video(expression: str, rng: np.random.Generator, size: int, num_frames: int
                          ) -> list[Image.Image]:
    """`num_frames` size x size frames of one face showing `expression`: a short clip.

    One face is drawn a little larger than the frame; each frame is a window onto it that drifts from a
    random start to a random end, shakes by about a pixel, turns by up to 3 degrees, and changes in
    brightness and noise, so frames of a video are alike but not equal.
    """
    pad = max(2, size // 8)
    face = np.asarray(draw_expression(expression, rng, size + 2 * pad), dtype=np.float32)
    start, end = rng.uniform(0, 2 * pad, 2), rng.uniform(0, 2 * pad, 2)
    frames = []
    for t in range(num_frames):
        x, y = np.clip(np.rint(start + (end - start) * t / max(num_frames - 1, 1) + rng.normal(0, 0.7, 2)),
                       0, 2 * pad).astype(int)
        window = face[y:y + size, x:x + size] + rng.normal(0, 6) + rng.normal(0, 3, (size, size, 3))
        frame = Image.fromarray(np.clip(window, 0, 255).astype(np.uint8))
        frames.append(frame.rotate(float(rng.uniform(-3, 3)), resample=Image.BILINEAR,
                                   fillcolor=tuple(int(c) for c in window[0, 0].clip(0, 255))))
    return frames


def sample_celeba_attributes(rng: np.random.Generator) -> np.ndarray:
    """40 binary attributes in official order: drawn ones with simple dependencies, the rest coin flips."""
    names = label_tables.CELEBA_ATTRIBUTES
    values = (rng.random(len(names)) < 0.5).astype(np.int32)
    a = dict(zip(names, values))
    a["Bald"] = int(rng.random() < 0.15)
    a["Blurry"] = int(rng.random() < 0.2)
    hair = None if a["Bald"] else [*_HAIR_COLOURS][int(rng.integers(0, len(_HAIR_COLOURS)))]
    for colour in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        a[colour] = int(hair == colour)
    if a["Bald"]:
        a["Bangs"] = 0
    a["No_Beard"] = 1 - a["Male"]  # the beard is how Male is drawn
    return np.array([a[n] for n in names], dtype=np.int32)


def draw_celeba(attributes: Sequence[int], rng: np.random.Generator, size: tuple[int, int] = (178, 218)
                ) -> Image.Image:
    """A CelebA-aligned-like face (width x height) drawing the attributes of `CELEBA_DRAWN`."""
    a = dict(zip(label_tables.CELEBA_ATTRIBUTES, (int(v) for v in attributes)))
    width, height = size
    img, bg = draw_background(rng, size)
    draw = ImageDraw.Draw(img)
    r = float(rng.uniform(0.3, 0.34)) * width
    cx = width / 2 + float(rng.uniform(-0.03, 0.03)) * width
    cy = height * 0.55 + float(rng.uniform(-0.03, 0.03)) * height
    hair = next((c for c in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair") if a[c]), None)
    if not a["Bald"]:
        draw.ellipse((cx - 1.05 * r, cy - 1.2 * r, cx + 1.05 * r, cy + 0.5 * r), fill=_HAIR_COLOURS[hair])
    skin = _skin(rng, pale=bool(a["Pale_Skin"]))
    draw.ellipse((cx - 0.85 * r, cy - r, cx + 0.85 * r, cy + r), fill=skin)
    face = _Face(draw, cx, cy, r, rng)
    if a["Male"]:  # beard: the lower face in a dark brown
        draw.chord(face.box(0, 0.05, 0.85, 0.95), 15, 165, fill=(70, 45, 30))
    if a["Bangs"]:
        draw.chord(face.box(0, -0.75, 0.8, 0.45), 180, 360, fill=_HAIR_COLOURS[hair])
        draw.rectangle(face.box(0, -0.6, 0.72, 0.12), fill=_HAIR_COLOURS[hair])
    if a["Rosy_Cheeks"]:
        for side in (-1, 1):
            draw.ellipse(face.box(side * 0.5, 0.2, 0.14, 0.1), fill=(235, 120, 130))
    if a["Wearing_Earrings"]:
        for side in (-1, 1):
            draw.ellipse(face.box(side * 0.9, 0.2, 0.07, 0.07), fill=(240, 200, 40))
    _eyes(face, "narrow" if a["Narrow_Eyes"] else "normal", narrow_size=1.3)
    _brows(face, "flat", thick=2.0 if a["Bushy_Eyebrows"] else 1.0, arched=bool(a["Arched_Eyebrows"]))
    if a["Eyeglasses"]:
        for side in (-1, 1):
            draw.ellipse(face.box(side * 0.36, -0.12, 0.23, 0.19), outline=(10, 10, 10), width=face.line)
        draw.line([face.p(-0.13, -0.12), face.p(0.13, -0.12)], fill=(10, 10, 10), width=face.line)
    lips = (200, 20, 40) if a["Wearing_Lipstick"] else (120, 60, 60)
    _mouth(face, "smile" if a["Smiling"] else "flat", colour=lips, open_inside=bool(a["Mouth_Slightly_Open"]))
    if a["Wearing_Hat"]:
        hat = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle(face.box(0, -0.95, 1.25, 0.07), fill=hat)
        draw.chord(face.box(0, -0.95, 0.85, 0.75), 180, 360, fill=hat)
    img = _finish(img, rng, bg, max_angle=5.0)
    return img.filter(ImageFilter.GaussianBlur(2.5)) if a["Blurry"] else img
