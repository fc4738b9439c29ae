"""The flagfiles of configs/, found by name wherever the command runs.

In the repository, `--flagfile=configs/voc_r50.cfg` is a plain path. After `pip install`,
the same files ship as the package data `pspnet_tf/configs`, so `--flagfile=voc_r50`,
`--flagfile=voc_r50.cfg` or `--flagfile=configs/voc_r50.cfg` also work from any directory:
a flagfile path that does not exist is looked up by its file name among the packaged ones.
"""

import os

_SUFFIX = ".cfg"
_FLAGFILE_FLAGS = ("--flagfile", "-flagfile")


def config_dir() -> str:
    """The folder holding the shipped .cfg files.

    An installed wheel has them in pspnet_tf/configs; a source checkout (and an editable
    install of it) keeps them in the repository's configs/ beside the package.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "configs")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package),
                                                                   "configs")


def config_names() -> list[str]:
    """The shipped flagfiles' names, without .cfg."""
    return sorted(name[: -len(_SUFFIX)] for name in os.listdir(config_dir())
                  if name.endswith(_SUFFIX))


def resolve_flagfile(path: str) -> str:
    """`path` when it exists, else the shipped flagfile of that name (else `path` unchanged,
    so absl reports the missing file)."""
    if os.path.exists(path):
        return path
    name = os.path.basename(path)
    if not name.endswith(_SUFFIX):
        name += _SUFFIX
    shipped = os.path.join(config_dir(), name)
    return shipped if os.path.isfile(shipped) else path


def resolve_flagfile_args(argv: list[str]) -> list[str]:
    """argv with every `--flagfile=PATH` (or `--flagfile PATH`) resolved by
    `resolve_flagfile`."""
    resolved = list(argv)
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name in _FLAGFILE_FLAGS and equals:
            resolved[index] = f"{name}={resolve_flagfile(value)}"
        elif arg in _FLAGFILE_FLAGS and index + 1 < len(argv):
            resolved[index + 1] = resolve_flagfile(argv[index + 1])
    return resolved
