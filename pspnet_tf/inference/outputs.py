"""Writing predictions: predict.py's output files and the label maps of a whole split
(evaluate.py --save_predictions).

Every output file appears complete or not at all, and is created exclusively unless the user
asked to overwrite: a second process writing the same names into the same folder stops at
its first clash with one line (DestinationTaken) instead of silently replacing the first
one's results.
"""

import functools
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.data.descriptors import DATASETS, IGNORE_INDEX
from pspnet_tf.atomic import check_can_create, prepare_folder, write_atomically
from pspnet_tf.errors import ParameterError, environment_faults
from pspnet_tf.inference.visualize import save_label_png

# Where Cityscapes labelIds predictions go, apart from the train-id PNGs: the official
# evaluation script matches every *.png under its prediction folder by image id, so the two
# kinds must not share a folder.
CITYSCAPES_LABEL_IDS_DIR = "cityscapes_labelIds"


def train_id_to_label_id() -> np.ndarray:
    """The inverse of the Cityscapes descriptor's labelId -> trainId map."""
    label_map = DATASETS["cityscapes"].label_map
    label_ids = np.flatnonzero(label_map != IGNORE_INDEX)
    table = np.zeros(256, np.uint8)  # labelId 0 ("unlabeled") for anything unmapped
    table[label_map[label_ids]] = label_ids
    return table


def stem(path: str) -> str:
    """The file name without its folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def save_output(path: str, write: Callable[[str], None], overwrite: bool = False) -> None:
    """`write(temporary)` (a file with `path`'s extension), then the file appears at `path`,
    complete. Without `overwrite` a `path` created meanwhile by another process is kept and
    DestinationTaken (a UserError) is raised."""
    write_atomically(path, write, suffix=os.path.splitext(path)[1], exclusive=not overwrite)


def make_output_folders(paths: list[str], parameter: str) -> None:
    """Creates the folders of the output files `paths` before any work is done, removes the
    temporaries that a killed earlier run left there, and checks that files can be created
    in them (a read-only or full folder, a name too long: an EnvironmentFault). A file in the
    way of a folder is the user's ParameterError naming `parameter`."""
    longest: dict[str, str] = {}
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        if len(os.path.basename(path)) > len(os.path.basename(longest.get(folder, ""))):
            longest[folder] = path
    for folder, path in longest.items():
        prepare_folder(folder, parameter)
        check_can_create(path)


class PredictionWriter:
    """An `evaluate(on_sample=...)` callback writing one palette PNG of train ids per image.

    For Cityscapes it also writes `<dir>/cityscapes_labelIds/<city>/<id>_labelIds.png` holding
    labelIds, the input of cityscapesscripts' evalPixelLevelSemanticLabeling
    (CITYSCAPES_RESULTS=<dir>/cityscapes_labelIds).
    """

    def __init__(self, dataset: SegmentationDataset, directory: str) -> None:
        if os.path.isdir(directory) and os.listdir(directory):
            raise ParameterError("{save_predictions}={directory} is not empty; pass a new or "
                                 "empty folder (nothing was written)", directory=directory)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise ParameterError("{save_predictions}={directory} cannot be created as a "
                                 "folder ({reason}); pass a new or empty folder",
                                 directory=directory, reason=error.strerror or error) from None
        check_can_create(os.path.join(directory, "prediction.png"))  # before the evaluation
        self._dataset = dataset
        self._directory = directory
        self._label_ids = train_id_to_label_id() if dataset.name == "cityscapes" else None

    def __call__(self, index: int, image: np.ndarray, label: np.ndarray,
                 prediction: np.ndarray) -> None:
        image_path = self._dataset.samples[index].image_path
        save_output(os.path.join(self._directory, f"{stem(image_path)}.png"),
                    functools.partial(save_label_png, prediction, self._dataset.palette))
        if self._label_ids is not None:
            city = os.path.basename(os.path.dirname(image_path))
            folder = os.path.join(self._directory, CITYSCAPES_LABEL_IDS_DIR, city)
            with environment_faults(folder):
                os.makedirs(folder, exist_ok=True)
            image_id = stem(image_path).removesuffix("_leftImg8bit")
            label_ids = Image.fromarray(self._label_ids[prediction.astype(np.uint8)])
            save_output(os.path.join(folder, f"{image_id}_labelIds.png"), label_ids.save)
