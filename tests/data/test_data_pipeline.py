"""grain pipelines: determinism, epochs, resume, sharding, worker count, balanced sampling, eval, bad files."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_fakes import IndexSource, indices
from fer_jax.data import pipeline
from fer_jax.errors import ConfigError, DatasetError

N = 50
LABELS = np.random.default_rng(0).integers(0, 5, N)
AUGMENT = "hflip(0.5)|to_float|erase(0.5,(0.1,0.3))"


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def train(source=None, preprocess="to_float", **kwargs):
    kwargs.setdefault("global_batch", 8)
    kwargs.setdefault("seed", 0)
    return pipeline.train_iterator(source or IndexSource(LABELS), preprocess, **kwargs)


def test_batches_shapes_dtypes_and_labels():
    batch = next(train())
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 6, 6, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], LABELS[indices(batch["image"])])
    multi = np.random.default_rng(1).integers(0, 2, (N, 40))
    batch = next(train(IndexSource(multi)))
    assert batch["label"].shape == (8, 40) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], multi[indices(batch["image"])])


def test_epochs_are_permutations_with_the_remainder_dropped():
    assert pipeline.steps_per_epoch(N, 8) == 6
    seen = np.concatenate([indices(b["image"]) for b in take(train(), 12)])
    epoch0, epoch1 = seen[:48], seen[48:]
    assert len(set(epoch0)) == 48 and len(set(epoch1)) == 48  # no repeats inside an epoch: 2 dropped
    assert not np.array_equal(epoch0, epoch1)  # reshuffled every epoch


def test_deterministic_by_seed():
    a = take(train(preprocess=AUGMENT), 8)
    b = take(train(preprocess=AUGMENT), 8)
    c = take(train(preprocess=AUGMENT, seed=1), 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_resume_from_start_step_equals_the_tail_of_a_full_run():
    full = take(train(preprocess=AUGMENT), 14)
    resumed = take(train(preprocess=AUGMENT, start_step=5), 9)  # crosses an epoch boundary (step 6)
    for x, y in zip(full[5:], resumed):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_grain_state_round_trip_with_the_same_worker_count():
    it = train(preprocess=AUGMENT)
    take(it, 3)
    state = it.get_state()
    assert isinstance(state, bytes)
    expected = take(it, 2)
    again = train(preprocess=AUGMENT)
    again.set_state(state)
    for x, y in zip(expected, take(again, 2)):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_two_processes_split_each_global_batch_exactly():
    whole = take(train(), 8)
    shards = [take(train(process_index=p, process_count=2), 8) for p in range(2)]
    for step, batch in enumerate(whole):
        ids = [indices(shard[step]["image"]) for shard in shards]
        assert len(ids[0]) == len(ids[1]) == 4 and set(ids[0]).isdisjoint(ids[1])
        assert sorted(np.concatenate(ids)) == sorted(indices(batch["image"]))


def test_shards_are_contiguous_blocks_of_the_global_batch_augmentation_included():
    whole = take(train(preprocess=AUGMENT), 8)
    shards = [take(train(preprocess=AUGMENT, process_index=p, process_count=2), 8) for p in range(2)]
    for step, batch in enumerate(whole):
        for p in range(2):  # process p holds rows [4p, 4p + 4): the global array keeps the row order
            np.testing.assert_array_equal(shards[p][step]["image"], batch["image"][4 * p:4 * p + 4])
            np.testing.assert_array_equal(shards[p][step]["label"], batch["label"][4 * p:4 * p + 4])


def test_balanced_sampler_equalises_class_frequencies():
    labels = np.array([0] * 40 + [1] * 8 + [2] * 2)
    sampler = pipeline.EpochSampler(labels, global_batch=10, seed=0, kind="balanced")
    draws = np.concatenate([sampler.epoch_order(e) for e in range(200)])  # 10,000 draws
    frequencies = np.bincount(labels[draws], minlength=3) / len(draws)
    np.testing.assert_allclose(frequencies, 1 / 3, atol=0.03)  # binomial sd 0.005
    assert not np.array_equal(sampler.epoch_order(0), sampler.epoch_order(1))  # reseeded per epoch
    assert len(set(sampler.epoch_order(0))) < 50  # with replacement
    shuffled = pipeline.EpochSampler(labels, global_batch=10, seed=0)
    np.testing.assert_array_equal(np.sort(shuffled.epoch_order(3)), np.arange(50))
    batch_labels = np.concatenate([b["label"] for b in take(train(IndexSource(labels), sampler="balanced",
                                                                   global_batch=10), 30)])
    assert np.bincount(batch_labels, minlength=3).min() > 60  # 300 draws; shuffle would give 6 of class 2


def test_eval_is_one_ordered_pass_with_padding_masked():
    it = pipeline.eval_iterator(IndexSource(LABELS), "to_float", global_batch=16)
    batches = list(it)
    assert it.num_batches == 4 and len(batches) == 4
    ids = np.concatenate([indices(b["image"]) for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(ids[:N], np.arange(N))
    np.testing.assert_array_equal(mask, np.arange(64) < N)
    assert batches[-1]["mask"].dtype == bool and batches[-1]["image"].shape == (16, 6, 6, 3)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:N], LABELS)


def test_eval_sharded_over_two_processes_covers_every_example_once():
    parts = [list(pipeline.eval_iterator(IndexSource(LABELS), "to_float", global_batch=16, process_index=p,
                                         process_count=2)) for p in range(2)]
    real = [indices(b["image"])[b["mask"]] for shard in parts for b in shard]
    np.testing.assert_array_equal(np.sort(np.concatenate(real)), np.arange(N))


def test_unreadable_images_are_replaced_reported_once_and_counted():
    source = IndexSource(LABELS, bad={3, 4})
    it = train(source, global_batch=10)
    with pytest.warns(pipeline.UnreadableImageWarning) as record:
        batches = take(it, 25)  # 5 epochs of 50: every index drawn 5 times
    ids = np.concatenate([indices(b["image"]) for b in batches])
    assert not {3, 4} & set(ids)
    assert np.sum(ids == 5) == 15  # 3 and 4 both fall through to 5, the next readable record
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, LABELS[ids])  # the label travels with the substitute
    assert it.num_substituted == 10
    assert it.unreadable_files == ["/fake/00003.jpg", "/fake/00004.jpg"]
    assert sorted(str(w.message).split()[3] for w in record) == it.unreadable_files  # once per file


def test_unreadable_images_in_evaluation_are_masked_out():
    it = pipeline.eval_iterator(IndexSource(LABELS, bad={7}), "to_float", global_batch=16)
    with pytest.warns(pipeline.UnreadableImageWarning, match="00007.jpg"):
        mask = np.concatenate([b["mask"] for b in it])
    assert mask.sum() == N - 1 and not mask[7]
    assert it.num_substituted == 1


def test_a_run_of_unreadable_images_is_a_dataset_error():
    source = IndexSource(LABELS, bad=range(N))
    with pytest.raises(DatasetError, match="50 listed images in a row"):
        pipeline.load_with_substitute(source, 0)


def test_argument_errors():
    with pytest.raises(ConfigError, match="multiple of the process count"):
        train(global_batch=9, process_count=2)
    with pytest.raises(ConfigError, match="process_index 2"):
        train(process_index=2, process_count=2)
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        train(global_batch=64)
    with pytest.raises(ConfigError, match="multi-class"):
        train(IndexSource(np.zeros((N, 3), int)), sampler="balanced")
    with pytest.raises(ConfigError, match="'shuffle' or 'balanced'"):
        train(sampler="uniform")
    with pytest.raises(ConfigError, match="unknown preprocess op"):
        train(preprocess="to_tensor")


def test_sampler_survives_pickling_for_workers():
    import pickle

    sampler = pipeline.EpochSampler(LABELS, 8, seed=3)
    first = sampler(17)
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone(17) == first and [clone(q) for q in range(48, 60)] == [sampler(q) for q in range(48, 60)]


def test_output_does_not_depend_on_the_worker_count():
    # one spawned grain worker (1-3 s start-up) against the in-process pipeline
    with_worker = train(preprocess=AUGMENT, num_workers=1)
    try:
        got = take(with_worker, 8)
    finally:
        with_worker.close()
    for x, y in zip(take(train(preprocess=AUGMENT), 8), got):
        np.testing.assert_array_equal(x["image"], y["image"])
    resumed = train(preprocess=AUGMENT, num_workers=1, start_step=5)
    try:
        np.testing.assert_array_equal(next(resumed)["image"], got[5]["image"])
    finally:
        resumed.close()


def test_infinite_stream_keeps_going():
    it = train(global_batch=25)
    assert len(list(itertools.islice(it, 30))) == 30  # 15 epochs of 2 steps
