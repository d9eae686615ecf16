"""One example of a source, read and preprocessed: decoding, unreadable-image substitution, augmentation draws.

The pipelines (`fer_jax.data.pipeline`, whose docstring states the rules for several images per example)
call `load_with_substitute` and then `preprocess_example` for every stream position q.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fer_jax.data import transforms
from fer_jax.data.sources import Source, UnreadableImage
from fer_jax.errors import DatasetError

# The augmentation RNG stream derived from the user seed (the pipeline's example order uses stream 0).
STREAM_AUGMENT = 1
# A run of this many unreadable examples in a row means the dataset, not one file, is broken.
MAX_CONSECUTIVE_UNREADABLE = 64


def image_refs(source: Source, example: dict[str, Any]) -> list[tuple[str, int | None, Any]]:
    """The example's images in draw order k = 0, 1, ...: (entry, index in a list entry or None, image)."""
    refs = []
    for key in source.image_entries:
        value = example[key]
        if isinstance(value, (list, tuple)):
            refs += [(key, t, item) for t, item in enumerate(value)]
        else:
            refs.append((key, None, value))
    return refs


def _decode_in_place(source: Source, example: dict[str, Any]) -> tuple[UnreadableImage, int] | None:
    """Replaces the example's image references by PIL images; returns (error, k) at the first failure."""
    for key in source.image_entries:  # copies, so that the source's own lists stay references
        if isinstance(example[key], (list, tuple)):
            example[key] = list(example[key])
    for k, (key, t, ref) in enumerate(image_refs(source, example)):
        try:
            image = source.decode(ref)
        except UnreadableImage as e:
            return e, k
        if t is None:
            example[key] = image
        else:
            example[key][t] = image
    return None


def load_with_substitute(source: Source, index: int) -> tuple[dict[str, Any], int, int]:
    """Example `index` with its images decoded, or the next example whose images all read.

    Returns:
        (example, index of the unreadable example that was replaced or -1, position k of its first
        unreadable image or -1).

    Raises:
        DatasetError: MAX_CONSECUTIVE_UNREADABLE examples in a row cannot be read.
    """
    n = len(source)
    first = None
    for offset in range(min(MAX_CONSECUTIVE_UNREADABLE, n)):
        example = dict(source.example((index + offset) % n))
        failure = _decode_in_place(source, example)
        if failure is None:
            return example, (index if offset else -1), (first[1] if offset else -1)
        first = first or failure
    error = first[0]
    raise DatasetError(f"{source.dataset}: {min(MAX_CONSECUTIVE_UNREADABLE, n)} listed images in a row from "
                       f"{error.path} cannot be read ({error.reason}); expected {source.layout}")


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int32)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return array


def _stack(source: Source, key: str, arrays: list[np.ndarray]) -> np.ndarray:
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DatasetError(f"{source.dataset}: the images of one {key!r} entry differ in size after "
                           f"preprocessing ({shapes}); resize them to one size, e.g. 'resize(h,w)'")
    return np.stack(arrays)


def preprocess_example(source: Source, example: dict[str, Any], chain: transforms.Chain, seed: int,
                       q: int) -> dict[str, np.ndarray]:
    """Runs `chain` over every image of a decoded example; other entries become arrays.

    Image k draws from a generator seeded by (seed, STREAM_AUGMENT, q) if `source.shared_draws`, so
    every image gets the same draws, else by (seed, STREAM_AUGMENT, q, k): see `fer_jax.data.pipeline`.
    """
    out, k = {}, 0
    for key in source.image_entries:
        value = example[key]
        arrays = []
        for image in (value if isinstance(value, list) else [value]):
            stream = [seed, STREAM_AUGMENT, q] if source.shared_draws else [seed, STREAM_AUGMENT, q, k]
            arrays.append(np.asarray(chain(image, np.random.default_rng(stream)), dtype=np.float32))
            k += 1
        out[key] = _stack(source, key, arrays) if isinstance(value, list) else arrays[0]
    for key, value in example.items():
        if key not in out:
            out[key] = _as_array(value)
    return out
