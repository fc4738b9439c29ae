"""`PSPNetSegmenter`: PSPNet as one registered, serialisable Keras model, the record of "which
PSPNet" that training, the presets and saved files share.

Like keras-hub's segmenters it takes a backbone and is serialised by its constructor
arguments (the backbone's config inside its own), so a `.keras` file holds the architecture,
the classes (names, palette), the test scale and the dataset. Unlike keras-hub's, the
backbone's layers are the segmenter's own layers (the heads are built on
`backbone.stage_outputs`, not on a nested backbone call): layer names stay
mmsegmentation's, so weights load and convert by name.
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.models.accumulation import accumulated_train_step
from pspnet_tf.models.backbone import (STAGES, ResNetV1cBackbone, dtype_policy,
                                       set_tap_gradients)
from pspnet_tf.models.heads import fcn_head, psp_head
from pspnet_tf.models.layers import PACKAGE, ResizeLike
from pspnet_tf.models.losses import SegmentationCrossEntropy
from pspnet_tf.models.prediction import (CONFIDENCE, SEGMENTATION, logits_at_size,
                                         network_logits, whole_image_segmentation)
from pspnet_tf.models.preprocessing import PSPNetPreprocessor
from pspnet_tf.data.descriptors import dataset_classes
from pspnet_tf.models.preset_files import load_task
from pspnet_tf.models.preset_loading import PresetMixin, published_segmenter
from pspnet_tf.models.presets import SEGMENTER_PRESETS, Preset
from pspnet_tf.models.schedules import TorchSGD, make_optimizer

LOGITS, AUX_LOGITS = "logits", "aux_logits"
CLASSIFIER, AUX_CLASSIFIER = "conv_seg", "aux_conv_seg"  # the heads' last convolutions
AUX_LOSS_WEIGHT = 0.4  # the recipe's weight of the auxiliary loss


@contextlib.contextmanager
def _statistics_frozen(layers: list[keras.layers.BatchNormalization]) -> Iterator[None]:
    """BatchNorm in training mode with momentum 1: the same outputs (batch statistics), and
    a moving-statistics update that writes back the value already there."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 1.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


@keras.saving.register_keras_serializable(package=PACKAGE)
class PSPNetSegmenter(PresetMixin, keras.Model):
    """PSPNet: a dilated ResNetV1c backbone, the Pyramid Pooling Module head and, for
    training, the auxiliary FCN head on layer3.

    Inputs are NHWC float32 images normalised as `preprocessor` does (any height and
    width); outputs are float32 logits at the input resolution, or with `auxiliary_head`
    `{"logits": ..., "aux_logits": ...}` for the 0.4-weighted auxiliary loss. Both variants
    share layer names, so weights move between them by name (`pspnet_tf.models.weights`).

    Description (config only, no effect on the network): `class_names`, `palette` (RGB per
    class), the test `scale` (LONG, SHORT), the `dataset` and its `data_root`, the `preset`
    it came from.

    `preprocessor` (a `PSPNetPreprocessor`, saved with the model; None by default, as in
    keras-hub) runs inside `fit` and `predict`, which then take uint8 images (`fit`,
    `predict_step`); `__call__` always takes normalised images. `dtype` (a dtype policy or
    its name; default the backbone's) is the heads' policy, saved in the config; the logits
    stay float32. `compile()` without arguments sets the recipe's loss and optimiser.

    Training choices (forward values unchanged; `--tap_gradients`, `--memory_saving`):
    `tap_gradients` gives every stride-1 convolution the tap gradient
    (`pspnet_tf.models.convolution`), faster on CPUs. `recompute` names a stage of
    `STAGES` (e.g. "layer2"): in training calls the backbone up to its output keeps only the
    images and that output, and runs again in the backward pass, which lowers the peak
    memory where the activations are large and the arithmetic small. Its BatchNorm layers
    run again with the same batch statistics and write their moving statistics back
    unchanged, so they advance once per step; the stages have no dropout.
    """

    presets: dict[str, Preset] = SEGMENTER_PRESETS
    preset_role = "segmenter"

    def __init__(self, backbone: ResNetV1cBackbone, num_classes: int, psp_channels: int = 512,
                 aux_channels: int = 256, dropout: float = 0.1, auxiliary_head: bool = False,
                 class_names: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | np.ndarray | None = None,
                 scale: Sequence[int] = (2048, 512), dataset: str | None = None,
                 data_root: str | None = None, preset: str | None = None,
                 tap_gradients: bool = False, recompute: str | None = None,
                 preprocessor: PSPNetPreprocessor | None = None,
                 dtype: str | keras.DTypePolicy | None = None, name: str | None = None,
                 trainable: bool = True) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if recompute is not None and recompute not in STAGES:
            raise ValueError(f"recompute must be None or one of {STAGES}, got {recompute!r}")
        images, stages = backbone.input, backbone.stage_outputs
        with dtype_policy(backbone.dtype_policy if dtype is None else dtype):
            logits = psp_head(stages["layer4"], num_classes, channels=psp_channels,
                              dropout=dropout)
            # Logits leave the model in float32 whatever the dtype policy, for a stable loss.
            outputs = ResizeLike(name=LOGITS, dtype="float32")([logits, images])
            if auxiliary_head:
                aux_logits = fcn_head(stages["layer3"], num_classes, channels=aux_channels,
                                      dropout=dropout)
                outputs = {LOGITS: outputs,
                           AUX_LOGITS: ResizeLike(name=AUX_LOGITS, dtype="float32")(
                               [aux_logits, images])}
            super().__init__(inputs=images, outputs=outputs,
                             name=name or f"pspnet_{backbone.name}", trainable=trainable)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.psp_channels = psp_channels
        self.aux_channels = aux_channels
        self.dropout = dropout
        self.auxiliary_head = auxiliary_head
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.palette = None if palette is None else np.asarray(palette).astype(int).tolist()
        self.scale = tuple(int(edge) for edge in scale)
        self.dataset = dataset
        self.data_root = data_root
        self.preset = preset
        self.tap_gradients = tap_gradients
        self.recompute = recompute
        self.gradient_accumulation_steps = 1  # compile() sets it
        set_tap_gradients(self, tap_gradients)
        if recompute:
            # keras.Function runs part of the graph between given tensors; no layer is copied.
            self._early = keras.Model(images, stages[recompute], name=f"{self.name}_early")
            self._late = keras.Function([images, stages[recompute]], outputs)

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes, "psp_channels": self.psp_channels,
                "aux_channels": self.aux_channels, "dropout": self.dropout,
                "auxiliary_head": self.auxiliary_head, "class_names": self.class_names,
                "palette": self.palette, "scale": list(self.scale), "dataset": self.dataset,
                "data_root": self.data_root, "preset": self.preset,
                "tap_gradients": self.tap_gradients, "recompute": self.recompute,
                "preprocessor": (None if self.preprocessor is None else
                                 keras.saving.serialize_keras_object(self.preprocessor)),
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None
                    ) -> "PSPNetSegmenter":
        config = dict(config)
        for key in ("backbone", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects)
        return cls(**config)

    def variant(self, fresh: Sequence[str] = (), **changes: Any) -> "PSPNetSegmenter":
        """A new segmenter of this config with `changes` (e.g. auxiliary_head=False), holding
        copies of this one's weights for every layer it shares by name, except the layers
        named in `fresh` (e.g. the classifier, for a new class count)."""
        config = {**self.get_config(), "preprocessor": self.preprocessor, **changes}
        config.pop("name")
        backbone = dict(config.pop("backbone")["config"])
        backbone.pop("name")
        backbone["tap_gradients"] = config["tap_gradients"]
        copy = PSPNetSegmenter(ResNetV1cBackbone(**backbone), **config)
        own = {layer.name: layer for layer in self.layers}
        for layer in copy.layers:
            if layer.weights and layer.name in own and layer.name not in fresh:
                layer.set_weights(own[layer.name].get_weights())
        return copy

    def compile_from_config(self, config: dict) -> None:
        """What `keras.saving.load_model` calls for a compiled model's file: `compile` with
        the saved arguments (Keras' own skips a model whose `compile` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def save_task_weights(self, filepath: str) -> None:
        """Writes the weights outside the backbone (the heads) to a `.weights.h5` file, as
        keras-hub's tasks do (a preset folder's task.weights.h5)."""
        keras.saving.save_weights(self, filepath,
                                  objects_to_skip=list(self.backbone._flatten_layers()))

    def load_task_weights(self, filepath: str) -> None:
        """Reads what `save_task_weights` wrote; the backbone's weights stay as they are."""
        keras.saving.load_weights(self, filepath,
                                  objects_to_skip=list(self.backbone._flatten_layers()))

    def segment(self, image: np.ndarray | tf.Tensor, confidence_threshold: float = 0.0
                ) -> np.ndarray:
        """Int32 class ids [H, W] for one uint8 RGB image [H, W, 3] of any size: the whole-
        image protocol at the model's test scale (`pspnet_tf.inference.predictor`). With
        `confidence_threshold` T > 0, pixels whose top class's probability is below T are
        255 ("unknown")."""
        return self._whole_image(image, (SEGMENTATION,), confidence_threshold)[SEGMENTATION]

    def segment_with_confidence(self, image: np.ndarray | tf.Tensor,
                                confidence_threshold: float = 0.0
                                ) -> tuple[np.ndarray, np.ndarray]:
        """(`segment(image, confidence_threshold)`, float32 [H, W] confidence): the top
        class's probability per pixel, the softmax of the logits at the image's size, computed
        a band of rows at a time as the labels are."""
        found = self._whole_image(image, (SEGMENTATION, CONFIDENCE), confidence_threshold)
        return found[SEGMENTATION], found[CONFIDENCE]

    def _whole_image(self, image: np.ndarray | tf.Tensor, outputs: tuple[str, ...],
                     confidence_threshold: float) -> dict[str, np.ndarray]:
        preprocessor = self.preprocessor or PSPNetPreprocessor(self.scale)
        return whole_image_segmentation(self, preprocessor, image, outputs, confidence_threshold)

    def compile(self, optimizer: Any = "auto", loss: Any = "auto", loss_weights: Any = "auto",
                total_steps: int | None = None, gradient_accumulation_steps: int = 1,
                **kwargs: Any) -> None:
        """Keras' `compile` with the recipe's defaults (docs/recipe.md) for every "auto":
        `SegmentationCrossEntropy` (label 255 ignored) on the logits and, with the auxiliary
        head, on the auxiliary logits weighted 0.4; `TorchSGD` (PyTorch's SGD, momentum 0.9,
        L2 weight decay 5e-4) at learning rate 0.01, on the poly schedule to 1e-4 over
        `total_steps` optimizer steps when given, else constant.
        `gradient_accumulation_steps=N` > 1: `fit` cuts each batch into N equal
        micro-batches and makes one optimizer step from their mean gradient
        (`pspnet_tf.models.accumulation`); batches must hold a multiple of N samples.
        Other arguments pass to `keras.Model.compile`."""
        if gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be at least 1, got "
                             f"{gradient_accumulation_steps}")
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        if optimizer == "auto":
            optimizer = (TorchSGD(0.01, momentum=0.9, l2_weight_decay=5e-4)
                         if total_steps is None else make_optimizer(0.01, total_steps))
        elif total_steps is not None:
            raise ValueError("total_steps sets the default optimizer's schedule; it cannot "
                             "be given with an optimizer")
        if loss == "auto":
            loss = SegmentationCrossEntropy()
            if self.auxiliary_head:
                loss = {LOGITS: loss, AUX_LOGITS: SegmentationCrossEntropy()}
        if loss_weights == "auto":
            loss_weights = ({LOGITS: 1.0, AUX_LOGITS: AUX_LOSS_WEIGHT}
                            if self.auxiliary_head else None)
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, **kwargs)

    def preprocess_samples(self, images: tf.Tensor, masks: tf.Tensor) -> tuple[Any, Any]:
        """(uint8 images, int masks) -> the network's (inputs, targets): the preprocessor on
        the images, the masks resized to the same size by nearest neighbour (no new labels),
        one target per head. One sample [H, W, 3] with [H, W] or [H, W, 1], or a batch."""
        inputs = self.preprocessor(images)
        masks = tf.convert_to_tensor(masks)
        channel = masks.shape.rank == inputs.shape.rank - 1
        if channel:
            masks = masks[..., tf.newaxis]
        masks = tf.image.resize(masks, tf.shape(inputs)[-3:-1], "nearest")
        if channel:
            masks = masks[..., 0]
        return inputs, ({LOGITS: masks, AUX_LOGITS: masks} if self.auxiliary_head else masks)

    def _preprocessed(self, data: Any) -> Any:
        if self.preprocessor is None or not isinstance(data, tf.data.Dataset):
            return data
        return data.map(self.preprocess_samples, num_parallel_calls=tf.data.AUTOTUNE)

    def fit(self, x: Any = None, y: Any = None, validation_data: Any = None,
            **kwargs: Any) -> keras.callbacks.History:
        """Keras' `fit`. With a `preprocessor`, `x` (and `validation_data`) may be a
        `tf.data.Dataset` of (uint8 image, int mask) pairs, one or a batch each:
        `preprocess_samples` maps it to the network's inputs and targets. Without one, the
        data must already be the network's (normalised images)."""
        return super().fit(self._preprocessed(x), y, validation_data=self._preprocessed(
            validation_data), **kwargs)

    def train_step(self, data: Any) -> dict[str, Any]:
        """Keras' train step, or with `compile(gradient_accumulation_steps=N)`, N > 1, one
        optimizer step from N micro-batches of `data`."""
        if self.gradient_accumulation_steps == 1:
            return super().train_step(data)
        return accumulated_train_step(self, data, self.gradient_accumulation_steps)

    def predict_step(self, data: Any) -> tf.Tensor:
        """With a `preprocessor`: uint8 images [B, H, W, 3] -> float32 logits of the main
        head [B, H, W, num_classes] at the input size (the preprocessor's resize, the
        network, a bilinear resize back), i.e. `predict(images)` equals
        `logits_at_size(network_logits(model, preprocessor(images)), (H, W))`. Without
        one, Keras' `predict_step` (the outputs of `__call__`)."""
        if self.preprocessor is None:
            return super().predict_step(data)
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = network_logits(self, self.preprocessor(images))
        return logits_at_size(logits, tf.shape(images)[-3:-1])

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.recompute):
            return super().call(inputs, training=training, mask=mask)
        inputs = tf.convert_to_tensor(inputs)
        early = self._early
        batch_norms = [layer for layer in early.layers
                       if isinstance(layer, keras.layers.BatchNormalization)]

        @tf.custom_gradient
        def run_early(images: tf.Tensor):
            outputs = early(images, training=True)

            def gradient(upstream: tf.Tensor, variables: list[tf.Variable]):
                with _statistics_frozen(batch_norms), tf.GradientTape() as tape:
                    tape.watch(images)
                    again = early(images, training=True)
                input_gradient, *variable_gradients = tape.gradient(
                    again, [images, *variables], output_gradients=upstream)
                return input_gradient, variable_gradients

            return outputs, gradient

        # The rest of the graph inherits training=True from this call.
        return self._late([inputs, run_early(inputs)])

    @classmethod
    def published_architecture(cls, preset: Preset, auxiliary_head: bool = True
                               ) -> "PSPNetSegmenter":
        """The PSPNet of a published checkpoint (with the training heads unless
        `auxiliary_head=False`), its dataset's classes and palette, its test scale and a
        preprocessor for it (random weights)."""
        names, palette = dataset_classes(preset.dataset, preset.data_root)
        return cls(ResNetV1cBackbone(preset.depth, preset.output_stride), len(names),
                   psp_channels=preset.psp_channels, aux_channels=preset.aux_channels,
                   auxiliary_head=auxiliary_head, class_names=names, palette=palette,
                   scale=preset.scale, dataset=preset.dataset, data_root=preset.data_root,
                   preset=preset.name,
                   preprocessor=PSPNetPreprocessor(preset.scale, name="preprocessor"))

    @classmethod
    def _from_preset_record(cls, preset: Preset, load_weights: bool, cache_dir: str | None,
                            **kwargs: Any) -> "PSPNetSegmenter":
        """`from_preset(name, num_classes=None, class_names=None, palette=None,
        auxiliary_head=None, load_weights=True, cache_dir=None)`: the inference PSPNet of
        published checkpoint `name` (its dataset's classes, palette, test scale and a
        `PSPNetPreprocessor` of that scale, so `fit` and `predict` take uint8 images),
        converted and cached as a preset folder the first time; then `for_classes(**kwargs)`.
        """
        model = (published_segmenter(preset, cache_dir, cls.published_architecture(preset))
                 if load_weights else cls.published_architecture(preset, auxiliary_head=False))
        return model.for_classes(**kwargs)

    @classmethod
    def _from_preset_folder(cls, folder: str, load_weights: bool, **kwargs: Any
                            ) -> "PSPNetSegmenter":
        """`from_preset(folder, num_classes=None, class_names=None, palette=None,
        auxiliary_head=None, load_weights=True)`: the segmenter `save_to_preset` wrote,
        then `for_classes(**kwargs)`."""
        return load_task(folder, cls, load_weights).for_classes(**kwargs)

    def for_classes(self, num_classes: int | None = None,
                    class_names: Sequence[str] | None = None,
                    palette: Sequence[Sequence[int]] | np.ndarray | None = None,
                    auxiliary_head: bool | None = None) -> "PSPNetSegmenter":
        """This model for fine-tuning. With `num_classes` or `class_names`: the same
        backbone and Pyramid Pooling Module weights with a fresh classifier for
        `num_classes` classes (default `len(class_names)`), named `class_names` and
        coloured `palette` (both optional; the model no longer names a dataset).
        `auxiliary_head=True` adds the training head on layer3 where the model has none
        (freshly initialised: published presets hold the inference model only), False
        drops it, None keeps what the model has. With no argument: this model itself."""
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        changes: dict[str, Any] = {}
        fresh: tuple[str, ...] = ()
        if num_classes is not None:
            changes = {"num_classes": num_classes, "class_names": class_names,
                       "palette": palette, "dataset": None, "data_root": None}
            fresh = (CLASSIFIER, AUX_CLASSIFIER)
        elif class_names is not None or palette is not None:
            raise ValueError("class_names and palette need num_classes (a new classifier)")
        if auxiliary_head is not None and auxiliary_head != self.auxiliary_head:
            changes["auxiliary_head"] = auxiliary_head
        return self.variant(fresh=fresh, **changes) if changes else self
