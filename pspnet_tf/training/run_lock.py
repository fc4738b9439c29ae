"""One training process per run directory: an exclusive lock file naming its holder.

Two launches on one --run_dir would both train, write the same checkpoint names, append
every history.csv row twice and interleave train.log. The lock file is created with
O_CREAT | O_EXCL (atomic, also on NFS v3+) before anything else in the run directory is
written and holds the holder's host, pid and start time, so a refused launch can say who
holds it. A lock whose process is gone on this host (kill -9, a machine restart) is taken
over with a warning; one from another host cannot be checked from here and is taken only
with --force_unlock.
"""

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

from absl import logging

from pspnet_tf.errors import ParameterError, UserError, environment_faults
from pspnet_tf.training.run_dir import RUN_LOCK_FILE, check_run_dir_path


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}")


def _read_holder(path: str) -> dict | None:
    """The lock file's holder; {} when unreadable; None when the file is gone."""
    try:
        with open(path) as handle:
            holder = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_stale(holder: dict) -> bool:
    """True when the holder ran on this host and its process is gone (or is this one,
    as after a container restart that reuses the pid)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return pid == os.getpid() or not _process_exists(pid)


def _create(path: str, holder: dict) -> bool:
    """Creates the lock file holding `holder`; False when it exists already."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(holder, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # e.g. a full disk: an empty lock would block the rerun
        os.remove(path)
        raise
    return True


def acquire(run_dir: str, force: bool = False) -> dict:
    """Takes run_dir's lock (creating run_dir if needed) and returns the holder record.

    Raises UserError, changing nothing, when another live process holds it, and an
    EnvironmentFault when run_dir cannot be written (read-only, full, a path too long).
    """
    path = os.path.join(run_dir, RUN_LOCK_FILE)
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    check_run_dir_path(run_dir)
    with environment_faults(run_dir):
        os.makedirs(run_dir, exist_ok=True)
    for _ in range(3):  # another launch may release or take it between our steps
        with environment_faults(path):
            created = _create(path, holder)
        if created:
            return holder
        current = _read_holder(path)
        if current is None:
            continue
        if force or _is_stale(current):
            reason = "--force_unlock" if force else "its process no longer exists"
            logging.warning("taking over the lock %s of %s (%s)", path, _describe(current),
                            reason)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        where = ("" if current.get("host") == socket.gethostname() else
                 "; it is another host, so this one cannot tell whether it still runs")
        raise ParameterError(
            "{run_dir}={path} is in use by {holder} ({lock}){where}: wait for that run to end "
            "or stop it; if it is no longer running, rerun with {force_unlock} (nothing was "
            "changed)", path=run_dir, holder=_describe(current), lock=path, where=where)
    raise ParameterError("could not take the lock {lock}: other launches keep taking it; "
                         "start one train.py per {run_dir}", lock=path)


def release(run_dir: str, holder: dict) -> None:
    """Removes the lock if it is still `holder`'s (--force_unlock may have given it away)."""
    path = os.path.join(run_dir, RUN_LOCK_FILE)
    if _read_holder(path) == holder:
        os.remove(path)


@contextlib.contextmanager
def run_dir_lock(run_dir: str, force: bool = False) -> Iterator[None]:
    """Holds run_dir's lock for the `with` block, also when it raises. A run_dir that this
    created and that holds nothing else afterwards is removed again, so a launch that fails
    early leaves no trace."""
    created = not os.path.exists(run_dir)
    holder = acquire(run_dir, force)
    try:
        yield
    finally:
        release(run_dir, holder)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(run_dir)  # only when empty
