"""Training-step time of the demo model with TensorFlow's default inter-op threads vs one.

    python benchmarks/cpu_threads.py

Each setting runs in its own process (threading must be set before TensorFlow starts) and
prints seconds per step; the last line is `ratio=<one thread / default>`.
"""

import subprocess
import sys
import time

STEP = r"""
import sys, time
import numpy as np
import tensorflow as tf
if sys.argv[1] == "one":
    tf.config.threading.set_inter_op_parallelism_threads(1)
from pspnet_tf import build_pspnet
from pspnet_tf.training.losses import SegmentationCrossEntropy
from pspnet_tf.training.schedules import make_optimizer
model = build_pspnet(5, backbone="resnet18_v1c", psp_channels=128, aux_channels=64,
                     training_heads=True)
loss = SegmentationCrossEntropy()
model.compile(make_optimizer(0.01, 100), loss={"logits": loss, "aux_logits": loss},
              loss_weights={"logits": 1.0, "aux_logits": 0.4})
images = np.random.rand(8, 128, 128, 3).astype("float32")
labels = np.random.randint(0, 5, (8, 128, 128))
data = tf.data.Dataset.from_tensors((images, {"logits": labels, "aux_logits": labels}))
model.fit(data.repeat(2), verbose=0)
start = time.perf_counter()
model.fit(data.repeat(10), verbose=0)
print((time.perf_counter() - start) / 10)
"""


def seconds_per_step(setting: str) -> float:
    output = subprocess.run([sys.executable, "-c", STEP, setting], capture_output=True,
                            text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    started = time.time()
    default, one = seconds_per_step("default"), seconds_per_step("one")
    print("PSPNet R-18-D8, batch 8, 128x128, training step on the CPU")
    print(f"{'inter-op threads':<20}{'s/step':>10}")
    print(f"{'TensorFlow default':<20}{default:>10.3f}")
    print(f"{'one':<20}{one:>10.3f}")
    print(f"(measured in {time.time() - started:.0f} s)")
    print(f"ratio={one / default:.3f}")


if __name__ == "__main__":
    main()
