"""TFRecord shards give byte-identical samples and the same training batches as the files."""

import json
import os
import pathlib

import numpy as np
import pytest
from helpers import assert_same_batches

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.demo import generate_demo_dataset
from pspnet_tf.data.pipeline import build_train_dataset
from pspnet_tf.data.tfrecord import ShardedDataset, write_shards
from pspnet_tf.errors import UserError


@pytest.fixture(scope="module")
def files_and_shards(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    generate_demo_dataset(root, num_train=5, num_val=1, image_size=32)
    files = get_dataset("demo", root, "train")
    output = str(tmp_path_factory.mktemp("shards"))
    shards = write_shards(files, output, samples_per_shard=2)
    return files, output, shards


def test_shards_hold_the_split_and_its_metadata(files_and_shards):
    files, output, shards = files_and_shards
    assert [os.path.basename(path) for path in shards] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord"]
    index = json.loads(pathlib.Path(output, "train.json").read_text())
    assert index["num_samples"] == 5 and index["name"] == "demo"
    sharded = ShardedDataset(output, "train", "demo")
    assert sharded.samples == files.samples
    assert sharded.class_names == files.class_names
    np.testing.assert_array_equal(sharded.palette, files.palette)
    np.testing.assert_array_equal(sharded.label_map, files.label_map)
    assert sharded.missing_files() == []


def test_samples_are_byte_identical(files_and_shards):
    files, output, _ = files_and_shards
    sharded = ShardedDataset(output, "train")
    for index, sample in enumerate(files.samples):
        assert sharded._files[sample.image_path] == pathlib.Path(sample.image_path).read_bytes()
        for from_files, from_shards in zip(files.load(index), sharded.load(index)):
            assert from_files.tobytes() == from_shards.tobytes()


def test_training_batches_match(files_and_shards):
    files, output, _ = files_and_shards
    options = {"crop_size": (16, 16), "scale": (40, 32), "global_batch_size": 2, "epochs": 1,
               "seed": 5}
    from_files = list(build_train_dataset(files, **options))
    from_shards = list(build_train_dataset(ShardedDataset(output, "train"), **options))
    assert len(from_files) == len(from_shards) == 2
    assert_same_batches(from_files, from_shards)


def test_existing_shards_are_never_overwritten_and_mismatches_are_named(files_and_shards):
    files, output, _ = files_and_shards
    before = pathlib.Path(output, "train.json").read_text()
    with pytest.raises(UserError, match="train.json exists"):
        write_shards(files, output)
    assert pathlib.Path(output, "train.json").read_text() == before
    with pytest.raises(UserError, match="holds dataset demo, not voc"):
        ShardedDataset(output, "train", "voc")
    with pytest.raises(UserError, match="val.json not found"):
        ShardedDataset(output, "val")
