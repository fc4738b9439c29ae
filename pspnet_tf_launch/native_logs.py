"""Keeps TensorFlow's C++ start-up log lines off the terminal unless asked for.

Importing TensorFlow 2.21 prints its oneDNN notice and CUDA probing lines, twice, and the
first device query prints `failed call to cuInit ... (303)` on hosts without a GPU. They
are written by C++ code straight to file descriptor 2 before TensorFlow reads
TF_CPP_MIN_LOG_LEVEL, so the only way to drop them is to catch that descriptor while
TensorFlow starts. Everything else written meanwhile (Python warnings, tracebacks) is
passed on; only lines in the C++ log format are dropped.

`PSPNET_VERBOSE=1` or `--verbose` on the command line keeps every line. Both are read
before TensorFlow is imported, which is when the lines appear; this module must not
import TensorFlow itself.
"""

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence

VERBOSE_ENV = "PSPNET_VERBOSE"
_TRUE = ("1", "true", "yes")
# "I0000 00:00:1796138562.724356    7104 port.cc:153] ..." and absl's preamble line.
_NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    rb"STDERR)\r?\n?$")


def verbose_requested(argv: Sequence[str] | None = None,
                      environ: Mapping[str, str] | None = None) -> bool:
    """True when PSPNET_VERBOSE is 1/true/yes or argv (default: the command line's) holds
    --verbose (or --verbose=true)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if environ.get(VERBOSE_ENV, "").lower() in _TRUE:
        return True
    return any(arg in ("--verbose", "-verbose")
               or arg.lower() in ("--verbose=true", "--verbose=1", "-verbose=true")
               for arg in argv)


def without_native_log_lines(text: bytes) -> bytes:
    """`text` without the lines written in TensorFlow's C++ log format."""
    return b"".join(line for line in text.splitlines(keepends=True)
                    if not _NATIVE_LOG_LINE.match(line))


@contextlib.contextmanager
def native_logs_dropped(enabled: bool = True) -> Iterator[None]:
    """Within the block, file descriptor 2 goes to a temporary file; on leaving, whatever
    is not a C++ log line is written to the real stderr."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = without_native_log_lines(caught.read())
            if kept:
                sys.stderr.write(kept.decode(errors="replace"))
                sys.stderr.flush()
