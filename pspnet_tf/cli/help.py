"""The command line before absl parses it: shipped flagfiles, --verbose, and a grouped --help.

absl's `--help` lists only the flags the main module itself defines, so for train.py it
listed none of the project's ("Try --helpfull"), and `--helpfull` mixes them among ~200
absl and TensorFlow flags. `--help` (-h, -?, --helpshort) here prints every flag of this
project that the command reads (cli/flag_groups.py), grouped, with its default;
`--helpfull` stays absl's. An experiment flag the command does not read is refused on the
command line, and accepted from a flagfile (the flagfiles in configs/ serve every command).
"""

import os
import sys
import textwrap
from collections.abc import Callable, Iterator

from absl import flags

from pspnet_tf import config
from pspnet_tf_launch import native_logs
from pspnet_tf.cli.console import print_on_own_line
from pspnet_tf.cli.flag_groups import (
    GROUP_ORDER,
    READERS,
    command_flag_group,
    define,
    reads,
)
from pspnet_tf.packaged_configs import config_names, resolve_flagfile_args

_HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
_FOREIGN_MODULES = ("absl.", "tensorflow.", "keras.")
_WIDTH = 92
USAGE_EXIT_STATUS = 2  # a mistake in the command line


def define_verbose_flag(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """--verbose, read by pspnet_tf_launch/startup.py before TensorFlow starts (defined once)."""
    if "verbose" not in flag_values:
        define(
            "runtime", flags.DEFINE_boolean, "verbose", False, "Show TensorFlow's C++ "
            "start-up log lines (oneDNN, CUDA probing); the environment "
            f"variable {native_logs.VERBOSE_ENV}=1 does the same.",
            flag_values=flag_values)


def flag_group(name: str) -> tuple[str, int]:
    """The --help group of a flag and its place in it: an experiment flag's from its config
    field, a command flag's from its definition (cli/flag_groups.py); ("other", 0) for one
    defined otherwise."""
    for group, names in config.FLAG_GROUPS.items():
        if name in names:
            return group, names.index(name)
    found = command_flag_group(name)
    if found is not None:
        return found[0], 1000 + found[1]  # after the experiment flags of its group
    return "other", 0


def project_flags(flag_values: flags.FlagValues = flags.FLAGS, command: str = ""
                  ) -> list[flags.Flag]:
    """The flags this project defined (not absl's, TensorFlow's or Keras') that `command`
    reads (all of them for "" or another name than cli/flag_groups.py's), sorted by name."""
    found = {flag.name: flag for module, module_flags in flag_values.flags_by_module_dict().items()
             if not module.startswith(_FOREIGN_MODULES) for flag in module_flags
             if reads(command, flag.name)}
    return [found[name] for name in sorted(found)]


def _default_text(flag: flags.Flag) -> str:
    if flag.name == "num_classes" and flag.default is None:
        return "the dataset's class count"
    if flag.default is None:
        return "required" if _is_required(flag) else "none"
    if isinstance(flag.default, bool):
        return str(flag.default).lower()
    if isinstance(flag.default, list):
        return ",".join(map(str, flag.default)) or '""'
    return str(flag.default) if flag.default != "" else '""'


def _is_required(flag: flags.Flag) -> bool:
    """absl's mark_flag_as_required adds a validator "must have a value other than None"."""
    return any("other than None" in str(getattr(validator, "message", ""))
               for validator in flag.validators)


def format_help(usage: str, flag_values: flags.FlagValues = flags.FLAGS, command: str = ""
                ) -> str:
    """The usage text, then each group's flags that `command` reads, with their defaults and
    help."""
    grouped: dict[str, list[flags.Flag]] = {}
    for flag in sorted(project_flags(flag_values, command),
                       key=lambda flag: flag_group(flag.name)[1]):
        grouped.setdefault(flag_group(flag.name)[0], []).append(flag)
    lines = [usage.strip(), ""]
    for group in (*GROUP_ORDER, "other"):
        if group not in grouped:
            continue
        lines.append(f"{group}:")
        for flag in grouped[group]:
            choices = getattr(flag.parser, "enum_values", None)
            text = flag.help
            if choices:  # absl prefixes an enum's help with "<a|b|c>: "
                text = text.removeprefix(f"<{'|'.join(choices)}>: ")
            lines.append(f"  --{flag.name}{'=<' + '|'.join(choices) + '>' if choices else ''}"
                         f"  (default: {_default_text(flag)})")
            lines.extend(textwrap.wrap(text, _WIDTH, initial_indent=" " * 6,
                                       subsequent_indent=" " * 6))
        lines.append("")
    lines.extend(textwrap.wrap(
        "--flagfile=FILE reads flags from a file; flags after it override it. The shipped "
        f"flagfiles are found by name from any directory: {', '.join(config_names())}. "
        "--helpfull also lists absl's and TensorFlow's flags.", _WIDTH))
    return "\n".join(lines)


def command_name(main: Callable) -> str:
    """The command whose entry point runs `main`: "evaluate" for pspnet_tf/cli/evaluate.py's
    (also run as `python -m` or through a root shim)."""
    module = sys.modules.get(getattr(main, "func", main).__module__)
    spec = getattr(module, "__spec__", None)
    name = spec.name if spec else os.path.splitext(getattr(module, "__file__", "") or "")[0]
    return name.replace(os.sep, ".").rsplit(".", 1)[-1]


def _flag_names(argv: list[str]) -> Iterator[str]:
    """The flags named on the command line `argv` (not those of a --flagfile in it)."""
    for arg in argv[1:]:
        if arg == "--":
            return
        if arg.startswith("-"):
            yield arg.lstrip("-").split("=", 1)[0]


def refuse_unread_flags(argv: list[str], command: str,
                        flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Exits with status 2 and one `error:` line when the command line `argv` gives
    `command` an experiment flag it does not read (a flagfile may set it)."""
    for name in _flag_names(argv):
        if name.startswith("no") and name[2:] in READERS and flag_values[name[2:]].boolean:
            name = name[2:]  # --noFLAG of a boolean
        if name in READERS and not reads(command, name):
            readers = READERS[name]
            what = ("it is a training flag" if readers == ("train",) else
                    "it is read by " + ", ".join(f"pspnet-{reader}" for reader in readers))
            print_on_own_line(f"error: --{name} is not read by pspnet-{command} ({what}); "
                              "leave it out (a --flagfile may still set it)")
            sys.exit(USAGE_EXIT_STATUS)


def prepare_argv(argv: list[str], main: Callable) -> list[str]:
    """What the entry points do before absl parses `argv`: define --verbose, find shipped
    flagfiles by name, print the grouped help (exit 0) when asked for it, and refuse an
    experiment flag the command does not read (exit 2)."""
    define_verbose_flag()
    argv = resolve_flagfile_args(argv)
    command = command_name(main)
    if any(arg in _HELP_ARGS for arg in argv[1:]):
        module = sys.modules.get(getattr(main, "func", main).__module__)
        print(format_help((module and module.__doc__) or "", command=command))
        sys.exit(0)
    refuse_unread_flags(argv, command)
    return argv
