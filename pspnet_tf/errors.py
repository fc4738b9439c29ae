"""The exception types that entry points turn into a one-line message for the user.

Exit statuses of the entry points (cli.run): 2 for a UserError (a bad flag, file or data);
3 for a diverged training run (training.divergence.TrainingDiverged); 4 for an
EnvironmentFault, a fault of the machine rather than of the command (a full disk, a read-only
or unwritable folder, a path too long for the file system, a file where a folder must be);
128 + N for a run stopped cleanly by signal N (RunInterrupted). `environment_fault` is the
one place that recognises those faults, in Python's OSErrors and in TensorFlow's OpErrors
alike; the writers of the Python API raise what it returns (`environment_faults`), and the
entry points convert whatever else reaches them.
"""

import contextlib
import errno
import os
import re
import string
from collections.abc import Callable, Iterator

import tensorflow as tf


def one_line(text: str) -> str:
    """`text` on one printable line: runs of whitespace (newlines included) become one
    space and any other unprintable character its escape, e.g. `\\x1a`."""
    collapsed = " ".join(text.split())
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode()
                   for char in collapsed)


def describe_error(error: BaseException, limit: int = 200) -> str:
    """`Type: message` of an exception from a library, for quoting inside a UserError:
    on one line (see `one_line`) and cut to `limit` characters, because parsers quote
    what they failed on, and a damaged file gives them kilobytes of arbitrary bytes."""
    text = one_line(f"{type(error).__name__}: {error}").removesuffix(":")
    return text if len(text) <= limit else text[:limit - 3] + "..."


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, bad data).

    The message names the offending file or value and says how to fix it; entry points
    print it and exit with `exit_status` (2 unless a subclass says otherwise) instead of
    showing a stack trace. The message is made one line (`one_line`) whatever text it
    quotes.
    """

    exit_status: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ParameterError(UserError, ValueError):
    """A bad argument of a library call (also a ValueError), its message naming parameters.

    `template` writes each parameter as a `{name}` field and each quoted value as a field
    given in `values`: `ParameterError("{version} must be >= 1, got {got}", got=0)`. The
    message (str) names the parameters as Python does (`version must be >= 1, got 0`);
    `render` names them otherwise, e.g. as the command line's flags (`--version must be
    >= 1, got 0`, cli/app.py), so that one error serves both.
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template, self.values = template, values
        super().__init__(self.render(lambda name: name))

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameter names the message mentions, in order."""
        fields = (field for _, field, _, _ in string.Formatter().parse(self.template) if field)
        return tuple(dict.fromkeys(field for field in fields if field not in self.values))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each parameter written as `name_of(parameter)`, on one line."""
        names = {parameter: name_of(parameter) for parameter in self.parameters}
        return one_line(self.template.format(**names, **self.values))


ENVIRONMENT_FAULT_EXIT_STATUS = 4


class EnvironmentFault(UserError):
    """The machine stopped a read or write of `path`: a full disk, a read-only or unwritable
    folder, a path too long, a file where a folder must be. The message names the path and
    what to do; entry points exit with status 4. A UserError, so that code handling those
    handles these too."""

    exit_status = ENVIRONMENT_FAULT_EXIT_STATUS

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


_SPACE = "free space on that disk (or use a folder on another one)"
_WRITABLE = "choose a folder that can be written (or fix its permissions)"
# errno -> (what happened, what to do). Their texts (os.strerror) also identify them in
# TensorFlow's OpErrors, which carry only a message ("PATH; No space left on device").
_FAULTS = {
    errno.ENOSPC: ("no space left on the device", _SPACE),
    errno.EDQUOT: ("the disk quota is exceeded", _SPACE),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.EACCES: ("permission denied", _WRITABLE),
    errno.EPERM: ("operation not permitted", _WRITABLE),
    errno.ENAMETOOLONG: ("the path is too long for the file system",
                         "choose a shorter path (a shorter folder or file name)"),
    errno.EEXIST: ("a file is in the way where a folder is needed",
                   "move that file away or choose another path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder",
                    "choose a path whose folders are folders"),
}
# Where library messages name the path: TensorFlow's "PATH; <strerror>", h5py's
# "name = 'PATH'", Python's "[Errno N] <strerror>: 'PATH'".
_STRERRORS = "|".join(re.escape(os.strerror(number)) for number in _FAULTS)
_MESSAGE_PATHS = (re.compile(r"(?:^|\}\}\s*)([^;\n{}]+?); (?:" + _STRERRORS + ")"),
                  re.compile(r"name = '([^']+)'"),
                  re.compile(r"\[Errno \d+\] [^:']+: '([^']+)'"))


def _fault_number(error: BaseException) -> int | None:
    """The errno of a recognised environment fault in `error`, or None."""
    number = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if number in _FAULTS:
        return number
    if isinstance(error, (OSError, tf.errors.OpError)):
        text = str(error)
        return next((number for number in _FAULTS if os.strerror(number) in text), None)
    return None


def _path_in(error: BaseException) -> str | None:
    filename = getattr(error, "filename", None) if isinstance(error, OSError) else None
    if filename:
        return os.fsdecode(filename)
    for pattern in _MESSAGE_PATHS:
        match = pattern.search(str(error))
        if match:
            return match.group(1)
    return None


def environment_fault(error: BaseException, path: str | None = None) -> EnvironmentFault | None:
    """The EnvironmentFault an OSError or TensorFlow OpError stands for, or None when it is
    not a fault of the machine (then it is a bug or the caller's to handle).

    The message names `path` (the file or folder the caller was writing, rather than the
    temporary file a library failed on), else the path the error names; for a file in the
    way of a folder (EEXIST, ENOTDIR) the error's own path comes first. EEXIST counts only
    where a file stands in the way of a folder (an existing folder met by `os.mkdir` is a
    bug); writers creating a file exclusively handle the FileExistsError of a lost race
    themselves.
    """
    number = _fault_number(error)
    if number is None:
        return None
    named = _path_in(error)
    if number == errno.EEXIST and not (named and os.path.lexists(named)
                                       and not os.path.isdir(named)):
        return None
    # Which file is in the way only the error's own path says.
    where = (named or path) if number in (errno.EEXIST, errno.ENOTDIR) else (path or named)
    what, remedy = _FAULTS[number]
    return EnvironmentFault(f"{where or 'a file or folder'}: {what} ({errno.errorcode[number]}); "
                            f"{remedy}, then run the same command again", where)


@contextlib.contextmanager
def environment_faults(path: str | None = None) -> Iterator[None]:
    """Raises the EnvironmentFault of an OSError or OpError met in the `with` block (naming
    `path` when the error names none); other errors pass unchanged."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        fault = environment_fault(error, path)
        if fault is None:
            raise
        raise fault from error


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped a run cleanly; the message says how to go on.

    Entry points print the message on one line and exit with `exit_status`: 128 + the
    signal number, as a shell reports a process killed by that signal (130 for SIGINT,
    143 for SIGTERM), so scripts see that the run did not finish.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signal_number


_EMBEDDED_USER_ERROR = re.compile(r"(UserError|EnvironmentFault): (.+)")


def as_user_error(error: BaseException) -> UserError | None:
    """`error` as the UserError entry points print in one line: itself; the one raised inside
    a tf.data function (TensorFlow then wraps it, with its traceback, in an OpError); the
    EnvironmentFault of an OSError or OpError (`environment_fault`); None for other errors."""
    if isinstance(error, UserError):
        return error
    if isinstance(error, tf.errors.OpError):
        match = _EMBEDDED_USER_ERROR.search(str(error))
        if match:
            kind = EnvironmentFault if match.group(1) == "EnvironmentFault" else UserError
            return kind(match.group(2).strip())
    return environment_fault(error)


def user_error_message(error: BaseException) -> str | None:
    """The one-line message of `as_user_error(error)`; None for other errors."""
    user_error = as_user_error(error)
    return None if user_error is None else str(user_error)
