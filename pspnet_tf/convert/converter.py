"""Converts one PyTorch checkpoint into a pspnet_tf weights file (.h5, by layer name)."""

import os

import keras

from pspnet_tf.download import fetch
from pspnet_tf.errors import ParameterError
from pspnet_tf.models import PSPNetSegmenter, save_weights
from pspnet_tf.models.torch_weights import assign, checkpoint_weights
from pspnet_tf.torch_io import read_state_dict


def weights_model(model: PSPNetSegmenter, converted: set[str]) -> keras.Model:
    """The part of `model` that holds exactly the converted layers, to save only those.

    Heads the checkpoint did not fill (no auxiliary head, a skipped classifier, or all
    heads for a backbone) are cut off, so the file never carries random weights.
    """
    outputs = []
    for classifier, logits, before in (("conv_seg", "logits", "bottleneck_conv"),
                                       ("aux_conv_seg", "aux_logits", "aux_convs_0_conv")):
        if classifier in converted:
            outputs.append(model.get_layer(logits).output)
        elif before in converted:
            outputs.append(model.get_layer(classifier).input)
    if not outputs:
        outputs.append(model.backbone.stage_outputs["layer4"])
    part = keras.Model(model.inputs, outputs, name=f"{model.name}_converted")
    held = {layer.name for layer in part.layers if layer.weights}
    if held != converted:
        raise ValueError(f"converted layers do not form a sub-model: {sorted(held ^ converted)}")
    return part


def convert_checkpoint(model: PSPNetSegmenter, checkpoint: str, source: str, output: str,
                       allow_missing_classifier: bool = False) -> list[str]:
    """Converts `checkpoint` (path or URL) for `model`, a training-heads PSPNet, into `output`.

    `source` is "mmseg" (a full PSPNet) or "resnet_v1c" (an ImageNet backbone). The file
    holds only the converted layers; returns their names. An existing `output` is refused.
    """
    if not output.endswith(".h5") or output.endswith(".weights.h5"):
        raise ParameterError("{output}={path} must end in .h5 (not .weights.h5): pspnet_tf "
                             "weights are by-name legacy HDF5 files", path=output)
    if os.path.exists(output):
        raise ParameterError("{output}={path} exists; choose another path or delete it "
                             "(nothing was changed)", path=output)
    path = fetch(checkpoint)
    weights = checkpoint_weights(model, read_state_dict(path), path, source,
                                 allow_missing_classifier)
    assign(model, weights)
    save_weights(weights_model(model, set(weights)), output)
    return sorted(weights)
