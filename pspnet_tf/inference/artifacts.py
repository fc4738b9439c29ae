"""train.py's run_dir/final_model.keras: the trained network as a self-describing
`PSPNetSegmenter` with its run's dataset, classes and test scale, so that evaluate.py,
predict.py and export.py need only `--model=PATH.keras`.
"""

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.models import PSPNetSegmenter
from pspnet_tf.models.saving import save_model


def save_final_model(model: PSPNetSegmenter, config: ExperimentConfig,
                     dataset: SegmentationDataset, path: str) -> None:
    """Writes the inference variant of a trained `model` (no auxiliary head, no training
    choices) with its run's dataset and scale.

    The class names and palette come from the opened `dataset` (also TFRecord shards,
    whose data root may hold no class file).
    """
    inference = model.variant(
        auxiliary_head=False, tap_gradients=False, recompute=None,
        class_names=list(dataset.class_names), palette=dataset.palette,
        scale=config.data.scale, dataset=config.data.dataset, data_root=config.data.data_root)
    save_model(inference, path)
