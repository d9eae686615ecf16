"""An in-memory source whose images encode their index exactly, for pipeline tests.

It lives in its own module so that grain's spawned workers can import it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fer_jax.data.sources import MULTICLASS, MULTILABEL, ImageSource, UnreadableImage


class IndexSource(ImageSource):
    """N records; record i decodes to a 6x6 image with pixel (0, 0) = (i % 256, i // 256, 7).

    Args:
        labels: int [N] (multi-class) or int [N, K] (multi-label).
        bad: indices whose image is "corrupt" (decode raises UnreadableImage).
    """

    def __init__(self, labels, bad=()):
        labels = np.asarray(labels)
        multi = labels.ndim == 2
        super().__init__(dataset="Fake", root="/fake", split="train",
                         paths=[f"/fake/{i:05d}.jpg" for i in range(len(labels))], labels=labels,
                         class_names=[f"c{k}" for k in range(labels.shape[1] if multi else labels.max() + 1)],
                         task=MULTILABEL if multi else MULTICLASS, layout="nothing")
        self.bad = frozenset(int(b) for b in bad)

    def decode(self, item):
        index = item["index"]
        if index in self.bad:
            raise UnreadableImage(item["path"], "corrupt")
        return Image.fromarray(record_pixels(index))


def record_pixels(index: int) -> np.ndarray:
    pixels = np.random.default_rng(index).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    pixels[0, 0] = (index % 256, index // 256, 7)
    return pixels


def indices(images: np.ndarray) -> np.ndarray:
    """Recovers record indices from a batch made with the 'to_float' preprocess (no other op)."""
    pixel = np.rint(images[:, 0, 0] * 255).astype(int)
    return pixel[:, 0] + 256 * pixel[:, 1]


class FramesSource(IndexSource):
    """Example i = {"frames": records i, i+1, i+2 (mod N), "label", "video": i % 5}, decoded as IndexSource."""

    image_entries = ("frames",)
    mask_fill = {"video": -1}

    def __init__(self, labels, bad=(), shared_draws=False):
        super().__init__(labels, bad)
        self.shared_draws = shared_draws

    def example(self, index):
        refs = [self[(index + t) % len(self)] for t in range(3)]
        return {"frames": refs, "label": self.labels[index], "video": index % 5}


def read_back(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(record index, mirrored?) of each image [..., 6, 6, 3] made with 'hflip(p)|to_float' from IndexSource."""
    pixels = np.rint(images * 255).astype(np.uint8).reshape(-1, 6, 6, 3)
    found, mirrored = [], []
    for image in pixels:
        for flipped, candidate in ((False, image), (True, image[:, ::-1])):
            index = int(candidate[0, 0, 0]) + 256 * int(candidate[0, 0, 1])
            if np.array_equal(candidate, record_pixels(index)):
                found.append(index)
                mirrored.append(flipped)
                break
        else:
            raise AssertionError("an image is neither a record nor its mirror")
    shape = images.shape[:-3]
    return np.array(found).reshape(shape), np.array(mirrored).reshape(shape)
