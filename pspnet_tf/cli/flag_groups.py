"""The --help group of each command flag, recorded where the flag is defined.

The experiment flags take theirs from the config fields (`config.FLAG_GROUPS`); every other
flag is defined through `define`, which records its group beside the definition, so that
the grouped --help (cli/help.py) needs no second list of flag names.
"""

from collections.abc import Callable
from typing import Any

GROUP_ORDER = ("data", "model", "optimisation", "runtime", "evaluation/inference", "output")

# {flag name: (group, place in the order of definition)} of the flags `define` defined.
_GROUPS: dict[str, tuple[str, int]] = {}


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
