"""Public names of a package that load their module on first use (PEP 562).

`import pspnet_tf` (or `pspnet_tf.data`, `pspnet_tf.convert`) must not load TensorFlow: a
command sets TensorFlow's start-up variables and catches its start-up lines before it
loads (cli/startup.py), and the command's own modules are imported after their package's
__init__. So the packages name their exports here, and each loads when first asked for.
"""

import importlib
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, whose names `exports` maps each to the
    module that defines it."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # the next look-up is a plain attribute
        return value

    def __dir__() -> list[str]:  # the public names and submodules, not import helpers
        loaded = {name for name, value in namespace.items()
                  if isinstance(value, types.ModuleType) and not name.startswith("_")}
        return sorted({*exports, *namespace.get("__all__", ()), *loaded,
                       *(name for name in namespace if name.startswith("__"))})

    return __getattr__, __dir__
