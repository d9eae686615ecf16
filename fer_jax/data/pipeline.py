"""grain input pipelines: an infinite, resumable training stream and an exact one-pass evaluation.

Training stream (grain Dataset API, shared/reference/jax_platform.md section 4):

    MapDataset.range(inf).map(position_of_local(i)).map(example(q)).batch(b)[start_step:]
        .to_iter_dataset(ReadOptions(...)).mp_prefetch(...)            # mp_prefetch only if num_workers > 0

- q is the position in the global stream. Epoch e covers q in [e*S*B, (e+1)*S*B) with S = N // B steps
  and B the global batch: each epoch draws an order of the N examples (a permutation for "shuffle";
  N weighted draws with replacement for "balanced") and keeps its first S*B, so the remainder of each
  epoch is dropped and every batch has a static shape.
- Which example q is, and the RNG of its augmentation, are functions of (seed, q) only. So the output
  does not depend on the number of workers or read threads, and a run of P processes sees exactly the
  global batches of a 1-process run: process p takes the contiguous rows [p*b, (p+1)*b) of each global
  batch (sharding after the global shuffle), so the global array that
  `jax.make_array_from_process_local_data` assembles has the rows in the same order as one process's
  batch, and reductions over it round the same way.
- Resuming is slicing: `start_step=k` starts at global batch k, whatever the worker count.

Examples and batches: a batch carries every entry of the source's examples (`Source.example`, see
`fer_jax.data.sources`), stacked on a new leading axis: {"image": [b, H, W, C], "label": [b]} for image
datasets, {"frames": [b, T, H, W, C], "label": [b], "video": [b]} for groups of video frames. Images
(the entries in `source.image_entries`; a list entry is a sequence) go through the preprocessing chain
one by one and come out float32; other entries become arrays (integers int32, floats float32).

Random draws of several images: the images of example q are numbered k = 0, 1, ... in
`source.image_entries` order (a list entry contributes one k per element). If `source.shared_draws`,
every image is transformed with a fresh generator seeded by (seed, q), so all of them get the same draws
(the same flip, the same crop window for images of one size): what an input and its clean target need.
Otherwise image k uses a generator seeded by (seed, q, k), so each draws independently: Emotion-FAN's
per-frame flips. A single-image example uses (seed, q) either way.

Unreadable images: an example with a listed image that is missing or corrupt is replaced by the next
example whose images all read (index + 1, + 2, ...: deterministic), the substitution is counted on the
iterator (`num_substituted`, `unreadable_files`) and a warning names the file once. In evaluation the
replacement is masked out instead (and `source.mask_fill` overwrites entries such as "video" on masked
rows), so metrics count only real, readable examples.
"""

from __future__ import annotations

import json
import sys
import threading
import warnings

import grain
import numpy as np

from fer_jax.data import transforms
from fer_jax.data.examples import image_refs, load_with_substitute, preprocess_example
from fer_jax.data.sources import MULTICLASS, Source
from fer_jax.errors import ConfigError, DatasetError

# The example order's RNG stream derived from the user seed (augmentation uses examples.STREAM_AUGMENT).
_STREAM_ORDER = 0


class UnreadableImageWarning(UserWarning):
    """A listed image could not be read and was replaced (training) or masked out (evaluation)."""


def steps_per_epoch(source_len: int, global_batch: int) -> int:
    """Full global batches per epoch; the remainder of each epoch is dropped."""
    return source_len // global_batch


class EpochSampler:
    """Maps a stream position q to a source index.

    Epoch e = q // (S*B) draws its order from (seed, e): a permutation ("shuffle") or N draws with
    replacement with per-example weight 1 / count(class) ("balanced", DAN's ImbalancedDatasetSampler).
    """

    def __init__(self, labels: np.ndarray, global_batch: int, seed: int, kind: str = "shuffle"):
        if kind not in ("shuffle", "balanced"):
            raise ConfigError(f"sampler must be 'shuffle' or 'balanced', got {kind!r}")
        self.n = len(labels)
        self.kept = steps_per_epoch(self.n, global_batch) * global_batch
        self.seed = int(seed)
        self.kind = kind
        self.probs = None
        if kind == "balanced":
            labels = np.asarray(labels)
            if labels.ndim != 1:
                raise ConfigError("sampler='balanced' needs single-label (multi-class) data")
            counts = np.bincount(labels)
            weights = 1.0 / counts[labels]
            self.probs = weights / weights.sum()
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The source indices of epoch `epoch`, in stream order (length N; the first S*B are used)."""
        with self._lock:
            order = self._cache.get(epoch)
        if order is None:
            rng = np.random.default_rng([self.seed, _STREAM_ORDER, epoch])
            if self.kind == "shuffle":
                order = rng.permutation(self.n)
            else:
                order = rng.choice(self.n, size=self.n, replace=True, p=self.probs)
            with self._lock:
                if len(self._cache) >= 2:  # worker threads sit in at most two adjacent epochs
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = order
        return order

    def __call__(self, q: int) -> int:
        epoch, position = divmod(int(q), self.kept)
        return int(self.epoch_order(epoch)[position])


class TrainExample:
    """Stream position q -> the example's entries + "_bad", "_bad_image"; the draws depend on (seed, q)."""

    def __init__(self, source: Source, preprocess: transforms.Chain, sampler: EpochSampler, seed: int):
        self.source, self.preprocess, self.sampler, self.seed = source, preprocess, sampler, int(seed)

    def __call__(self, q: int) -> dict[str, np.ndarray]:
        example, bad, position = load_with_substitute(self.source, self.sampler(q))
        out = preprocess_example(self.source, example, self.preprocess, self.seed, int(q))
        out.update(_bad=np.int32(bad), _bad_image=np.int32(position))
        return out


class EvalExample:
    """Position q of the padded pass -> the example's entries + "mask" (False on padding), "_bad", ..."""

    def __init__(self, source: Source, preprocess: transforms.Chain):
        self.source, self.preprocess = source, preprocess

    def __call__(self, q: int) -> dict[str, np.ndarray]:
        real = q < len(self.source)
        example, bad, position = load_with_substitute(self.source, q % len(self.source))
        out = preprocess_example(self.source, example, self.preprocess, 0, int(q))
        keep = real and bad < 0
        if not keep:  # e.g. video = -1: a padded or replaced row belongs to no video
            out.update({key: np.full_like(out[key], value) for key, value in self.source.mask_fill.items()})
        out.update(mask=np.bool_(keep), _bad=np.int32(bad if real else -1),
                   _bad_image=np.int32(position if real else -1))
        return out


class DataIterator:
    """Iterator of batches that reports and counts unreadable images; wraps a grain iterator.

    `get_state`/`set_state` return/accept the grain state as JSON bytes, so
    `grain.checkpoint.CheckpointSave(it)` works (the state is tied to the worker count; resuming with
    `start_step` is not).
    """

    def __init__(self, dataset: grain.IterDataset, source: Source, num_batches: int | None):
        self._iterator = iter(dataset)
        self.source = source
        self.num_batches = num_batches
        self.num_substituted = 0
        self._unreadable: set[str] = set()

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        bad, position = batch.pop("_bad"), batch.pop("_bad_image")
        for index, k in zip(bad[bad >= 0].tolist(), position[bad >= 0].tolist()):
            self.num_substituted += 1
            path = str(image_refs(self.source, self.source.example(index))[k][2]["path"])
            if path not in self._unreadable:
                self._unreadable.add(path)
                warnings.warn(f"{self.source.dataset}: unreadable image {path} skipped (its example is "
                              "replaced by the next readable one in training, masked out in evaluation)",
                              UnreadableImageWarning, stacklevel=2)
        return batch

    @property
    def unreadable_files(self) -> list[str]:
        """Files found unreadable so far, sorted."""
        return sorted(self._unreadable)

    def get_state(self) -> bytes:
        return json.dumps(self._iterator.get_state()).encode()

    def set_state(self, state: bytes | dict) -> None:
        self._iterator.set_state(json.loads(state) if isinstance(state, (bytes, str)) else state)

    def start_prefetch(self) -> None:
        self._iterator.start_prefetch()

    def close(self) -> None:
        self._iterator.close()


def _ensure_absl_flags_parsed() -> None:
    # grain 0.2.18's mp_prefetch reads an absl flag and fails if flags are unparsed (jax_platform.md,
    # pitfall 7). Under absl.app.run they are parsed already; elsewhere parse defaults only.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(sys.argv[:1], known_only=True)


def _to_iterator(ds: grain.MapDataset, num_workers: int, read_threads: int, prefetch: int) -> grain.IterDataset:
    # Explicit ReadOptions: grain's default buffers 500 elements, here 500 batches (pitfall 8).
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
    if num_workers > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2),
                            worker_init_fn=_ignore_sigint)
    return it


class BlockShard:
    """This process's i-th stream position -> global position q: rows [p*b, (p+1)*b) of each global batch."""

    def __init__(self, global_batch: int, local_batch: int, process_index: int):
        self.global_batch, self.local_batch, self.offset = global_batch, local_batch, process_index * local_batch

    def __call__(self, i: int) -> int:
        step, row = divmod(int(i), self.local_batch)
        return step * self.global_batch + self.offset + row


def _local_batch(global_batch: int, process_index: int, process_count: int) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} is not in [0, {process_count})")
    if global_batch < 1 or global_batch % process_count:
        raise ConfigError(f"global batch {global_batch} must be a positive multiple of the process count "
                          f"{process_count}")
    return global_batch // process_count


def _parse(preprocess: str | transforms.Chain) -> transforms.Chain:
    return transforms.parse(preprocess) if isinstance(preprocess, str) else preprocess


def train_iterator(source: Source, preprocess: str | transforms.Chain, *, global_batch: int, seed: int,
                   start_step: int = 0, sampler: str = "shuffle", process_index: int = 0,
                   process_count: int = 1, num_workers: int = 0, read_threads: int = 2,
                   prefetch: int = 4) -> DataIterator:
    """Infinite training batches of the source's example entries, b rows each.

    E.g. `{"image": float32 [b, H, W, C], "label": int32 [b] or [b, 40]}` for an image source, or
    `{"frames": float32 [b, T, H, W, C], "label": int32 [b], "video": int32 [b]}` for video frame groups.

    Args:
        source: a dataset source (`create_source`).
        preprocess: a preprocessing string (`fer_jax.data.transforms`) or a parsed chain.
        global_batch: batch size over all processes; each process gets b = global_batch // process_count.
        seed: determines the example order and every augmentation.
        start_step: number of global batches already consumed (resume).
        sampler: "shuffle", or "balanced" (weights 1 / class count, N draws with replacement per epoch).
        process_index, process_count: this process's shard (e.g. jax.process_index(), jax.process_count()).
        num_workers: grain worker processes (0: read threads in this process only).
        read_threads: threads per process reading and augmenting batches.
        prefetch: batches buffered per process.

    Raises:
        DatasetError: the split holds fewer examples than one global batch.
        ConfigError: bad batch, process or sampler arguments.
    """
    b = _local_batch(global_batch, process_index, process_count)
    if steps_per_epoch(len(source), global_batch) == 0:
        raise DatasetError(f"{source.dataset}: the {source.split!r} split has {len(source)} examples, fewer than "
                           f"one global batch of {global_batch}")
    if start_step < 0:
        raise ConfigError(f"start_step must be >= 0, got {start_step}")
    if sampler == "balanced" and source.task != MULTICLASS:
        raise ConfigError(f"sampler='balanced' needs a multi-class dataset; {source.dataset} is {source.task}")
    order = EpochSampler(source.labels, global_batch, seed, sampler)
    ds = (grain.MapDataset.range(sys.maxsize).map(BlockShard(global_batch, b, process_index))
          .map(TrainExample(source, _parse(preprocess), order, seed)))
    ds = ds.batch(b, drop_remainder=True)[start_step:]
    return DataIterator(_to_iterator(ds, num_workers, read_threads, prefetch), source, None)


def eval_iterator(source: Source, preprocess: str | transforms.Chain, *, global_batch: int,
                  process_index: int = 0, process_count: int = 1, num_workers: int = 0, read_threads: int = 2,
                  prefetch: int = 4) -> DataIterator:
    """One pass over `source` in order: the example entries plus `"mask": bool [b]`; the last batch is padded.

    E.g. `{"image", "label", "mask"}` for an image source, `{"image", "label", "video", "mask"}` for the
    frames of a video source. `mask` is False on padding and on unreadable images, so sums over masked
    examples are exact; on those rows `source.mask_fill` overwrites entries (video sources: "video" = -1).
    Arguments are as for `train_iterator`; `iterator.num_batches` is the number of batches.
    """
    b = _local_batch(global_batch, process_index, process_count)
    num_batches = -(-len(source) // global_batch)
    ds = (grain.MapDataset.range(num_batches * b).map(BlockShard(global_batch, b, process_index))
          .map(EvalExample(source, _parse(preprocess))))
    ds = ds.batch(b, drop_remainder=True)
    return DataIterator(_to_iterator(ds, num_workers, read_threads, prefetch), source, num_batches)


def _ignore_sigint(worker_index: int, worker_count: int) -> None:
    """Workers leave Ctrl-C to the training process, which stops them after saving (one line, no worker
    traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
