"""The command line before absl parses it: shipped flagfiles, --verbose, and a grouped --help.

absl's `--help` lists only the flags the main module itself defines, so for train.py it
listed none of the project's ("Try --helpfull"), and `--helpfull` mixes them among ~200
absl and TensorFlow flags. `--help` (-h, -?, --helpshort) here prints every flag the
command accepts from this project, grouped, with its default; `--helpfull` stays absl's.
"""

import sys
import textwrap
from collections.abc import Callable

from absl import flags

from pspnet_tf import config, native_logs
from pspnet_tf.cli.flag_groups import GROUP_ORDER, command_flag_group, define
from pspnet_tf.packaged_configs import config_names, resolve_flagfile_args

_HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
_FOREIGN_MODULES = ("absl.", "tensorflow.", "keras.")
_WIDTH = 92


def define_verbose_flag(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """--verbose, read by cli/startup.py before TensorFlow starts (defined once)."""
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


def project_flags(flag_values: flags.FlagValues = flags.FLAGS) -> list[flags.Flag]:
    """The flags this project defined (not absl's, TensorFlow's or Keras'), sorted by name."""
    found = {flag.name: flag for module, module_flags in flag_values.flags_by_module_dict().items()
             if not module.startswith(_FOREIGN_MODULES) for flag in module_flags}
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


def format_help(usage: str, flag_values: flags.FlagValues = flags.FLAGS) -> str:
    """The usage text, then each group's flags with their defaults and help."""
    grouped: dict[str, list[flags.Flag]] = {}
    for flag in sorted(project_flags(flag_values), key=lambda flag: flag_group(flag.name)[1]):
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


def prepare_argv(argv: list[str], main: Callable) -> list[str]:
    """What the entry points do before absl parses `argv`: define --verbose, find shipped
    flagfiles by name, and print the grouped help (exit 0) when asked for it."""
    define_verbose_flag()
    argv = resolve_flagfile_args(argv)
    if any(arg in _HELP_ARGS for arg in argv[1:]):
        module = sys.modules.get(getattr(main, "func", main).__module__)
        print(format_help((module and module.__doc__) or ""))
        sys.exit(0)
    return argv
