"""The experiment configuration: one typed record, built from absl flags or flagfiles.

Entry points call `define_flags()` once and `config_from_flags()` after parsing. Every
flagfile in configs/ sets these flags; evaluate.py and predict.py accept the same files.
"""

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from absl import flags

from pspnet_tf.atomic import write_atomically
from pspnet_tf.data.datasets import DATASET_NAMES, dataset_classes
from pspnet_tf.errors import UserError
from pspnet_tf.models import BACKBONES


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run; saved as run_dir/config.json."""

    dataset: str = "voc"
    data_root: str = "data/VOCdevkit/VOC2012"
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int = 21
    backbone: str = "resnet50_v1c"
    output_stride: int = 8
    psp_channels: int = 512
    aux_channels: int = 256
    aux_loss_weight: float = 0.4
    dropout: float = 0.1
    crop_size: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    skip_bad_samples: bool = False
    tfrecord_dir: str = ""
    batch_size: int = 16
    epochs: int = 60
    learning_rate: float = 0.01
    end_learning_rate: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    strategy: str = "auto"
    tpu: str = ""
    run_dir: str = "runs/default"
    checkpoint_every_steps: int = 0
    eval_every_epochs: int = 1
    num_image_summaries: int = 4
    pretrained: str = ""
    mixed_precision: str = "float32"
    jit_compile: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Fields that may change between a run and its resumption without making it another run.
RESUMABLE_FIELDS = frozenset(
    {
        "run_dir",
        "checkpoint_every_steps",
        "eval_every_epochs",
        "num_image_summaries",
        "strategy",
        "tpu",
        "data_root",
        "skip_bad_samples",
        "tfrecord_dir",
        "jit_compile",
    }
)

PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

# train.py's lock in run_dir (pspnet_tf.training.run_lock), taken before prepare_run_dir.
RUN_LOCK_FILE = "train.lock"

_DEFAULTS = ExperimentConfig()

CHECKPOINTS_DIR = "checkpoints"  # run_dir/checkpoints/ckpt-STEP.*

# The --help group of each flag define_flags() defines (see pspnet_tf.cli_help).
FLAG_GROUPS = {
    "data": ("dataset", "data_root", "train_split", "val_split", "num_classes", "crop_size",
             "scale", "ratio_range", "cat_max_ratio", "skip_bad_samples", "tfrecord_dir"),
    "model": ("backbone", "output_stride", "psp_channels", "aux_channels", "dropout",
              "pretrained"),
    "optimisation": ("batch_size", "epochs", "learning_rate", "end_learning_rate", "momentum",
                     "weight_decay", "aux_loss_weight", "seed"),
    "runtime": ("strategy", "tpu", "mixed_precision", "jit_compile"),
    "evaluation/inference": ("eval_every_epochs",),
    "output": ("run_dir", "checkpoint_every_steps", "num_image_summaries"),
}


def _pair(name: str, values: Sequence[str], kind: type) -> tuple:
    try:
        pair = tuple(kind(value) for value in values)
    except ValueError:
        pair = ()
    if len(pair) != 2 or min(pair) <= 0:
        raise UserError(
            f"--{name}={','.join(values)} is not two positive numbers; "
            f"write it like --{name}={','.join(str(v) for v in getattr(_DEFAULTS, name))}"
        )
    return pair


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the experiment flags (call once, from an entry point)."""
    d = _DEFAULTS
    flags.DEFINE_enum(
        "dataset", d.dataset, DATASET_NAMES, "Dataset layout to read.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "data_root",
        d.data_root,
        "Root directory of the dataset (for --dataset=demo it is generated there when missing).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "train_split", d.train_split, "Split used for training.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "val_split",
        d.val_split,
        "Split used for validation and evaluation.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_classes",
        None,
        "Number of classes (default: the dataset's class count, for --dataset=folder the "
        "lines of classes.txt); a value given must equal it.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "backbone", d.backbone, BACKBONES, "Dilated ResNetV1c depth.", flag_values=flag_values
    )
    flags.DEFINE_enum(
        "output_stride",
        str(d.output_stride),
        ["8", "16"],
        "Backbone output stride: 8 (D8) or 16 (D16).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "psp_channels",
        d.psp_channels,
        "Channels of the Pyramid Pooling Module branches and bottleneck.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "aux_channels",
        d.aux_channels,
        "Channels of the auxiliary FCN head.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "aux_loss_weight",
        d.aux_loss_weight,
        "Weight of the auxiliary loss.",
        lower_bound=0.0,
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "dropout",
        d.dropout,
        "Dropout2d rate before each classifier.",
        lower_bound=0.0,
        upper_bound=1.0,
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "crop_size",
        list(map(str, d.crop_size)),
        "Training crop as HEIGHT,WIDTH.",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "scale",
        list(map(str, d.scale)),
        "Resize scale as LONG,SHORT edge: "
        "training multiplies it by a random ratio, evaluation uses it as is.",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "ratio_range",
        list(map(str, d.ratio_range)),
        "Random rescale ratio range as LOW,HIGH.",
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "cat_max_ratio",
        d.cat_max_ratio,
        "Re-crop (up to 10 times) while one class covers more than this fraction of a crop.",
        lower_bound=0.0,
        upper_bound=1.0,
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "skip_bad_samples",
        d.skip_bad_samples,
        "Replace a training sample that fails to decode by the next good one (logged and "
        "counted in train.log) instead of stopping the run; python -m pspnet_tf.data.verify "
        "lists them all up front.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "tfrecord_dir",
        d.tfrecord_dir,
        "Read the splits from TFRecord shards written by python -m pspnet_tf.data.prepare "
        "tfrecord instead of the files under --data_root (\"\" = read the files).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "batch_size",
        d.batch_size,
        "Global batch size, split across replicas.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "epochs", d.epochs, "Training epochs.", lower_bound=1, flag_values=flag_values
    )
    flags.DEFINE_float(
        "learning_rate",
        d.learning_rate,
        "Base SGD learning rate.",
        lower_bound=0.0,
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "end_learning_rate",
        d.end_learning_rate,
        "Learning rate the poly schedule ends at.",
        lower_bound=0.0,
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "momentum", d.momentum, "SGD momentum.", lower_bound=0.0, flag_values=flag_values
    )
    flags.DEFINE_float(
        "weight_decay",
        d.weight_decay,
        "L2 weight decay (PyTorch SGD style).",
        lower_bound=0.0,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed", d.seed, "Seed of the data order, augmentation and weights.", flag_values=flag_values
    )
    flags.DEFINE_enum(
        "strategy",
        d.strategy,
        ["auto", "mirrored", "multi_worker", "one_device", "tpu"],
        "Distribution strategy; auto picks multi_worker when TF_CONFIG lists several "
        "workers, else mirrored over all local GPUs (or the CPU); tpu uses --tpu.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "tpu",
        d.tpu,
        "TPU for --strategy=tpu: a Cloud TPU name, grpc://HOST:8470, or local (a TPU VM's own "
        "TPUs); \"\" = the TPU_NAME environment variable or Cloud TPU discovery.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "run_dir",
        d.run_dir,
        "Directory for config, logs, checkpoints, "
        "TensorBoard events and metrics.json; rerunning resumes it.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "checkpoint_every_steps",
        d.checkpoint_every_steps,
        "Also checkpoint every N steps (0: only at each epoch end).",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "eval_every_epochs",
        d.eval_every_epochs,
        "Validate every N epochs (the last epoch always validates).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_image_summaries",
        d.num_image_summaries,
        "Validation images shown in TensorBoard.",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "pretrained",
        d.pretrained,
        "Initial weights, a path, URL or name: a .h5 from pspnet_tf.convert or train.py (ImageNet "
        "backbone or full PSPNet), a .pth converted on the fly, or a published checkpoint "
        "name from pspnet_tf.list_pretrained() (e.g. resnet50_v1c); "
        "\"\" = random init. A resumed run keeps its checkpointed weights.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "mixed_precision",
        d.mixed_precision,
        PRECISION_POLICIES,
        "Keras dtype policy: float32, mixed_float16 (GPUs; dynamic loss scaling) or "
        "mixed_bfloat16 (TPUs, recent GPUs and CPUs). Logits and the loss stay float32.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "jit_compile",
        d.jit_compile,
        "Compile with XLA: the training step in train.py, the network in evaluate.py and "
        "predict.py, and in export.py's SavedModel (TF Serving: --xla_cpu_compilation_enabled).",
        flag_values=flag_values,
    )


def config_from_flags(values: Any = None) -> ExperimentConfig:
    """Turns parsed flags into a checked ExperimentConfig (UserError when inconsistent)."""
    values = values or flags.FLAGS
    low, high = _pair("ratio_range", values.ratio_range, float)
    if low > high:
        raise UserError(f"--ratio_range={low},{high}: the first value must not exceed the second")
    return ExperimentConfig(
        dataset=values.dataset,
        data_root=values.data_root,
        train_split=values.train_split,
        val_split=values.val_split,
        num_classes=(values.num_classes if values.num_classes is not None
                     else len(dataset_classes(values.dataset, values.data_root)[0])),
        backbone=values.backbone,
        output_stride=int(values.output_stride),
        psp_channels=values.psp_channels,
        aux_channels=values.aux_channels,
        aux_loss_weight=values.aux_loss_weight,
        dropout=values.dropout,
        crop_size=_pair("crop_size", values.crop_size, int),
        scale=_pair("scale", values.scale, int),
        ratio_range=(low, high),
        cat_max_ratio=values.cat_max_ratio,
        skip_bad_samples=values.skip_bad_samples,
        tfrecord_dir=values.tfrecord_dir,
        batch_size=values.batch_size,
        epochs=values.epochs,
        learning_rate=values.learning_rate,
        end_learning_rate=values.end_learning_rate,
        momentum=values.momentum,
        weight_decay=values.weight_decay,
        seed=values.seed,
        strategy=values.strategy,
        tpu=values.tpu,
        run_dir=values.run_dir,
        checkpoint_every_steps=values.checkpoint_every_steps,
        eval_every_epochs=values.eval_every_epochs,
        num_image_summaries=values.num_image_summaries,
        pretrained=values.pretrained,
        mixed_precision=values.mixed_precision,
        jit_compile=values.jit_compile,
    )


def check_run_dir_is_a_folder(run_dir: str) -> None:
    """UserError when --run_dir names an existing file."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"--run_dir={run_dir} is a file, not a directory; "
                        "pass another --run_dir (nothing was changed)")


def prepare_run_dir(config: ExperimentConfig) -> bool:
    """Creates run_dir with config.json, or checks that an existing one holds this run.

    Returns True when the directory already held this run (so training resumes). A run
    directory whose checkpoints belong to another config is never overwritten; one that a
    run left before its first checkpoint (e.g. it stopped on a bad label) holds no training
    yet, so a corrected command takes it over and rewrites its config.json.
    """
    check_run_dir_is_a_folder(config.run_dir)
    path = os.path.join(config.run_dir, "config.json")
    if os.path.exists(path):
        changed = _changed_fields(config, path)
        if not changed:
            return True
        if _holds_checkpoints(config.run_dir):
            details = ", ".join(f"{key}: {old} -> {new}" for key, old, new in changed)
            raise UserError(
                f"--run_dir={config.run_dir} holds a run with another config "
                f"({details}); pass a new --run_dir (nothing was changed)"
            )
    elif os.path.isdir(config.run_dir) and set(os.listdir(config.run_dir)) - {RUN_LOCK_FILE}:
        raise UserError(
            f"--run_dir={config.run_dir} is not empty and holds no config.json; "
            "pass a new or empty --run_dir (nothing was changed)"
        )
    os.makedirs(config.run_dir, exist_ok=True)
    write_atomically(path, lambda target: pathlib.Path(target).write_text(config.to_json()))
    return False


def _changed_fields(config: ExperimentConfig, path: str) -> list[tuple[str, Any, Any]]:
    """(field, saved value, current value) for each non-resumable field that differs from
    the config.json at `path`."""
    with open(path) as handle:
        try:
            saved = json.load(handle)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{path} is not valid JSON ({error}); restore it or choose another --run_dir"
            ) from error
    current = json.loads(config.to_json())
    # A field added to the config after the run started counts as its default value.
    saved = {**json.loads(_DEFAULTS.to_json()), **saved}
    return [(key, saved.get(key), current.get(key))
            for key in sorted(set(saved) | set(current))
            if key not in RESUMABLE_FIELDS and saved.get(key) != current.get(key)]


def _holds_checkpoints(run_dir: str) -> bool:
    directory = os.path.join(run_dir, CHECKPOINTS_DIR)
    return os.path.isdir(directory) and any(name.startswith("ckpt-")
                                            for name in os.listdir(directory))
