"""The one exception type that entry points turn into a one-line message for the user."""


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, bad data).

    The message names the offending file or value and says how to fix it; entry points
    print it on one line and exit with `exit_status` (2 unless a subclass says otherwise)
    instead of showing a stack trace.
    """

    exit_status: int = 2
