"""Colouring label maps with a dataset palette, for summaries and saved predictions."""

import numpy as np

IGNORE_COLOUR = (0, 0, 0)


def colorize(labels: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Maps an HxW label map to an HxWx3 uint8 RGB image; ignored pixels are black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore_index] = IGNORE_COLOUR
    return table[np.asarray(labels).astype(np.uint8)]
