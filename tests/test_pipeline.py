"""tf.data pipelines: shapes, determinism, exact resumption, epoch coverage, error surfacing."""

import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_batches

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.demo import generate_demo_dataset
from pspnet_tf.data.pipeline import (
    BadSampleSkipper,
    build_eval_dataset,
    build_train_dataset,
    steps_per_epoch,
    train_sample_order,
)
from pspnet_tf.errors import UserError

CROP = (24, 32)
BATCH = 3
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
LOWEST, HIGHEST = (0 - MEAN) / STD, (255 - MEAN) / STD


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(str(root), num_train=10, num_val=3, image_size=32)
    return str(root)


@pytest.fixture(scope="module")
def train_set(demo_root):
    return get_dataset("demo", demo_root, "train")


def _batches(dataset, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    options = {"crop_size": CROP, "scale": (128, 32), "global_batch_size": BATCH, "epochs": 2,
               "seed": 3, **kwargs}
    return [(image.numpy(), label.numpy())
            for image, label in build_train_dataset(dataset, **options)]


@pytest.fixture(scope="module")
def full_run(train_set):
    return _batches(train_set)


def test_sample_order_covers_each_epoch_without_duplicates():
    order = train_sample_order(11, steps_per_epoch=3, global_batch_size=3, epochs=4, seed=7)
    assert order.shape == (36,)
    epochs = order.reshape(4, 9)
    for epoch in epochs:
        assert len(set(epoch.tolist())) == 9 and set(epoch.tolist()) <= set(range(11))
    assert len({tuple(epoch) for epoch in epochs}) == 4
    np.testing.assert_array_equal(order, train_sample_order(11, 3, 3, 4, seed=7))
    assert not np.array_equal(order, train_sample_order(11, 3, 3, 4, seed=8))
    np.testing.assert_array_equal(order[:18], train_sample_order(11, 3, 3, 2, seed=7))


def test_batches_have_the_promised_shapes_and_values(train_set, full_run):
    assert len(full_run) == steps_per_epoch(train_set, BATCH) * 2 == 6
    for image, label in full_run:
        assert image.shape == (BATCH, *CROP, 3) and image.dtype == np.float32
        assert label.shape == (BATCH, *CROP) and label.dtype == np.int32
        assert set(np.unique(label)) <= set(range(train_set.num_classes)) | {255}
        # Normalised 0..255 pixels, or exactly 0 where padded.
        assert np.all(image >= LOWEST - 1e-4) and np.all(image <= HIGHEST + 1e-4)
    assert len(set(np.unique(np.concatenate([label for _, label in full_run])))) > 3


def test_same_seed_same_batches_other_seed_other_batches(train_set, full_run):
    again = _batches(train_set)
    assert_same_batches(full_run, again)
    other = _batches(train_set, seed=4)
    assert not np.array_equal(full_run[0][0], other[0][0])


def test_resuming_at_step_k_reproduces_the_uninterrupted_run(train_set, full_run):
    resumed = _batches(train_set, start_step=3, end_step=5)
    assert len(resumed) == 2
    assert_same_batches(full_run[3:5], resumed)


def test_a_sample_seen_again_gets_a_new_augmentation(full_run):
    """Seeds follow the slot in the schedule, not the sample, so epochs differ."""
    order = train_sample_order(10, steps_per_epoch=3, global_batch_size=BATCH, epochs=2, seed=3)
    sample = next(index for index in order[:9] if index in order[9:])
    slots = [int(np.flatnonzero(order[:9] == sample)[0]),
             9 + int(np.flatnonzero(order[9:] == sample)[0])]
    first, second = (full_run[slot // BATCH][0][slot % BATCH] for slot in slots)
    assert not np.array_equal(first, second)


def test_step_range_outside_the_schedule_is_rejected(train_set):
    with pytest.raises(ValueError, match="outside"):
        build_train_dataset(train_set, crop_size=CROP, scale=(128, 32), global_batch_size=BATCH,
                            epochs=2, seed=0, start_step=7)


def test_batch_larger_than_the_split_is_a_user_error(train_set):
    with pytest.raises(UserError, match=r"split train has 10 images, fewer than the 11 .*"
                       r"\(batch_size x gradient_accumulation_steps\); lower either$"):
        build_train_dataset(train_set, crop_size=CROP, scale=(128, 32), global_batch_size=11,
                            epochs=1, seed=0)


def test_a_broken_sample_surfaces_with_its_file_name(tmp_path):
    root = tmp_path / "broken"
    generate_demo_dataset(str(root), num_train=4, num_val=1, image_size=32)
    (root / "JPEGImages" / "train_00002.jpg").write_bytes(b"broken")
    dataset = get_dataset("demo", str(root), "train")
    with pytest.raises(tf.errors.OpError, match="train_00002.jpg"):
        _batches(dataset, global_batch_size=4, epochs=1)


def test_skip_bad_samples_keeps_full_deterministic_batches(tmp_path):
    root = tmp_path / "broken"
    generate_demo_dataset(str(root), num_train=4, num_val=1, image_size=32)
    good = get_dataset("demo", str(root), "train")
    replacement = good.load(3)
    (root / "JPEGImages" / "train_00002.jpg").write_bytes(b"broken")
    dataset = get_dataset("demo", str(root), "train")
    skipper = BadSampleSkipper(dataset)
    for got, want in zip(skipper.load(2), replacement):  # the next good sample stands in
        np.testing.assert_array_equal(got, want)
    assert skipper.bad_samples == {2}
    first = _batches(dataset, global_batch_size=4, epochs=2, skip_bad_samples=True)
    again = _batches(dataset, global_batch_size=4, epochs=2, skip_bad_samples=True)
    assert [image.shape[0] for image, _ in first] == [4, 4]
    assert_same_batches(first, again)


def test_skipper_wraps_around_and_fails_when_nothing_loads(tmp_path):
    root = tmp_path / "broken"
    generate_demo_dataset(str(root), num_train=2, num_val=1, image_size=32)
    (root / "JPEGImages" / "train_00001.jpg").write_bytes(b"broken")
    skipper = BadSampleSkipper(get_dataset("demo", str(root), "train"))
    np.testing.assert_array_equal(skipper.load(1)[1], skipper.load(0)[1])
    (root / "JPEGImages" / "train_00000.jpg").write_bytes(b"broken")
    with pytest.raises(UserError, match="no sample of split train can be loaded"):
        BadSampleSkipper(get_dataset("demo", str(root), "train")).load(0)


@pytest.mark.parametrize("workers, replicas_per_worker", [(2, 1), (2, 2), (4, 1)])
def test_data_sharding_splits_each_global_batch_across_workers(train_set, workers,
                                                               replicas_per_worker):
    """What tf.distribute hands each worker under the DATA policy, without real workers: the
    global batch rebatched into one piece per replica, then every workers-th piece."""
    data = build_train_dataset(train_set, crop_size=CROP, scale=(128, 32), global_batch_size=4,
                               epochs=2, seed=3)
    assert (data.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)
    replicas = workers * replicas_per_worker
    pieces = data.rebatch([4 // replicas] * replicas)
    views = [[label.numpy() for _, label in pieces.shard(workers, worker)]
             for worker in range(workers)]
    for step, (_, global_label) in enumerate(data):
        received = [views[worker][step * replicas_per_worker + replica]
                    for worker in range(workers) for replica in range(replicas_per_worker)]
        # Worker w's replica r holds piece r * workers + w of the global batch.
        order = [replica * workers + worker for worker in range(workers)
                 for replica in range(replicas_per_worker)]
        expected = np.split(global_label.numpy(), replicas)
        for piece, index in zip(received, order):
            np.testing.assert_array_equal(piece, expected[index])


def test_eval_dataset_yields_original_samples_in_order(demo_root):
    dataset = get_dataset("demo", demo_root, "val")
    items = list(build_eval_dataset(dataset))
    assert len(items) == len(dataset.samples)
    for index, (image, label) in enumerate(items):
        expected_image, expected_label = dataset.load(index)
        assert image.dtype == tf.uint8 and label.dtype == tf.int32
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(label, expected_label)
    assert os.path.basename(dataset.samples[0].image_path) == "val_00000.jpg"
