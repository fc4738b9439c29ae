"""TFRecord shards of a split, for datasets kept on network or cloud storage.

Each record holds a sample's image and label FILES as they are on disk (still encoded), so
decoding them gives exactly the samples the files give. A split becomes
`<split>-NNNNN-of-NNNNN.tfrecord` shards plus `<split>.json` (class names, palette, label
map, shard names), so reading needs nothing from the original data root. Reading loads the
encoded shards into memory once (a few large sequential reads instead of one small read per
file), which keeps the random-access, resumable training order of pipeline.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.data.images import decode_image
from pspnet_tf.data.layouts import Sample
from pspnet_tf.errors import ParameterError, UserError

DEFAULT_SAMPLES_PER_SHARD = 1000


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error}); run "
                        "pspnet-verify on the dataset first") from None


def _index_path(directory: str, split: str) -> str:
    return os.path.join(directory, f"{split}.json")


def write_shards(dataset: SegmentationDataset, output_dir: str,
                 samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD) -> list[str]:
    """Writes `dataset`'s split as shards in `output_dir`; returns the shard paths.

    An existing index for the split is never overwritten.
    """
    index_path = _index_path(output_dir, dataset.split)
    if os.path.exists(index_path):
        raise ParameterError("{path} exists; choose another {output_dir} or move it away "
                             "(nothing was changed)", path=index_path)
    os.makedirs(output_dir, exist_ok=True)
    count = len(dataset.samples)
    num_shards = max(1, -(-count // samples_per_shard))
    names = [f"{dataset.split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
             for shard in range(num_shards)]
    for shard, name in enumerate(names):
        with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
            for sample in dataset.samples[shard * samples_per_shard:
                                          (shard + 1) * samples_per_shard]:
                features = {"image": _bytes_feature(_read_file(sample.image_path)),
                            "label": _bytes_feature(_read_file(sample.label_path)),
                            "image_path": _bytes_feature(sample.image_path.encode()),
                            "label_path": _bytes_feature(sample.label_path.encode())}
                example = tf.train.Example(features=tf.train.Features(feature=features))
                writer.write(example.SerializeToString())
    index = {"name": dataset.name, "split": dataset.split, "num_samples": count,
             "class_names": list(dataset.class_names), "palette": dataset.palette.tolist(),
             "label_map": dataset.label_map.tolist(), "shards": names}
    with open(f"{index_path}.tmp", "w") as handle:
        json.dump(index, handle)
    os.replace(f"{index_path}.tmp", index_path)  # the index last: shards without one are unused
    return [os.path.join(output_dir, name) for name in names]


class ShardedDataset(SegmentationDataset):
    """A split read from shards: same samples, names and checks, files served from memory."""

    def __init__(self, directory: str, split: str, expected_name: str | None = None) -> None:
        index_path = _index_path(directory, split)
        if not os.path.isfile(index_path):
            raise ParameterError("{path} not found; write the shards with "
                                 "pspnet-prepare tfrecord or fix {tfrecord_dir}",
                                 path=index_path)
        with open(index_path) as handle:
            index = json.load(handle)
        if expected_name not in (None, index["name"]):
            raise ParameterError("{path} holds dataset {name}, not {expected}; fix {dataset} or "
                                 "{tfrecord_dir}", path=index_path, name=index["name"],
                                 expected=expected_name)
        files: dict[str, bytes] = {}
        samples = []
        shards = [os.path.join(directory, name) for name in index["shards"]]
        try:
            for record in tf.data.TFRecordDataset(shards).as_numpy_iterator():
                example = tf.train.Example.FromString(record).features.feature
                image_path = example["image_path"].bytes_list.value[0].decode()
                label_path = example["label_path"].bytes_list.value[0].decode()
                files[image_path] = example["image"].bytes_list.value[0]
                files[label_path] = example["label"].bytes_list.value[0]
                samples.append(Sample(image_path, label_path))
        except tf.errors.OpError as error:
            raise UserError(f"cannot read the shards listed in {index_path} ({error.message}); "
                            "write them again with prepare tfrecord") from None
        if len(samples) != index["num_samples"]:
            raise UserError(f"{index_path} lists {index['num_samples']} samples but its shards "
                            f"hold {len(samples)}; write them again with prepare tfrecord")
        super().__init__(index["name"], split, tuple(index["class_names"]),
                         np.array(index["palette"]), samples, np.array(index["label_map"]))
        self._files = files

    def read_image(self, path: str) -> np.ndarray:
        return decode_image(self._files[path], path)

    def read_label(self, path: str) -> np.ndarray:
        return self.decode_label(self._files[path], path)

    def missing_files(self) -> list[str]:
        return [path for sample in self.samples
                for path in (sample.image_path, sample.label_path) if path not in self._files]
