"""Downloads checkpoint URLs once into a local cache, checking open-mmlab's hash suffix.

A download goes to `<name>.part` in the cache, with a progress bar, and becomes `<name>`
only once complete and hash-checked, so the cache never holds a partial or corrupt file.
An interrupted download resumes from the `.part` file with an HTTP Range request on the
next call (servers that ignore Range send the whole file again). Concurrent downloads into
one cache (several workers of one machine) wait for each other on a lock of the cache folder.
"""

import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import keras

from pspnet_tf.errors import UserError

CACHE_ENV = "PSPNET_TF_CACHE"
# open-mmlab (like torch.hub) ends file names with the first 8 hex digits of their sha256.
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")
_BLOCK = 1 << 20


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "ftp", "file")


def default_cache_dir() -> str:
    """$PSPNET_TF_CACHE, else $KERAS_HOME/pspnet_tf, else ~/.keras/pspnet_tf (as Keras does)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.environ.get(CACHE_ENV) or os.path.join(keras_home, "pspnet_tf")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """Holds an exclusive lock of `folder` (released when the process ends, however)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _download(url: str, partial: str) -> None:
    """Completes `partial` from `url`, resuming after the bytes it already holds."""
    offset = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        opened = urllib.request.urlopen(request)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # nothing after `offset`: the file is complete (hash checked next)
            return
        raise
    with opened as response:
        resumed = offset and getattr(response, "status", None) == 206
        offset = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        progress = keras.utils.Progbar(total, unit_name="byte")
        done = offset
        with open(partial, "ab" if resumed else "wb") as handle:
            for block in iter(lambda: response.read(_BLOCK), b""):
                handle.write(block)
                done += len(block)
                progress.update(done)
    if total is not None and done != total:
        raise OSError(f"the connection closed after {done} of {total} bytes")


def fetch(source: str, cache_dir: str | None = None) -> str:
    """A local path for `source`: a file path as is, a URL downloaded once into the cache."""
    if not is_url(source):
        if not os.path.isfile(source):
            raise UserError(f"{source} does not exist; pass an existing file or a URL")
        return source
    name = os.path.basename(urllib.parse.urlparse(source).path)
    if not name:
        raise UserError(f"{source} names no file; pass the URL of a checkpoint file")
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, name)
    if os.path.isfile(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    partial = f"{path}.part"
    with _locked(cache_dir):
        if os.path.isfile(path):  # another process finished it while this one waited
            return path
        try:
            _download(source, partial)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise UserError(f"could not download {source} ({error}); check the URL and the "
                            "network and run again (the download resumes), or download it "
                            "yourself and pass the local file") from error
        expected = _HASH_SUFFIX.search(name)
        if expected and not _sha256(partial).startswith(expected.group(1)):
            os.remove(partial)
            raise UserError(f"{source}: the download's sha256 does not start with "
                            f"{expected.group(1)} as its name says; it is corrupt, try again")
        os.replace(partial, path)
    return path
