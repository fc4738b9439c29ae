"""The --help group of each command flag, recorded where the flag is defined, and which
commands read each experiment flag.

The experiment flags take their group from the config fields (`config.FLAG_GROUPS`); every
other flag is defined through `define`, which records its group beside the definition, so
that the grouped --help (cli/help.py) needs no second list of flag names.

Every command defines all experiment flags, so that the shared flagfiles (configs/*.cfg)
serve them all, but reads only some: those of the sections `SECTION_COMMANDS` gives it,
with the per-field exceptions of `FIELD_COMMANDS`. A new config field is read by its
section's commands, or by those of its one line in `FIELD_COMMANDS`. Command flags
(`define`) are read by the commands that define them.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from pspnet_tf import config

GROUP_ORDER = ("data", "model", "optimisation", "runtime", "evaluation/inference", "output")

# The commands, as `pspnet-<name>` (pyproject.toml) and pspnet_tf/cli/<name>.py name them.
COMMANDS = ("train", "evaluate", "predict", "export", "submit", "convert", "verify", "prepare")
_INFERENCE = ("evaluate", "predict", "export", "submit")
# {config section: the commands that read its fields}.
SECTION_COMMANDS = {
    "model": ("train", "convert", *_INFERENCE),
    "data": ("train",),
    "optimizer": ("train",),
    "runtime": ("train",),
}
# {config field: the commands that read it}, where they are not its section's.
FIELD_COMMANDS = {
    "num_classes": (*SECTION_COMMANDS["model"], "verify"),
    "dataset": COMMANDS,
    "data_root": COMMANDS,
    "train_split": ("train", "export", "verify", "prepare"),  # export: --quantize=int8
    "val_split": ("train", "evaluate", "verify", "prepare"),
    "scale": ("train", *_INFERENCE),
    "tfrecord_dir": ("train", "evaluate", "export"),
    "reduce_zero_label": ("train", "evaluate", "verify"),
    "mixed_precision": ("train", *_INFERENCE),  # inference: --precision's default
    "jit_compile": ("train", *_INFERENCE),
    "winograd": ("train", *_INFERENCE),  # train: recorded for the run's later commands
}

# {flag name: (group, place in the order of definition)} of the flags `define` defined.
_GROUPS: dict[str, tuple[str, int]] = {}


def _field_commands() -> dict[str, tuple[str, ...]]:
    readers = {}
    for section in dataclasses.fields(config.ExperimentConfig):
        for field in dataclasses.fields(section.default_factory):
            readers[field.name] = FIELD_COMMANDS.get(field.name, SECTION_COMMANDS[section.name])
    return readers


# {experiment flag: the commands that read it}.
READERS = _field_commands()


def reads(command: str, name: str) -> bool:
    """Whether `command` (one of COMMANDS; any other reads every flag) reads flag `name`:
    an experiment flag where READERS says so, every other flag it defines."""
    return command not in COMMANDS or command in READERS.get(name, (command,))


def define(group: str, definer: Callable[..., Any], name: str, *args: Any,
           **kwargs: Any) -> Any:
    """`definer(name, *args, **kwargs)` (a `flags.DEFINE_*` function), listed under `group`
    in --help."""
    if group not in GROUP_ORDER:
        raise ValueError(f"--{name}: unknown --help group {group!r}; one of {GROUP_ORDER}")
    holder = definer(name, *args, **kwargs)
    _GROUPS.setdefault(name, (group, len(_GROUPS)))
    return holder


def command_flag_group(name: str) -> tuple[str, int] | None:
    """(group, place) of a flag `define` defined; None for any other."""
    return _GROUPS.get(name)
