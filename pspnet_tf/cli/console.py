"""Error and interrupt lines that start on a line of their own, also after a progress bar.

Keras' progress bar redraws its line with a carriage return and ends it only when the epoch
(or the prediction loop) ends, so a line printed to stderr while it is on screen would be
glued to its end (`... loss: 2.4051error: training diverged ...`), on a terminal and in a
log that captures both streams alike. The entry points (cli.run) therefore track whether
the last text written to stdout ended its line, and end it first when it did not.
"""

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class _LineTrackedStream:
    """A text stream that forwards everything to `stream` and notes whether the last text
    written to it ended its line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.mid_line = False

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        if text:
            self.mid_line = not text.endswith("\n")
        return written

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self.stream, name)


@contextlib.contextmanager
def line_tracked_stdout() -> Iterator[None]:
    """Routes sys.stdout through a line tracker for the `with` block (see print_on_own_line)."""
    original = sys.stdout
    sys.stdout = _LineTrackedStream(original)
    try:
        yield
    finally:
        sys.stdout = original


def print_on_own_line(line: str) -> None:
    """Prints `line` to stderr, first ending the line stdout left open (a progress bar's)."""
    stdout = sys.stdout
    if isinstance(stdout, _LineTrackedStream) and stdout.mid_line:
        stdout.write("\n")
        stdout.flush()
    print(line, file=sys.stderr, flush=True)
