"""Maps PyTorch state-dict keys (mmsegmentation names) onto pspnet_tf layers, strictly:
full mmsegmentation PSPNets and ImageNet ResNetV1c backbones (`checkpoint_weights`).

Keras layer names are the mmsegmentation module names with "." -> "_", so each layer's
tensors are found by name; every tensor must be used and every weight filled with the
right shape, otherwise the error lists the offending names.
"""

import re
from collections.abc import Iterable

import keras
import numpy as np

from pspnet_tf.errors import ParameterError, UserError
from pspnet_tf.models.layers import PyramidBottleneckConv, is_auxiliary_layer

BACKBONE_PREFIX = "backbone."
IMAGENET_CLASSIFIER_PREFIX = "fc."  # ImageNet ResNets' classifier; a segmenter has none
CLASSIFIER_LAYERS = frozenset({"conv_seg", "aux_conv_seg"})
_BACKBONE_LAYER = re.compile(r"^(stem_\d+|layer\d+_\d+_(conv\d+|bn\d+|downsample_\d+))$")
_HEAD_LAYERS = (
    (re.compile(r"^psp_modules_(\d+)_(conv|bn)$"), r"decode_head.psp_modules.\1.1.\2"),
    (re.compile(r"^bottleneck_(conv|bn)$"), r"decode_head.bottleneck.\1"),
    (re.compile(r"^conv_seg$"), "decode_head.conv_seg"),
    (re.compile(r"^aux_convs_(\d+)_(conv|bn)$"), r"auxiliary_head.convs.\1.\2"),
    (re.compile(r"^aux_conv_seg$"), "auxiliary_head.conv_seg"),
)
_SHOWN = 12  # offending names listed per kind of problem
SOURCES = ("mmseg", "resnet_v1c")
AUX_HEAD_PREFIX = "auxiliary_head."


def is_backbone_layer(name: str) -> bool:
    return bool(_BACKBONE_LAYER.match(name))


def torch_module(layer_name: str) -> str:
    """The mmsegmentation module name of a pspnet_tf layer, e.g. layer1_0_conv1 ->
    backbone.layer1.0.conv1, psp_modules_2_bn -> decode_head.psp_modules.2.1.bn."""
    if is_backbone_layer(layer_name):
        return BACKBONE_PREFIX + layer_name.replace("_", ".")
    for pattern, replacement in _HEAD_LAYERS:
        if pattern.match(layer_name):
            return pattern.sub(replacement, layer_name)
    raise ValueError(f"layer {layer_name} has no mmsegmentation counterpart")


def _torch_tensors(layer: keras.layers.Layer) -> list[tuple[str, bool]]:
    """(tensor suffix, is a conv kernel) in the order of `layer.get_weights()`."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [("weight", False), ("bias", False), ("running_mean", False),
                ("running_var", False)]
    if isinstance(layer, PyramidBottleneckConv):  # a 3x3 convolution without bias
        return [("weight", True)]
    if isinstance(layer, keras.layers.Conv2D):
        return [("weight", True)] + ([("bias", False)] if layer.use_bias else [])
    raise ValueError(f"layer {layer.name} ({type(layer).__name__}) cannot be converted")


def list_names(kind: str, names: list[str]) -> str:
    """"kind (count): the first names ..." for one-line error messages."""
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{kind} ({len(names)}): {', '.join(names[:_SHOWN])}{more}"


def convert_state_dict(state: dict[str, np.ndarray], layers: Iterable[keras.layers.Layer],
                       source: str, allow_missing_classifier: bool = False
                       ) -> dict[str, list[np.ndarray]]:
    """Keras weights for `layers` from an mmsegmentation-named PyTorch state dict.

    Returns {layer name: arrays in `get_weights()` order}. BatchNorm `num_batches_tracked`
    counters are ignored. Any missing, unexpected or mis-shaped tensor raises a UserError
    naming them, except that with `allow_missing_classifier` the classifiers (conv_seg,
    aux_conv_seg) may be absent or of another class count: they are then left out.
    """
    tensors = {key: value for key, value in state.items()
               if not key.endswith(".num_batches_tracked")}
    used, missing, misshaped, converted = set(), [], [], {}
    classifier_problem = False
    for layer in layers:
        module = torch_module(layer.name)
        values, problems = [], []
        for (suffix, is_kernel), weight in zip(_torch_tensors(layer), layer.weights):
            key = f"{module}.{suffix}"
            if key not in tensors:
                problems.append(("missing", key))
                continue
            value = tensors[key].transpose(2, 3, 1, 0) if is_kernel else tensors[key]
            used.add(key)
            if tuple(value.shape) != tuple(weight.shape):
                needed = _torch_shape(weight.shape, is_kernel)
                problems.append(("mis-shaped",
                                 f"{key} {tuple(tensors[key].shape)} (model needs {needed})"))
            values.append(value)
        if problems and layer.name in CLASSIFIER_LAYERS:
            if allow_missing_classifier:
                continue
            classifier_problem = True
        missing += [name for kind, name in problems if kind == "missing"]
        misshaped += [name for kind, name in problems if kind == "mis-shaped"]
        converted[layer.name] = values
    unexpected = sorted(set(tensors) - used)
    if missing or unexpected or misshaped:
        found = [list_names(kind, names) for kind, names in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                 if names]
        hint = (" (to fine-tune to another class count, convert with "
                "{allow_missing_classifier})" if classifier_problem else "")
        raise ParameterError("{given} does not fit the model: {found}. Check {backbone}, "
                             "{num_classes}, {psp_channels}, {aux_channels} and {source}"
                             + hint, given=source, found="; ".join(found))
    return converted


def _torch_shape(shape: tuple, is_kernel: bool) -> tuple:
    return tuple(shape[i] for i in (3, 2, 0, 1)) if is_kernel else tuple(shape)


def imagenet_to_backbone_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An open-mmlab ImageNet ResNetV1c state dict renamed to mmsegmentation backbone keys,
    without its ImageNet classifier (`fc.*`)."""
    return {BACKBONE_PREFIX + key: value for key, value in state.items()
            if not key.startswith(IMAGENET_CLASSIFIER_PREFIX)}


def assign(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Sets each named layer's weights (shapes were checked by the caller)."""
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)


def detect_source(state: dict[str, np.ndarray]) -> str:
    """"mmseg" for a full PSPNet (keys under backbone.), else "resnet_v1c" (ImageNet)."""
    return "mmseg" if any(key.startswith(BACKBONE_PREFIX) for key in state) else "resnet_v1c"


def checkpoint_weights(model: keras.Model, state: dict[str, np.ndarray], path: str,
                       source: str, allow_missing_classifier: bool = False
                       ) -> dict[str, list[np.ndarray]]:
    """Converts a state dict of the given source for `model` (a training-heads PSPNet, or
    a backbone for "resnet_v1c").

    mmseg checkpoints fill the whole model (the auxiliary head only when the checkpoint
    has one); ImageNet ResNetV1c checkpoints fill exactly the backbone.
    """
    detected = detect_source(state)
    if detected != source:
        raise ParameterError("{path} looks like a {detected} checkpoint, not {given}; pass "
                             "{source}={detected}", path=path, detected=detected, given=source)
    layers = [layer for layer in model.layers if layer.weights]
    if source == "mmseg":
        if not any(key.startswith(AUX_HEAD_PREFIX) for key in state):
            layers = [layer for layer in layers if not is_auxiliary_layer(layer.name)]
    else:
        state = imagenet_to_backbone_keys(state)
        layers = [layer for layer in layers if is_backbone_layer(layer.name)]
    return convert_state_dict(state, layers, path, allow_missing_classifier)
