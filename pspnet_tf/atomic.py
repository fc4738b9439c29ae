"""Atomic file writes: readers see the old file or the complete new one, never half of one.

A write goes to a temporary name beside its target that names the writing process
(`.<target>.tmp-<host>-<pid>-<random><suffix>`), then is renamed. A failed write removes its
temporary; one killed half-way (kill -9, a lost machine) leaves it, and the next write into
that folder is swept by the next run of the command that wrote it
(`remove_stale_temporaries`, once its writer is gone), so a full or small disk does not
fill up with orphans. A write that fails for a fault of the machine
(full disk, read-only folder, ...) raises an EnvironmentFault naming the target.
"""

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable

from absl import logging

from pspnet_tf.errors import EnvironmentFault, ParameterError, UserError, environment_faults

# Short and file-name safe: a temporary name must not hit NAME_MAX where its target does not.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
# `.<target>.tmp-<host>-<pid>-...` (write_atomically, export's folders).
_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-.*$")


_NAME_IN_TEMPORARY = 64  # characters of the target's name kept in its temporary's name


class DestinationTaken(UserError):
    """An exclusive write found its target created meanwhile, by another process."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} was created by another process while this one wrote it; it "
                         "was left as it is: let one process write into that folder")
        self.path = path


def temporary_prefix(path: str) -> str:
    """The start of the names of this process's temporaries for `path` (same folder); short
    enough for any name the file system allows for `path` itself."""
    return f".{os.path.basename(path)[:_NAME_IN_TEMPORARY]}.tmp-{_HOST}-{os.getpid()}-"


def _create_temporary(path: str, suffix: str = "") -> str:
    """A new empty temporary beside `path`, created with the mode a plain open() gives
    (0o666 less the umask): `tempfile.mkstemp`'s 0o600 would stay on the renamed result and
    hide the user's outputs from their group."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        candidate = os.path.join(folder, temporary_prefix(path) + secrets.token_hex(4) + suffix)
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return candidate
        except FileExistsError:
            continue


def _writer_gone(match: re.Match) -> bool:
    """True when the process that made a temporary ran on this host and no longer exists."""
    if match.group("host") != _HOST:
        return False  # another host's (a shared disk): it cannot be checked from here
    pid = int(match.group("pid"))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def remove_stale_temporaries(folder: str) -> list[str]:
    """Removes the temporary files and folders in `folder` whose writer is gone (killed
    during a write); returns their paths. Those of live processes and other hosts stay."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []  # a folder that does not exist (yet) or cannot be read holds none of ours
    removed = []
    for name in names:
        match = _TEMPORARY.match(name)
        if match and _writer_gone(match):
            path = os.path.join(folder, name)
            logging.warning("removing %s, left by a write that was interrupted", path)
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
    return removed


def prepare_folder(folder: str, parameter: str) -> None:
    """Creates `folder` (and its parents) for outputs and removes the temporaries that killed
    writes left there. A fault of the machine is an EnvironmentFault; a file in the way is
    the user's ParameterError, naming the argument `parameter` the folder came from (e.g.
    "export_dir")."""
    with environment_faults(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ParameterError("cannot create the %s folder {folder}: a file is in the way; "
                                 "pass a folder that can be written" % f"{{{parameter}}}",
                                 folder=folder) from None
    remove_stale_temporaries(folder)


def check_can_create(path: str) -> None:
    """Raises an EnvironmentFault naming `path` unless a file of that name could be created
    in its (existing) folder: a read-only disk, no permission, a name too long. Called
    before long work, so that the work is not lost at its end."""
    folder = os.path.dirname(os.path.abspath(path))
    with environment_faults(path):
        os.remove(_create_temporary(path))
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    if len(os.fsencode(os.path.basename(path))) > name_max:
        raise EnvironmentFault(f"{path}: the file name is too long for the file system "
                               f"(at most {name_max} bytes); choose a shorter name", path)


def write_atomically(path: str, write: Callable[[str], None], suffix: str = "",
                     exclusive: bool = False) -> None:
    """Calls `write(temporary)` for a new file beside `path`, then renames it to `path`.

    `suffix` ends the temporary name where a writer goes by it (Keras saves only to
    `*.keras`). With `exclusive`, `path` must not exist: a file created there meanwhile (by
    another process) is kept and DestinationTaken is raised (a hard link makes the name
    appear, complete, only if it is free; file systems without hard links, e.g. FAT, get
    an exclusively created name that is then replaced). A failed or interrupted write leaves
    `path` as it was and removes the temporary file when it can; a fault of the machine is
    raised as an EnvironmentFault naming `path`.
    """
    with environment_faults(path):
        temporary = _create_temporary(path, suffix)
        try:
            write(temporary)
            if exclusive:
                _link_exclusively(temporary, path)
            else:
                os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)


def _link_exclusively(temporary: str, path: str) -> None:
    try:
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here: claim the name, then fill it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            os.replace(temporary, path)
    except FileExistsError:
        raise DestinationTaken(path) from None
