"""The exception types that entry points turn into a one-line message for the user."""

import re

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


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped a run cleanly; the message says how to go on.

    Entry points print the message on one line and exit with `exit_status`: 128 + the
    signal number, as a shell reports a process killed by that signal (130 for SIGINT,
    143 for SIGTERM), so scripts see that the run did not finish.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signal_number


_EMBEDDED_USER_ERROR = re.compile(r"UserError: (.+)")


def user_error_message(error: BaseException) -> str | None:
    """The one-line message of a UserError, also when raised inside a tf.data function
    (TensorFlow then wraps it, with its traceback, in an OpError); None for other errors."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, tf.errors.OpError):
        match = _EMBEDDED_USER_ERROR.search(str(error))
        if match:
            return match.group(1).strip()
    return None
