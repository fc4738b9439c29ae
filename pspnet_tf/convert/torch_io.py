"""Reads PyTorch state dicts safely: tensors only, no code from the file is executed."""

import os
import pickle

import numpy as np

from pspnet_tf.errors import UserError

INSTALL_HINT = "pip install 'pspnet-tf[convert]'"


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a .pth file as float32 numpy arrays, keyed by their PyTorch names.

    mmsegmentation wraps the state dict as {"state_dict": ..., "meta": ...}; plain state
    dicts (open-mmlab ImageNet checkpoints) are accepted too. `weights_only=True` makes
    torch refuse pickled objects other than tensors and plain containers.
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist; check the path")
    try:
        import torch
    except ImportError as error:
        raise UserError(f"reading {path} needs PyTorch ({INSTALL_HINT}); or convert it "
                        "where PyTorch is installed with python -m pspnet_tf.convert") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UserError(f"{path} holds objects other than tensors and is not loaded, to avoid "
                        f"running code from it ({first_line}); re-save only its state dict "
                        "from a trusted environment") from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({error}); "
                        "download it again") from error
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict (found {type(loaded).__name__}); "
                        "pass a PyTorch checkpoint of a PSPNet or a ResNetV1c")
    not_tensors = sorted(key for key, value in state.items() if not torch.is_tensor(value))
    if not_tensors:
        raise UserError(f"{path}: state dict entries that are not tensors: "
                        f"{', '.join(not_tensors[:10])}; pass a plain state dict")
    return {key: _to_numpy(value, torch) for key, value in state.items()}


def _to_numpy(tensor, torch) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    return tensor.numpy()
