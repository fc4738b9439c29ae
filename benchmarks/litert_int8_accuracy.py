"""Labels and val mIoU of a --quantize=int8 LiteRT file against the float32 LiteRT file.

    python benchmarks/litert_int8_accuracy.py --model=runs/demo/final_model.keras \
        [--data_root=data/demo] [--input_size=96,96] [--representative_images=100]

Exports the model (a .keras file written by train.py, with its dataset, classes and test
scale) twice at --input_size, as float32 and as full-integer int8 calibrated on
--representative_images images of the training split (what `export.py --format=litert
--quantize=int8` writes), runs both on every validation image resized to --input_size
(labels resized by nearest neighbour) in ai-edge-litert (XNNPACK), and prints the share of
pixels where the two files' labels agree and each file's val mIoU against the resized labels.
Needs ai-edge-litert (the [deploy] extra).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from pspnet_tf.config import ExperimentConfig  # noqa: E402
from pspnet_tf.data.splits import load_split  # noqa: E402
from pspnet_tf.evaluation.metrics import SegmentationMetrics  # noqa: E402
from pspnet_tf.inference.calibration import calibration_images  # noqa: E402
from pspnet_tf.inference.export_litert import litert_bytes  # noqa: E402
from pspnet_tf.inference.loading import load_inference_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a .keras model written by train.py")
    parser.add_argument("--data_root", help="the dataset's root (default: the model's own)")
    parser.add_argument("--input_size", default="96,96", help="HEIGHT,WIDTH of both files")
    parser.add_argument("--representative_images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    size = tuple(int(value) for value in args.input_size.split(","))
    config = ExperimentConfig()
    if args.data_root:
        config = config.replace(data_root=args.data_root)
    loaded = load_inference_model(config, model=args.model,
                                  overridden={"data_root"} if args.data_root else ())
    config, scale = loaded.config, loaded.config.data.scale
    started = time.time()
    files = {"float32": litert_bytes(loaded.model, scale, size)}
    files["int8"] = litert_bytes(loaded.model, scale, size, "int8", calibration_images(
        config, args.representative_images, size))
    print(f"exported in {time.time() - started:.0f} s; file sizes: "
          + ", ".join(f"{name} {len(data) / 2**20:.2f} MB" for name, data in files.items()))
    runners = {name: Interpreter(model_content=data, num_threads=args.threads)
               .get_signature_runner() for name, data in files.items()}
    metrics = {name: SegmentationMetrics(config.model.num_classes, from_logits=False)
               for name in files}
    dataset = load_split(config, config.data.val_split)
    same = total = 0
    for index in range(len(dataset.samples)):
        image, label = dataset.load(index)
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size[::-1], interpolation=cv2.INTER_NEAREST)
        labels = {name: runner(images=image[None])["segmentation"]
                  for name, runner in runners.items()}
        for name, predicted in labels.items():
            metrics[name].update_state(label[None], predicted)
        same += int(np.sum(labels["float32"] == labels["int8"]))
        total += labels["int8"].size
    print(f"{config.data.dataset} {config.data.val_split}: {len(dataset.samples)} images at "
          f"{size[0]}x{size[1]}, int8 calibrated on {args.representative_images} "
          f"{config.data.train_split} images")
    print(f"labels equal to float32's: {100 * same / total:.2f}% of {total} pixels")
    for name, metric in metrics.items():
        print(f"val mIoU {name}: {100 * float(metric.result()):.2f}")


if __name__ == "__main__":
    main()
