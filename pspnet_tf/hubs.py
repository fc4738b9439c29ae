"""Preset folders on model hubs: `hf://owner/name` (Hugging Face) and
`kaggle://owner/model/keras/variant[/version]` (Kaggle Models), the handles keras-hub uses.

Downloading and uploading go through the hubs' own clients, huggingface_hub and kagglehub
(the `[hub]` extra), with their caches, tokens and offline modes (HF_HUB_OFFLINE,
HF_HOME, KAGGLEHUB_CACHE, ...). Both are imported only when a handle is used.
"""

import importlib
import os
from types import ModuleType

from pspnet_tf.errors import UserError

HF_PREFIX = "hf://"
KAGGLE_PREFIX = "kaggle://"
_CLIENTS = {HF_PREFIX: "huggingface_hub", KAGGLE_PREFIX: "kagglehub"}


def is_hub_handle(preset: str) -> bool:
    return preset.startswith(tuple(_CLIENTS))


def _client(handle: str) -> ModuleType:
    prefix = next(prefix for prefix in _CLIENTS if handle.startswith(prefix))
    try:
        return importlib.import_module(_CLIENTS[prefix])
    except ImportError as error:
        raise UserError(f"{handle} needs the {_CLIENTS[prefix]} package: pip install "
                        "'pspnet-tf[hub]'") from error


def _name(handle: str, prefix: str, parts: tuple[int, ...], form: str) -> str:
    name = handle[len(prefix):].strip("/")
    if name.count("/") + 1 not in parts or "" in name.split("/"):
        raise UserError(f"{handle} is not a hub handle of the form {form}")
    return name


def download_preset(handle: str) -> str:
    """The local folder of the preset `handle` names, downloaded into the hub client's
    cache (or found there)."""
    client = _client(handle)
    try:
        if handle.startswith(HF_PREFIX):
            return client.snapshot_download(_name(handle, HF_PREFIX, (2,), "hf://owner/name"))
        return client.model_download(_name(handle, KAGGLE_PREFIX, (4, 5),
                                           "kaggle://owner/model/keras/variant[/version]"))
    except UserError:
        raise
    except Exception as error:  # the clients' own errors: offline, not found, no access
        raise UserError(f"cannot download {handle}: {type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}") from error


def upload_preset(handle: str, preset_dir: str) -> None:
    """Uploads the preset folder `preset_dir` (written by `save_to_preset`) to `handle`,
    as `keras_hub.upload_preset` does: a Hugging Face repository is created if missing and
    the folder uploaded into it; a Kaggle model variant gets a new version."""
    for name in ("config.json", "model.weights.h5"):
        if not os.path.isfile(os.path.join(preset_dir, name)):
            raise UserError(f"{preset_dir} holds no {name}: pass a folder written by "
                            "save_to_preset")
    client = _client(handle)
    try:
        if handle.startswith(HF_PREFIX):
            repo = client.create_repo(_name(handle, HF_PREFIX, (2,), "hf://owner/name"),
                                      exist_ok=True)
            client.upload_folder(repo_id=repo.repo_id, folder_path=preset_dir)
        else:
            client.model_upload(_name(handle, KAGGLE_PREFIX, (4,),
                                      "kaggle://owner/model/keras/variant"), preset_dir)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"cannot upload {preset_dir} to {handle}: {type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}") from error
