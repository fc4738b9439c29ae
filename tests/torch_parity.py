"""Keras-against-PyTorch parity helpers shared by the conversion tests: mmseg-layout
checkpoints of the reference PSPNet (tests/torch_reference.py) and logits compared the way
the conversion promises (1e-4 of the logits' scale, 99.9% argmax agreement)."""

import numpy as np
import torch

from helpers import TINY_HEADS
from torch_reference import PSPNet, randomise

NUM_CLASSES = 5  # the demo dataset's classes


def tiny_reference(aux: bool = True, num_classes: int = NUM_CLASSES, seed: int = 0):
    """The reference PSPNet R-18 with the tiny heads (helpers.TINY_HEADS), random weights."""
    return randomise(PSPNet(18, 8, num_classes, aux=aux, **TINY_HEADS), seed=seed)


def save_mmseg(model: torch.nn.Module, path) -> str:
    """Saves like mmsegmentation: the state dict wrapped with metadata."""
    torch.save({"state_dict": model.state_dict(),
                "meta": {"mmseg_version": "0.5", "CLASSES": ["a", "b"], "iter": 20000}}, path)
    return str(path)


def keras_logits(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """The Keras model's logits (NHWC) for NCHW `images`, by output name."""
    out = model(images.transpose(0, 2, 3, 1), training=False)
    return {name: value.numpy() for name, value in out.items()} if isinstance(out, dict) \
        else {"logits": out.numpy()}


def torch_logits(model: torch.nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's logits, transposed to NHWC, under the Keras model's output names."""
    with torch.no_grad():
        logits, aux = model(torch.from_numpy(images))
    found = {"logits": logits.numpy().transpose(0, 2, 3, 1)}
    if aux is not None:
        found["aux_logits"] = aux.numpy().transpose(0, 2, 3, 1)
    return found


def assert_parity(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, reference in expected.items():
        difference = np.abs(actual[name] - reference).max()
        scale = np.abs(reference).max()
        agreement = (actual[name].argmax(-1) == reference.argmax(-1)).mean()
        assert difference <= 1e-4 * scale, f"{name}: max |diff| {difference} at scale {scale}"
        assert agreement >= 0.999, f"{name}: argmax agreement {agreement}"
