"""Atomic file writes: readers see the old file or the complete new one, never half of one."""

import os
import tempfile
from collections.abc import Callable


def write_atomically(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Calls `write(temporary)` for a new file beside `path`, then renames it to `path`.

    `suffix` ends the temporary name where a writer goes by it (Keras saves only to
    `*.keras`). A failed or interrupted write leaves `path` as it was and removes the
    temporary file when it can.
    """
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                         prefix=f".{os.path.basename(path)}.tmp",
                                         suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
