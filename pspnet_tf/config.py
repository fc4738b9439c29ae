"""The experiment configuration: one typed record in sections, built from absl flags or
flagfiles.

Each setting is declared once, as a field of a section (`model`, `data`, `optimizer`,
`runtime`, after TF Model Garden's typed configs) whose metadata carries its help text,
bounds, choices, --help group and whether a resumed run may change it. The flags
(`define_flags`), their parsing (`config_from_flags`), the --help groups (`FLAG_GROUPS`),
config.json (`to_json`/`from_json`) and the resume check (`changed_fields`) all read those
fields, so a new setting is one new field (and one line in pspnet_tf/cli/flag_groups.py
where other commands than its section's read it). `model` holds exactly `build_pspnet`'s settings:
`build_pspnet(**config.model, training_heads=...)`.

Flag and config.json field names are flat and unique across sections (`--backbone`,
`"backbone"`); config.json is written nested by section. Entry points call `define_flags()` once and `config_from_flags()`
after parsing; every flagfile in configs/ sets these flags.
"""

import dataclasses
import json
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from absl import flags

from pspnet_tf.data.descriptors import DATASET_NAMES, IGNORE_INDEX, dataset_classes
from pspnet_tf.errors import UserError
from pspnet_tf.models import BACKBONES

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device", "tpu")
PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
MEMORY_SAVING = ("auto", "on", "off")
TAP_GRADIENTS = ("auto", "on", "off")
WINOGRAD = ("auto", "on", "off")


def setting(default: Any, help: str, *, lower: float | None = None,
            upper: float | None = None, choices: Sequence[Any] | None = None,
            group: str | None = None, resumable: bool = False, ordered: bool = False,
            dataset_count: bool = False) -> Any:
    """A config field and its flag: `help` text, `lower`/`upper` bounds, enum `choices`, the
    --help `group` (default: its section's), `resumable` (a resumed run may change it),
    `ordered` (a pair whose first value must not exceed the second), `dataset_count` (an
    unset flag means the dataset's class count)."""
    metadata = {"help": help, "lower": lower, "upper": upper, "choices": choices,
                "group": group, "resumable": resumable, "ordered": ordered,
                "dataset_count": dataset_count}
    return dataclasses.field(default=default, metadata=metadata)


class Section:
    """A config section; `**section` gives its fields as keyword arguments (a mapping's
    keys() and [])."""

    help_group: ClassVar[str]

    def keys(self) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(self))

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The network: exactly `build_pspnet`'s settings."""

    help_group: ClassVar[str] = "model"

    num_classes: int = setting(
        21, "Number of classes (default: the dataset's class count, for --dataset=folder the "
        "lines of classes.txt); a value given must equal it.", lower=1, group="data",
        dataset_count=True)
    backbone: str = setting("resnet50_v1c", "Dilated ResNetV1c depth.", choices=BACKBONES)
    output_stride: int = setting(8, "Backbone output stride: 8 (D8) or 16 (D16).",
                                 choices=(8, 16))
    psp_channels: int = setting(
        512, "Channels of the Pyramid Pooling Module branches and bottleneck.", lower=1)
    aux_channels: int = setting(256, "Channels of the auxiliary FCN head.", lower=1)
    dropout: float = setting(0.1, "Dropout2d rate before each classifier.", lower=0.0,
                             upper=1.0)


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """What is read and how training samples are cut from it."""

    help_group: ClassVar[str] = "data"

    dataset: str = setting("voc", "Dataset layout to read.", choices=DATASET_NAMES)
    data_root: str = setting(
        "data/VOCdevkit/VOC2012",
        "Root directory of the dataset (for --dataset=demo it is generated there when missing).",
        resumable=True)
    train_split: str = setting("train", "Split used for training.")
    val_split: str = setting("val", "Split used for validation and evaluation.")
    crop_size: tuple[int, int] = setting((512, 512), "Training crop as HEIGHT,WIDTH.")
    scale: tuple[int, int] = setting(
        (2048, 512), "Resize scale as LONG,SHORT edge: "
        "training multiplies it by a random ratio, evaluation uses it as is.")
    ratio_range: tuple[float, float] = setting(
        (0.5, 2.0), "Random rescale ratio range as LOW,HIGH.", ordered=True)
    cat_max_ratio: float = setting(
        0.75, "Re-crop (up to 10 times) while one class covers more than this fraction of a "
        "crop.", lower=0.0, upper=1.0)
    skip_bad_samples: bool = setting(
        False, "Replace a training sample that fails to decode by the next good one (logged "
        "and counted in train.log) instead of stopping the run; pspnet-verify "
        "lists them all up front.", resumable=True)
    tfrecord_dir: str = setting(
        "", "Read the splits from TFRecord shards written by pspnet-prepare "
        "tfrecord instead of the files under --data_root (\"\" = read the files).",
        resumable=True)
    reduce_zero_label: bool = setting(
        False, "Shift the label ids while reading (mmseg's reduce_zero_label): 0 = unlabelled "
        f"-> {IGNORE_INDEX} = ignore, k -> k-1; for data whose 0 means unlabelled, in "
        "training, validation and evaluation.")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Section):
    """The loss, the SGD schedule and the seed of everything random in training."""

    help_group: ClassVar[str] = "optimisation"

    batch_size: int = setting(16, "Global batch size, split across replicas.", lower=1)
    gradient_accumulation_steps: int = setting(
        1, "Micro-batches of --batch_size per optimizer step: their gradients are averaged "
        "into one step, for an effective batch of N x --batch_size at the memory of one "
        "micro-batch. Every step count (an epoch's training images // (N x --batch_size), "
        "the poly schedule over --epochs of them, --checkpoint_every_steps) is of optimizer "
        "steps; BatchNorm normalises each micro-batch alone (docs/training.md).", lower=1)
    epochs: int = setting(60, "Training epochs.", lower=1)
    learning_rate: float = setting(0.01, "Base SGD learning rate.", lower=0.0)
    end_learning_rate: float = setting(1e-4, "Learning rate the poly schedule ends at.",
                                       lower=0.0)
    momentum: float = setting(0.9, "SGD momentum.", lower=0.0)
    weight_decay: float = setting(5e-4, "L2 weight decay (PyTorch SGD style).", lower=0.0)
    aux_loss_weight: float = setting(0.4, "Weight of the auxiliary loss.", lower=0.0)
    class_weights: str = setting(
        "", "Per-class loss weights: \"\" = none, auto = ENet's 1/ln(1.02 + pixel frequency) "
        "from the training split (counted once, kept in run_dir/class_weights.json), or one "
        "comma-separated number per class.")
    ohem_threshold: float = setting(
        0.0, "Online hard-example mining as mmseg's OHEMPixelSampler, on both heads: train "
        "only on pixels whose true-class probability is below this threshold (raised to keep "
        "--ohem_min_kept pixels per image); 0 = off.", lower=0.0, upper=1.0)
    ohem_min_kept: int = setting(
        100000, "OHEM: pixels per batch image kept at least (mmseg's min_kept).", lower=0)
    seed: int = setting(0, "Seed of the data order, augmentation and weights.")
    divergence_factor: float = setting(
        1000.0, "Stop the run (exit status 3, nothing saved from that step) when the loss "
        "exceeds this many times the median of its last 20 reported values: a loss growing "
        "by orders of magnitude without reaching NaN; 0 turns the check off (NaN and "
        "infinite losses always stop it).", lower=0.0, resumable=True)

    @property
    def step_batch_size(self) -> int:
        """Samples per optimizer step: the micro-batches of one step together."""
        return self.batch_size * self.gradient_accumulation_steps


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(Section):
    """Where and how the run executes, what it writes, and its initial weights."""

    help_group: ClassVar[str] = "runtime"

    strategy: str = setting(
        "auto", "Distribution strategy; auto picks multi_worker when TF_CONFIG lists several "
        "workers, else mirrored when there are several local GPUs, else one_device (the GPU "
        "or the CPU); tpu uses --tpu.",
        choices=STRATEGIES, resumable=True)
    tpu: str = setting(
        "", "TPU for --strategy=tpu: a Cloud TPU name, grpc://HOST:8470, or local (a TPU VM's "
        "own TPUs); \"\" = the TPU_NAME environment variable or Cloud TPU discovery.",
        resumable=True)
    mixed_precision: str = setting(
        "float32", "Keras dtype policy: float32, mixed_float16 (GPUs; dynamic loss scaling) or "
        "mixed_bfloat16 (TPUs, recent GPUs and CPUs). Logits and the loss stay float32.",
        choices=PRECISION_POLICIES)
    jit_compile: bool = setting(
        False, "Compile with XLA: the training step in train.py, the network in evaluate.py "
        "and predict.py, and in export.py's SavedModel, which TF Serving then runs only if "
        "started with --xla_cpu_compilation_enabled=true (without it every run of the network "
        "fails, XLA compilation disabled, so its warm-up requests fail the load).",
        resumable=True)
    winograd: str = setting(
        "auto", "Inference: compute the 3x3 convolutions of 512 or more channels by "
        "Winograd's F(2x2,3x3) in evaluate.py, predict.py and export.py's SavedModel (train.py "
        "records it for them): the same labels, faster on CPUs whose TensorFlow runs oneDNN; "
        "off: every convolution by TensorFlow's convolution op. auto: on where TensorFlow sees "
        "no GPU or TPU and runs oneDNN (x86 CPUs with AVX-512 VNNI, AVX-VNNI or AMX), as the "
        "exporting host for export (docs/performance.md); float32 models only.",
        choices=WINOGRAD, resumable=True)
    tap_gradients: str = setting(
        "auto", "Training: compute the stride-1 convolutions' gradients by matrix products per "
        "kernel tap, faster on CPUs (same forward values). auto: on where TensorFlow sees no "
        "GPU or TPU.", choices=TAP_GRADIENTS, resumable=True)
    memory_saving: str = setting(
        "auto", "Training: trade step time for peak memory (stem, layer1 and layer2 recomputed "
        "in the backward pass; same values). auto: on where TensorFlow sees no GPU or TPU and "
        "a worker's batch holds at least 2x512x512 crop pixels (docs/performance.md).",
        choices=MEMORY_SAVING, resumable=True)
    run_dir: str = setting(
        "runs/default", "Directory for config, logs, checkpoints, "
        "TensorBoard events and metrics.json; rerunning resumes it.", group="output",
        resumable=True)
    checkpoint_every_steps: int = setting(
        0, "Also checkpoint every N steps (0: only at each epoch end).", lower=0,
        group="output", resumable=True)
    eval_every_epochs: int = setting(
        1, "Validate every N epochs (the last epoch always validates).", lower=1,
        group="evaluation/inference", resumable=True)
    best_metric: str = setting(
        "mIoU", "Validation metric that picks best_model.keras: mIoU, aAcc, mAcc, or one "
        "class's IoU as IoU:NAME or IoU:INDEX (e.g. IoU:person, IoU:15); higher is better.",
        group="evaluation/inference")
    early_stop_patience: int = setting(
        0, "Stop training after N validations in a row without a best_metric improvement "
        "(0: never); validations, not epochs, with --eval_every_epochs.", lower=0,
        group="evaluation/inference")
    early_stop_min_delta: float = setting(
        0.0, "A validation improves on the best (rewriting best_model.keras, resetting the "
        "early-stop count) only when it beats it by more than this.", lower=0.0,
        group="evaluation/inference")
    num_image_summaries: int = setting(4, "Validation images shown in TensorBoard.", lower=0,
                                       group="output", resumable=True)
    pretrained: str = setting(
        "", "Initial weights, a path, URL or name: a .h5 from pspnet_tf.convert or train.py "
        "(ImageNet backbone or full PSPNet), a .pth converted on the fly, or a published "
        "checkpoint name from pspnet_tf.list_presets() (e.g. resnet50_v1c); "
        "\"\" = random init. A resumed run keeps its checkpointed weights.", group="model")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run; saved as run_dir/config.json."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    @classmethod
    def from_fields(cls, **fields: Any) -> "ExperimentConfig":
        """The default config with `fields` (flat names, e.g. backbone=...) set."""
        return cls().replace(**fields)

    def replace(self, **fields: Any) -> "ExperimentConfig":
        """This config with `fields` (flat names) changed; ValueError names an unknown one."""
        unknown = sorted(set(fields) - set(_SECTION_OF))
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        changes = {}
        for section in _SECTIONS:
            own = {name: value for name, value in fields.items() if _SECTION_OF[name] == section}
            if own:
                changes[section] = dataclasses.replace(getattr(self, section), **own)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """config.json's text: one object per section."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExperimentConfig":
        """The config a config.json holds (nested by section); a field it lacks (added
        later) takes its default."""
        fields = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in flat_fields(json.loads(text)).items()}
        return cls.from_fields(**fields)


def _experiment_fields() -> Iterator[tuple[type[Section], dataclasses.Field]]:
    """(section type, field) of every setting, in declaration order."""
    for section in dataclasses.fields(ExperimentConfig):
        for field in dataclasses.fields(section.default_factory):
            yield section.default_factory, field


_SECTIONS = tuple(section.name for section in dataclasses.fields(ExperimentConfig))
_SECTION_OF = {field.name: section.name for section in dataclasses.fields(ExperimentConfig)
               for field in dataclasses.fields(section.default_factory)}


def _flag_groups() -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for section, field in _experiment_fields():
        group = field.metadata["group"] or section.help_group
        groups[group] = (*groups.get(group, ()), field.name)
    return groups


# The --help group of each flag define_flags() defines (see pspnet_tf/cli/help.py), in
# declaration order within each group.
FLAG_GROUPS = _flag_groups()

# Fields that may change between a run and its resumption without making it another run.
RESUMABLE_FIELDS = frozenset(field.name for _, field in _experiment_fields()
                             if field.metadata["resumable"])


def flat_fields(saved: Mapping[str, Any]) -> dict[str, Any]:
    """{field name: value} of a config.json object, nested by section. Names of no field
    within a section are kept, so a comparison still sees them; anything beside the
    sections is refused (ValueError)."""
    outside = sorted(key for key, value in saved.items()
                     if key not in _SECTIONS or not isinstance(value, Mapping))
    if outside:
        raise ValueError(f"a config.json holds one object per section ({', '.join(_SECTIONS)});"
                         f" this one also has {', '.join(outside)}")
    return {key: value for section in saved.values() for key, value in section.items()}


def changed_fields(saved: Mapping[str, Any], config: ExperimentConfig
                   ) -> list[tuple[str, Any, Any]]:
    """(field, saved value, current value) for each non-resumable field in which `config`
    differs from a saved config.json object, in JSON values."""
    current = flat_fields(json.loads(config.to_json()))
    # A field added to the config after the run started counts as its default value.
    saved = {**flat_fields(json.loads(ExperimentConfig().to_json())), **flat_fields(saved)}
    return [(key, saved.get(key), current.get(key))
            for key in sorted(set(saved) | set(current))
            if key not in RESUMABLE_FIELDS and saved.get(key) != current.get(key)]


def _element_type(field: dataclasses.Field) -> type | None:
    """int or float for a pair field (tuple[int, int]), else None."""
    return typing.get_args(field.type)[0] if typing.get_origin(field.type) is tuple else None


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one flag per config field (call once, from an entry point)."""
    for _, field in _experiment_fields():
        meta = field.metadata
        bounds = {key: meta[name] for key, name in (("lower_bound", "lower"),
                                                    ("upper_bound", "upper"))
                  if meta[name] is not None}
        if meta["choices"]:
            flags.DEFINE_enum(field.name, str(field.default), [str(c) for c in meta["choices"]],
                              meta["help"], flag_values=flag_values)
        elif _element_type(field):
            flags.DEFINE_list(field.name, [str(value) for value in field.default],
                              meta["help"], flag_values=flag_values)
        elif field.type is bool:
            flags.DEFINE_boolean(field.name, field.default, meta["help"], flag_values=flag_values)
        elif field.type is int:
            default = None if meta["dataset_count"] else field.default
            flags.DEFINE_integer(field.name, default, meta["help"], **bounds,
                                 flag_values=flag_values)
        elif field.type is float:
            flags.DEFINE_float(field.name, field.default, meta["help"], **bounds,
                               flag_values=flag_values)
        else:
            flags.DEFINE_string(field.name, field.default, meta["help"], flag_values=flag_values)


def parse_numbers(name: str, values: Sequence[str], kind: type, count: int | None,
                  example: Sequence[float]) -> tuple:
    """The comma-separated flag --`name` (absl's list of its texts) as positive `kind`
    numbers, `count` of them when given: the one parser of the commands' number lists. A
    UserError in one line naming the flag and an `example` value otherwise."""
    try:
        numbers = tuple(kind(value) for value in values)
    except ValueError:
        numbers = ()
    if not numbers or (count and len(numbers) != count) or min(numbers) <= 0:
        amount = {2: "two "}.get(count, f"{count} ") if count else "a list of "
        raise UserError(f"--{name}={','.join(values)} is not {amount}positive numbers; write "
                        f"it like --{name}={','.join(str(value) for value in example)}")
    return numbers


def _pair(field: dataclasses.Field, values: Sequence[str]) -> tuple:
    """A pair flag's two positive numbers; UserError in one line otherwise."""
    name = field.name
    pair = parse_numbers(name, values, _element_type(field), 2, field.default)
    if field.metadata["ordered"] and pair[0] > pair[1]:
        raise UserError(f"--{name}={pair[0]},{pair[1]}: the first value must not exceed the "
                        "second")
    return pair


def config_from_flags(values: Any = None) -> ExperimentConfig:
    """Turns parsed flags into a checked ExperimentConfig (UserError when inconsistent)."""
    values = values or flags.FLAGS
    fields = {}
    for _, field in _experiment_fields():
        value = values[field.name].value
        if _element_type(field):
            value = _pair(field, value)
        elif field.metadata["choices"]:
            value = field.type(value)  # --output_stride=16 -> 16
        elif field.metadata["dataset_count"] and value is None:
            value = len(dataset_classes(values.dataset, values.data_root)[0])
        fields[field.name] = value
    return ExperimentConfig.from_fields(**fields)
