"""Small helpers shared by several test modules."""

import os


def files_under(root) -> dict[str, bytes]:
    """Every file below `root` with its bytes, by its path relative to `root`."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found
