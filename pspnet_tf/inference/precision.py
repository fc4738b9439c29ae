"""The precision of inference (export.py, evaluate.py, predict.py): the network in float32 or
bfloat16, the logits in float32 either way.

bfloat16 is Keras's `mixed_bfloat16` policy: the weights stay float32 variables (so float32
weight files load unchanged) and are cast to bfloat16 per layer; the logits layer is float32
(`build_pspnet`). CPUs without bfloat16 units (no AVX512_BF16 / AMX) emulate it, slower
than float32.
"""

from pspnet_tf.config import ExperimentConfig

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def with_precision(config: ExperimentConfig, precision: str | None) -> ExperimentConfig:
    """`config` whose dtype policy (`mixed_precision`, which `build_model` applies) runs the
    network at `precision` ("float32" or "bfloat16"); unchanged for None."""
    if precision is None:
        return config
    return config.replace(mixed_precision=POLICIES[precision])
