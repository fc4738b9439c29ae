"""Downloads checkpoint URLs once into a local cache, checking open-mmlab's hash suffix.

A download goes to `<name>.part` in the cache, with a progress bar, and becomes `<name>`
only once complete and hash-checked, so the cache never holds a partial or corrupt file.
An interrupted download resumes from the `.part` file with an HTTP Range request, both
when `fetch` retries and on the next call (servers that ignore Range send the whole file
again). Concurrent downloads into one cache (several workers of one machine) wait for each
other on a lock of the cache folder.

No network read waits forever: connecting and every read time out after
$PSPNET_TF_DOWNLOAD_TIMEOUT seconds (default 60; `fetch(timeout=...)` overrides it; host
names are looked up with the system resolver's own limits). A
timeout, a reset or dropped connection or a server error (HTTP 5xx, 408, 429) is retried,
resuming, after 1 s and then 2 s (`attempts`, `backoff`); when the last attempt fails too,
`fetch` raises one UserError line naming the URL, what happened and
$PSPNET_TF_DOWNLOAD_BASE, which points the published URLs at a mirror. A cache folder that
is a file or cannot be written is a UserError naming it.
"""

import contextlib
import errno
import fcntl
import hashlib
import http.client
import math
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

import keras

from pspnet_tf.errors import EnvironmentFault, UserError, describe_error

OPENMMLAB = "https://download.openmmlab.com"  # the host of the published checkpoints
BASE_ENV = "PSPNET_TF_DOWNLOAD_BASE"  # a mirror of it (models/presets.py)
CACHE_ENV = "PSPNET_TF_CACHE"
TIMEOUT_ENV = "PSPNET_TF_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
ATTEMPTS = 3
BACKOFF_S = 1.0  # the wait before the second attempt, doubled before each further one
# open-mmlab (like torch.hub) ends file names with the first 8 hex digits of their sha256.
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")
_BLOCK = 1 << 20
_RETRIED_HTTP_CODES = (408, 429)
_T = TypeVar("_T")


class _NetworkFault(Exception):
    """A network read failed: `what` happened, whether trying again may help, and a `hint`
    for the user beyond the usual ones."""

    def __init__(self, what: str, transient: bool, hint: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.transient = transient
        self.hint = hint


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "ftp", "file")


def default_cache_dir() -> str:
    """$PSPNET_TF_CACHE, else $KERAS_HOME/pspnet_tf, else ~/.keras/pspnet_tf (as Keras does)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.environ.get(CACHE_ENV) or os.path.join(keras_home, "pspnet_tf")


def _timeout_from_environment() -> float:
    """Seconds a connection or read may take: $PSPNET_TF_DOWNLOAD_TIMEOUT, else 60."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    return _checked_timeout(seconds, f"${TIMEOUT_ENV}={text!r}")


def _checked_timeout(seconds: float, given: str) -> float:
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{given} is not a number of seconds above 0; give e.g. 300 for a "
                        f"slow link, or leave it unset for {DEFAULT_TIMEOUT_S:g} s")
    return seconds


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_cache(cache_dir: str) -> int:
    """A descriptor of `cache_dir`, created if need be; a UserError if that cannot be."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        return os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise _cache_fault(cache_dir, error) from None


@contextlib.contextmanager
def _locked(descriptor: int) -> Iterator[None]:
    """Holds an exclusive lock of the folder open as `descriptor` and closes it after
    (a process that ends, however, releases the lock)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _cache_fault(path: str, error: OSError) -> EnvironmentFault:
    """The one line for a cache folder that cannot be made, or a file in it written: a fault
    of the machine (exit status 4), not of the network."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        problem = f"the download cache {path} is a file or lies under one, not a folder"
    else:
        problem = f"cannot write {path} ({error.strerror or describe_error(error)})"
    remedy = "free some space there or " if error.errno == errno.ENOSPC else ""
    return EnvironmentFault(f"{problem}; {remedy}point ${CACHE_ENV} at a writable folder (or "
                            "pass another cache_dir) and run again", path)


def _network_fault(error: BaseException, timeout: float) -> _NetworkFault:
    """What a failed network call means for the user, and whether to try again."""
    if isinstance(error, urllib.error.HTTPError):
        return _NetworkFault(f"the server answered HTTP {error.code} {error.reason}",
                             error.code >= 500 or error.code in _RETRIED_HTTP_CODES)
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return _network_fault(error.reason, timeout)
    if isinstance(error, TimeoutError):  # socket.timeout is TimeoutError
        return _NetworkFault(f"timed out after {timeout:g} s without data", True,
                             f"raise ${TIMEOUT_ENV} for a slow server, ")
    if isinstance(error, http.client.RemoteDisconnected):
        return _NetworkFault("the server closed the connection without answering", True)
    if isinstance(error, ConnectionResetError):
        return _NetworkFault("the connection was reset", True)
    if isinstance(error, ConnectionRefusedError):
        return _NetworkFault("the connection was refused", True)
    if isinstance(error, socket.gaierror):
        return _NetworkFault(f"the host name cannot be resolved ({error.strerror})",
                             error.errno == socket.EAI_AGAIN)
    if isinstance(error, ssl.SSLCertVerificationError):
        return _NetworkFault(describe_error(error), False)
    return _NetworkFault(describe_error(error), True)


def _network(call: Callable[[], _T], timeout: float) -> _T:
    """`call()`, a network operation, with its failures made `_NetworkFault`s."""
    try:
        return call()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _network_fault(error, timeout) from error


def _download(url: str, handle: BinaryIO, timeout: float) -> None:
    """Completes the partial download open for appending as `handle` from `url`, resuming
    after the bytes it holds; network failures raise `_NetworkFault`, local ones OSError."""
    offset = os.fstat(handle.fileno()).st_size
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        opened = _network(lambda: urllib.request.urlopen(request, timeout=timeout), timeout)
    except _NetworkFault as fault:
        if getattr(fault.__cause__, "code", None) == 416:
            return  # nothing after `offset`: the file is complete (hash checked next)
        raise
    with opened as response:
        if offset and getattr(response, "status", None) != 206:
            handle.truncate(0)  # the server ignored Range and sends the whole file
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        progress = keras.utils.Progbar(total, unit_name="byte")
        done = offset
        try:
            # read1: what has arrived, so that a stalled read loses none of it
            for block in iter(lambda: _network(lambda: response.read1(_BLOCK), timeout), b""):
                handle.write(block)
                done += len(block)
                progress.update(done)
        except _NetworkFault:
            progress.update(done, finalize=True)  # ends the bar's line before any message
            raise
    if total is not None and done != total:
        progress.update(done, finalize=True)
        raise _NetworkFault(f"the connection closed after {done} of {total} bytes", True)


def _download_with_retries(url: str, partial: str, timeout: float, attempts: int,
                           backoff: float) -> None:
    """`_download`, tried `attempts` times with growing waits; raises one UserError line."""
    for attempt in range(1, attempts + 1):
        try:
            with open(partial, "ab") as handle:
                _download(url, handle, timeout)
            return
        except _NetworkFault as fault:
            if not fault.transient or attempt == attempts:
                if os.path.isfile(partial) and os.path.getsize(partial) == 0:
                    os.remove(partial)  # nothing to resume
                tries = f" ({attempt} attempts)" if attempt > 1 else ""
                raise UserError(
                    f"could not download {url}: {fault.what}{tries}; check the URL and the "
                    f"network and run again (the download resumes), {fault.hint}set "
                    f"${BASE_ENV} to a mirror of {OPENMMLAB}, or download the file yourself "
                    "and pass its path") from None
            wait = backoff * 2 ** (attempt - 1)
            print(f"{url}: {fault.what}; trying again in {wait:g} s (attempt {attempt + 1} "
                  f"of {attempts})", file=sys.stderr)
            time.sleep(wait)
        except OSError as error:
            raise _cache_fault(partial, error) from None


def fetch(source: str, cache_dir: str | None = None, *, timeout: float | None = None,
          attempts: int = ATTEMPTS, backoff: float = BACKOFF_S) -> str:
    """A local path for `source`: a file path as is, a URL downloaded once into the cache.

    `timeout` (seconds for connecting and for each read) defaults to
    $PSPNET_TF_DOWNLOAD_TIMEOUT, else 60; a failed download is tried `attempts` times in
    all, waiting `backoff` seconds before the second, twice as long before each further.
    """
    if not is_url(source):
        if not os.path.isfile(source):
            raise UserError(f"{source} does not exist; pass an existing file or a URL")
        return source
    name = os.path.basename(urllib.parse.urlparse(source).path)
    if not name:
        raise UserError(f"{source} names no file; pass the URL of a checkpoint file")
    timeout = _timeout_from_environment() if timeout is None \
        else _checked_timeout(timeout, f"timeout={timeout!r}")
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, name)
    if os.path.isfile(path):
        return path
    partial = f"{path}.part"
    with _locked(_open_cache(cache_dir)):
        if os.path.isfile(path):  # another process finished it while this one waited
            return path
        _download_with_retries(source, partial, timeout, max(1, attempts), backoff)
        expected = _HASH_SUFFIX.search(name)
        if expected and not _sha256(partial).startswith(expected.group(1)):
            os.remove(partial)
            raise UserError(f"{source}: the download's sha256 does not start with "
                            f"{expected.group(1)} as its name says; it is corrupt, try again")
        os.replace(partial, path)
    return path
