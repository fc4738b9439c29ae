"""Pictures of label maps: dataset-palette colouring, palette PNGs, overlays and legends; and
confidence maps as gray PNGs."""

import cv2
import numpy as np
from PIL import Image

from pspnet_tf.data.descriptors import IGNORE_INDEX

IGNORE_COLOUR = (0, 0, 0)
# Name in legends of IGNORE_INDEX pixels in a prediction (below the confidence threshold).
UNKNOWN_NAME = "unknown"
# {confidence PNG kind: (pixel dtype, the value of probability 1)}: a pixel is round(p * top).
CONFIDENCE_PNGS = {"8bit": (np.uint8, 255), "16bit": (np.uint16, 65535)}
_LEGEND_ROW = 20
_LEGEND_SWATCH = 14
_LEGEND_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LEGEND_FONT_SCALE = 0.45
_BACKGROUND = 255
_OVERLAY_ROWS = 256


def _palette_table(palette: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore_index] = IGNORE_COLOUR
    return table


def colorize(labels: np.ndarray, palette: np.ndarray,
             ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Maps an HxW label map to an HxWx3 uint8 RGB image; ignored (and unknown) pixels are
    black."""
    return _palette_table(palette, ignore_index)[np.asarray(labels).astype(np.uint8)]


def save_label_png(labels: np.ndarray, palette: np.ndarray, path: str) -> None:
    """Writes class ids as an 8-bit palette PNG: the pixel values ARE the ids (as in VOC), and
    image viewers show them in the dataset's colours."""
    image = Image.fromarray(np.asarray(labels).astype(np.uint8), mode="P")
    image.putpalette(_palette_table(palette).reshape(-1).tolist())
    image.save(path)


def save_confidence_png(confidence: np.ndarray, kind: str, path: str) -> None:
    """Writes probabilities p in [0, 1] (float [H, W]) as a gray PNG of CONFIDENCE_PNGS[kind]:
    round(p * 255) in 8 bits or round(p * 65535) in 16 bits."""
    dtype, top = CONFIDENCE_PNGS[kind]
    scaled = np.asarray(confidence).astype(np.float64)  # one temporary, scaled in place
    scaled *= top
    Image.fromarray(np.round(scaled, out=scaled).astype(dtype)).save(path)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray,
            alpha: float = 0.5) -> np.ndarray:
    """The RGB image blended with the coloured prediction (alpha = weight of the colours).

    Blends _OVERLAY_ROWS rows at a time, so that the float64 temporaries of the blend do not
    grow the peak memory with the picture's area (docs/performance.md).
    """
    blended = np.empty_like(image, np.uint8)
    for top in range(0, image.shape[0], _OVERLAY_ROWS):
        rows = slice(top, top + _OVERLAY_ROWS)
        mixed = (1.0 - alpha) * image[rows].astype(np.float32) + alpha * colorize(labels[rows],
                                                                                  palette)
        blended[rows] = np.clip(np.round(mixed), 0, 255)
    return blended


def legend(class_ids: np.ndarray, class_names: tuple[str, ...], palette: np.ndarray,
           height: int) -> np.ndarray:
    """A white RGB panel, at least `height` tall, with a colour swatch and name per class
    (IGNORE_INDEX: UNKNOWN_NAME in black)."""
    names = [UNKNOWN_NAME if index == IGNORE_INDEX else class_names[index]
             for index in class_ids]
    colours = _palette_table(palette)
    text_width = max([cv2.getTextSize(name, _LEGEND_FONT, _LEGEND_FONT_SCALE, 1)[0][0]
                      for name in names] or [0])
    panel = np.full((max(height, _LEGEND_ROW * len(names) + 6), text_width + 36, 3),
                    _BACKGROUND, np.uint8)
    for row, (index, name) in enumerate(zip(class_ids, names)):
        top = 6 + row * _LEGEND_ROW
        panel[top:top + _LEGEND_SWATCH, 6:6 + _LEGEND_SWATCH] = colours[index]
        cv2.putText(panel, name, (28, top + _LEGEND_SWATCH - 2), _LEGEND_FONT,
                    _LEGEND_FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def side_by_side(image: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
                 palette: np.ndarray) -> np.ndarray:
    """image | coloured prediction | legend of the classes present, on a white background."""
    panels = [image, colorize(labels, palette),
              legend(np.unique(labels), class_names, palette, image.shape[0])]
    height = max(panel.shape[0] for panel in panels)
    padded = [np.pad(panel, ((0, height - panel.shape[0]), (0, 0), (0, 0)),
                     constant_values=_BACKGROUND) for panel in panels]
    return np.concatenate(padded, axis=1)
