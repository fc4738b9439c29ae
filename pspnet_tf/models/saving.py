"""Writing and reading `.keras` model files, those of earlier versions included.

A `PSPNetSegmenter` carries what inference needs (class names, palette, test scale,
dataset) in its own config, so `model.save("m.keras")` writes it into the file's
config.json and `keras.saving.load_model` (after `import pspnet_tf.models`) gives it back.

Files written before the segmenter existed hold a `SegmentationModel`: a functional PSPNet
with a `metadata` dict. That class stays registered so those files still open;
`load_model_file` turns one into the `PSPNetSegmenter` of the same architecture (read from
its layers) and weights.
"""

import os
import zipfile
from typing import Any

import keras

from pspnet_tf.atomic import write_atomically
from pspnet_tf.errors import ParameterError, UserError
from pspnet_tf.models.backbone import RESNET_SPECS, ResNetV1cBackbone, backbone_depth
from pspnet_tf.models.layers import PACKAGE
from pspnet_tf.models.segmenter import PSPNetSegmenter


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentationModel(keras.Model):
    """The model class of final_model.keras files written by earlier versions (read only:
    `load_model_file` makes a PSPNetSegmenter of it)."""

    # *args/**kwargs keep Keras treating this as a functional model (full graph config).
    def __init__(self, *args: Any, metadata: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metadata = dict(metadata or {})

    def get_config(self) -> dict:
        return {**super().get_config(), "metadata": self.metadata}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "SegmentationModel":
        config = dict(config)
        metadata = config.pop("metadata", {})
        model = super().from_config(config, custom_objects=custom_objects)
        model.metadata = metadata
        return model


def _architecture(model: keras.Model) -> dict:
    """The `build_pspnet`-style settings of a functional PSPNet, read from its layers."""
    names = {layer.name: layer for layer in model.layers}
    layer3_blocks = 0
    while f"layer3_{layer3_blocks}_relu" in names:
        layer3_blocks += 1
    depths = [backbone_depth(key) for key, spec in RESNET_SPECS.items()
              if spec.blocks[2] == layer3_blocks]
    if not depths:
        raise ValueError(f"{layer3_blocks} blocks in layer3 fit no ResNetV1c depth")
    output_stride = 16 if names["layer3_0_downsample_0"].strides == (2, 2) else 8
    dropout = names["dropout"].rate if "dropout" in names else 0.0
    return {"depth": depths[0], "output_stride": output_stride,
            "num_classes": names["conv_seg"].filters,
            "psp_channels": names["bottleneck_conv"].filters, "dropout": dropout}


def segmenter_from_legacy(model: SegmentationModel) -> PSPNetSegmenter:
    """The PSPNetSegmenter of an earlier version's SegmentationModel, with its weights."""
    settings, metadata = _architecture(model), model.metadata
    segmenter = PSPNetSegmenter(
        ResNetV1cBackbone(settings.pop("depth"), settings.pop("output_stride")), **settings,
        class_names=metadata.get("class_names"), palette=metadata.get("palette"),
        scale=metadata.get("scale", (2048, 512)), dataset=metadata.get("dataset"),
        data_root=metadata.get("data_root"), preset=metadata.get("name"))
    own = {layer.name: layer for layer in model.layers}
    for layer in segmenter.layers:
        if layer.weights:
            layer.set_weights(own[layer.name].get_weights())
    return segmenter


def save_model(model: keras.Model, path: str) -> None:
    """`model.save(path)` for a .keras path; the file appears complete or not at all."""
    if not path.endswith(".keras"):
        raise UserError(f"model path {path} must end in .keras")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, model.save, suffix=".keras")


def load_model_file(path: str) -> keras.Model:
    """`keras.saving.load_model(path)` with one UserError for a missing or foreign file; a
    SegmentationModel of an earlier version comes back as a PSPNetSegmenter."""
    if not os.path.isfile(path):
        raise UserError(f"model file {path} does not exist; pass a .keras file, or a name "
                        "from pspnet_tf.list_presets()")
    try:
        model = keras.saving.load_model(path)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a Keras model file that pspnet_tf can load ({error}); "
                        "pass a .keras file written by train.py or model.save") from error
    if not isinstance(model, SegmentationModel):
        return model
    try:
        return segmenter_from_legacy(model)
    except (KeyError, ValueError) as error:
        problem = f"no layer {error}" if isinstance(error, KeyError) else str(error)
        raise ParameterError("{path} holds a SegmentationModel of an earlier pspnet_tf whose "
                             "architecture this version cannot read ({problem}); load its "
                             "weights instead ({weights}=RUN_DIR/final_weights.h5 with the "
                             "run's {config})", path=path, problem=problem) from error
