"""`from_pretrained`: a published PSPNet by name, downloaded, converted and cached as .keras.

The first call downloads the checkpoint (progress bar, sha256 prefix checked, resumable),
converts it without PyTorch and caches the result as `<checkpoint file>.keras` next to the
download; later calls load that file. The model carries its dataset's class names and
palette and its test scale (`model.metadata`), as train.py's final_model.keras does.
"""

import os

import keras

from pspnet_tf.convert.download import default_cache_dir, fetch
from pspnet_tf.convert.mapping import assign
from pspnet_tf.convert.pretrained import checkpoint_weights
from pspnet_tf.convert.registry import PretrainedCheckpoint, find_checkpoint
from pspnet_tf.convert.torch_io import read_state_dict
from pspnet_tf.data.descriptors import dataset_classes
from pspnet_tf.errors import UserError
from pspnet_tf.models import build_pspnet
from pspnet_tf.models.segmentation_model import (load_model_file, model_metadata, save_model,
                                                 segmentation_model)


def from_pretrained(checkpoint: str | PretrainedCheckpoint,
                    cache_dir: str | None = None) -> keras.Model:
    """The inference PSPNet of a published checkpoint (a name from `list_pretrained()`).

    `cache_dir` defaults to $PSPNET_TF_CACHE, else $KERAS_HOME/pspnet_tf or
    ~/.keras/pspnet_tf. ImageNet backbone names are refused: they fill only the backbone
    of a model that still has to be trained (train.py --pretrained=NAME).
    """
    entry = checkpoint if isinstance(checkpoint, PretrainedCheckpoint) \
        else find_checkpoint(checkpoint)
    if entry.dataset is None:
        raise UserError(f"{entry.name} is an ImageNet backbone, not a segmentation model; "
                        f"start training from it with train.py --pretrained={entry.name}, or "
                        "pick a pspnet_* name")
    cache_dir = cache_dir or default_cache_dir()
    cached = os.path.join(cache_dir, os.path.splitext(entry.file_name)[0] + ".keras")
    if os.path.isfile(cached):
        return load_model_file(cached)
    class_names, palette = dataset_classes(entry.dataset, entry.data_root)
    path = fetch(entry.resolved_url(), cache_dir)
    model = build_pspnet(len(class_names), backbone=entry.backbone,
                         output_stride=entry.output_stride, psp_channels=entry.psp_channels,
                         aux_channels=entry.aux_channels, training_heads=True)
    assign(model, checkpoint_weights(model, read_state_dict(path), path, "mmseg"))
    metadata = model_metadata(entry.dataset, entry.data_root, class_names, palette, entry.scale)
    inference = segmentation_model(model, {**metadata, "name": entry.name})
    save_model(inference, cached)
    return inference
