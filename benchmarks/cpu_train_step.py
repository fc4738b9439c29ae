"""Training-step time of the demo model on the CPU under several execution settings.

    python benchmarks/cpu_train_step.py

Settings: TensorFlow's default inter-op threads, one inter-op thread (what the entry points
use on GPU-less hosts), and on top of that mixed_bfloat16 and XLA (--jit_compile). Each runs
in its own process (threading must be set before TensorFlow starts) with oneDNN on, as
train.py runs. Prints seconds per step and the final line
`ratio=<one inter-op thread / default>`.
"""

import os
import subprocess
import sys
import time

STEP = r"""
import dataclasses, sys, time
import numpy as np
import tensorflow as tf
setting = sys.argv[1]
if setting != "default":
    tf.config.threading.set_inter_op_parallelism_threads(1)
from pspnet_tf.config import ExperimentConfig
from pspnet_tf.training.trainer import build_training_model, compile_for_training
config = ExperimentConfig.from_fields(
    num_classes=5, backbone="resnet18_v1c", psp_channels=128, aux_channels=64,
    crop_size=(128, 128), batch_size=8,
    mixed_precision="mixed_bfloat16" if setting == "bf16" else "float32",
    jit_compile=setting == "xla")
model = build_training_model(config)
compile_for_training(model, config, total_steps=100)
images = np.random.rand(8, 128, 128, 3).astype("float32")
labels = np.random.randint(0, 5, (8, 128, 128))
data = tf.data.Dataset.from_tensors((images, {"logits": labels, "aux_logits": labels}))
model.fit(data.repeat(2), verbose=0)
start = time.perf_counter()
model.fit(data.repeat(10), verbose=0)
print((time.perf_counter() - start) / 10)
"""

SETTINGS = {
    "default": "TensorFlow default threads",
    "one": "one inter-op thread",
    "bf16": "one thread + mixed_bfloat16",
    "xla": "one thread + XLA",
}


ENVIRONMENT = {"TF_ENABLE_ONEDNN_OPTS": "1", **os.environ}  # as train.py sets it
TIMEOUT_S = 240  # bfloat16 is emulated, and very slow, on CPUs without native support


def seconds_per_step(setting: str) -> float:
    """Seconds per step, or NaN when the setting did not finish within TIMEOUT_S."""
    try:
        output = subprocess.run([sys.executable, "-c", STEP, setting], capture_output=True,
                                text=True, check=True, timeout=TIMEOUT_S, env=ENVIRONMENT).stdout
    except subprocess.TimeoutExpired:
        return float("nan")
    return float(output.strip().splitlines()[-1])


def main() -> None:
    started = time.time()
    results = {setting: seconds_per_step(setting) for setting in SETTINGS}
    print("PSPNet R-18-D8 (PSP 128), batch 8, 128x128, one training step on the CPU")
    print(f"{'setting':<32}{'s/step':>10}")
    for setting, label in SETTINGS.items():
        print(f"{label:<32}{results[setting]:>10.3f}")
    print(f"(nan: not done within {TIMEOUT_S} s; measured in {time.time() - started:.0f} s)")
    print(f"ratio={results['one'] / results['default']:.3f}")


if __name__ == "__main__":
    main()
