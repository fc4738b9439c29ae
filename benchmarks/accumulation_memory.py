"""Peak memory and step time of gradient accumulation on the CPU: one step of 8 crops as
one batch of 8, as 4 micro-batches of 2 (--gradient_accumulation_steps=4), and one batch
of 2 for reference.

    python benchmarks/accumulation_memory.py

Each setting runs in its own process (R-18-D8 with the recipe's head widths, 256x256 crops,
memory saving off, as train.py builds and compiles it) with TensorFlow's BFC allocator on the
CPU (TF_CPU_ALLOCATOR_USE_BFC), and prints the peak of TensorFlow's allocations during the
steps after the first (`get_memory_info`: tensors, weights, gradients, optimizer slots; not
the Python graph), the first fit's seconds (mostly tracing: the accumulating step's graph
holds one copy of the forward and backward pass per micro-batch) and the seconds per later
step.
"""

import os
import subprocess
import sys

STEP = r"""
import sys, time
import numpy as np
import tensorflow as tf
steps, batch = int(sys.argv[1]), int(sys.argv[2])
from pspnet_tf.config import ExperimentConfig
from pspnet_tf.training.trainer import build_training_model, compile_for_training
config = ExperimentConfig.from_fields(
    num_classes=21, backbone="resnet18_v1c", crop_size=(256, 256), batch_size=batch,
    gradient_accumulation_steps=steps, memory_saving="off")
model = build_training_model(config)
compile_for_training(model, config, total_steps=100)
images = np.random.rand(steps * batch, 256, 256, 3).astype("float32")
labels = np.random.randint(0, 21, (steps * batch, 256, 256))
data = tf.data.Dataset.from_tensors((images, {"logits": labels, "aux_logits": labels}))
start = time.perf_counter()
model.fit(data, verbose=0)
first = time.perf_counter() - start
tf.config.experimental.reset_memory_stats("CPU:0")
start = time.perf_counter()
model.fit(data.repeat(2), verbose=0)
per_step = (time.perf_counter() - start) / 2
peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
print(f"{steps} x {batch}: peak {peak:.0f} MiB, first fit {first:.1f} s, {per_step:.2f} s/step")
"""

for steps, batch in ((1, 8), (4, 2), (1, 2)):
    result = subprocess.run([sys.executable, "-c", STEP, str(steps), str(batch)],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true"})
    print(result.stdout.strip().splitlines()[-1], flush=True)
