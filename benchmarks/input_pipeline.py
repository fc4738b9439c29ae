"""Training input throughput: pspnet_tf's tf.data pipeline vs a plain per-sample cv2 + numpy loop.

    python benchmarks/input_pipeline.py [--images=64] [--batches=16] [--rounds=3]

Both run the training recipe of docs/recipe.md (keep-ratio rescale to (2048, 512) x U(0.5,
2), 512x512 crop with cat_max_ratio 0.75, flip, photometric distortion, normalise, pad) on
VOC-sized JPEGs (500x375) that it generates, on the same cores, in alternating rounds (the
CPU may be shared, so the best round of each counts). Prints images/s of each, the CPU time
each spends per image (all threads; less sensitive to other jobs than images/s), and a last
line `ratio=<pipeline / reference>`.
"""

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from pspnet_tf.cli.app import use_one_inter_op_thread_on_cpu
from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.pipeline import build_train_dataset
from pspnet_tf.data.transforms import IMAGE_MEAN, IMAGE_STD

CROP, SCALE, BATCH = (512, 512), (2048, 512), 8
WARM_UP = 2  # pipeline batches before timing
MEAN, STD = np.float32(IMAGE_MEAN), np.float32(IMAGE_STD)  # float32 all through, as mmcv


def generate_voc_like(root: str, count: int) -> None:
    """VOC layout: 500x375 JPEGs of textured blobs with palette-index labels (some 255)."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        label = np.zeros((375, 500), np.uint8)
        for _ in range(4):
            centre = tuple(int(v) for v in rng.integers((0, 0), (500, 375)))
            cv2.circle(label, centre, int(rng.integers(30, 150)), int(rng.integers(1, 21)), -1)
        edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        label[edges] = 255
        image = cv2.GaussianBlur(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), (5, 5), 0)
        image = np.clip(image * 0.5 + label[..., None] * 5, 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "JPEGImages", f"{index:05d}.jpg"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        Image.fromarray(label).save(os.path.join(root, "SegmentationClass", f"{index:05d}.png"))
    with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt"), "w") as handle:
        handle.write("".join(f"{index:05d}\n" for index in range(count)))


def _reference_sample(image_path: str, label_path: str,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same recipe, one sample at a time, as a straightforward cv2/numpy loader would."""
    image = cv2.cvtColor(cv2.imread(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    label = np.array(Image.open(label_path))
    ratio = rng.uniform(0.5, 2.0)
    height, width = label.shape
    factor = min(int(max(SCALE) * ratio) / max(height, width),
                 int(min(SCALE) * ratio) / min(height, width))
    size = (int(width * factor + 0.5), int(height * factor + 0.5))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    for _ in range(10):
        top = rng.integers(0, max(label.shape[0] - CROP[0], 0) + 1)
        left = rng.integers(0, max(label.shape[1] - CROP[1], 0) + 1)
        window = label[top:top + CROP[0], left:left + CROP[1]]
        counts = np.bincount(window.ravel(), minlength=256)[:255]
        if counts.max() < 0.75 * counts.sum():
            break
    image = image[top:top + CROP[0], left:left + CROP[1]]
    label = window
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if rng.random() < 0.5:
        image = np.clip(image + rng.uniform(-32, 32), 0, 255)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        image = np.clip(image * rng.uniform(0.5, 1.5), 0, 255)
    hsv = cv2.cvtColor(np.ascontiguousarray(image) / 255.0, cv2.COLOR_RGB2HSV)
    if rng.random() < 0.5:
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 1)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-36, 36)) % 360
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    if not contrast_first and rng.random() < 0.5:
        image = np.clip(image * rng.uniform(0.5, 1.5), 0, 255)
    image = (image - MEAN) / STD
    pad = ((0, CROP[0] - label.shape[0]), (0, CROP[1] - label.shape[1]))
    image = np.pad(image, (*pad, (0, 0)))
    label = np.pad(label, pad, constant_values=255)
    return image.astype(np.float32), label.astype(np.int32)


def reference_batches(dataset):
    """Endless batches of the per-sample reference, in the same slot order as the pipeline."""
    rng = np.random.default_rng(0)
    samples = dataset.samples
    step = 0
    while True:
        pairs = [_reference_sample(samples[(step * BATCH + slot) % len(samples)].image_path,
                                   samples[(step * BATCH + slot) % len(samples)].label_path, rng)
                 for slot in range(BATCH)]
        yield np.stack([image for image, _ in pairs]), np.stack([label for _, label in pairs])
        step += 1


def images_per_second(batches, count: int) -> tuple[float, float]:
    """Images/s over `count` batches, and CPU milliseconds of this process per image."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(count):
        next(batches)
    images = count * BATCH
    return (images / (time.perf_counter() - start),
            1000.0 * (time.process_time() - cpu_start) / images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="generated JPEGs")
    parser.add_argument("--batches", type=int, default=16, help="timed batches of 8 per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds; the best of each is kept (shared CPUs)")
    args = parser.parse_args()
    use_one_inter_op_thread_on_cpu()  # as train.py runs
    with tempfile.TemporaryDirectory() as root:
        generate_voc_like(root, args.images)
        dataset = get_dataset("voc", root, "train")
        epochs = -(-(args.rounds * (args.batches + WARM_UP)) * BATCH // len(dataset.samples)) + 1
        reference = reference_batches(dataset)
        next(reference)  # warm-up: first decodes
        results = {"reference": [], "pipeline": []}
        for round_index in range(args.rounds):
            results["reference"].append(images_per_second(reference, args.batches))
            # A fresh iterator per round, timed after its warm-up batches (tracing, thread
            # start-up) and dropped before the reference runs, so no prefetched work counts
            # twice and the two never compete for the cores.
            pipeline = iter(build_train_dataset(
                dataset, crop_size=CROP, scale=SCALE, global_batch_size=BATCH, epochs=epochs,
                seed=0, start_step=round_index * (args.batches + WARM_UP)))
            for _ in range(WARM_UP):
                next(pipeline)
            results["pipeline"].append(images_per_second(pipeline, args.batches))
            del pipeline
    best = {name: max(values) for name, values in results.items()}
    print(f"cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"{'implementation':<34} {'images/s (best)':>15} {'cpu ms/image':>12}  rounds")
    for name, label in (("reference", "per-sample cv2 + numpy reference"),
                        ("pipeline", "pspnet_tf tf.data pipeline")):
        rounds = " ".join(f"{value:.1f}" for value, _ in results[name])
        print(f"{label:<34} {best[name][0]:>15.1f} {best[name][1]:>12.1f}  {rounds}")
    print(f"ratio={best['pipeline'][0] / best['reference'][0]:.2f}")


if __name__ == "__main__":
    main()
