"""Downloads checkpoint URLs once into a local cache, checking open-mmlab's hash suffix."""

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from pspnet_tf.errors import UserError

CACHE_ENV = "PSPNET_TF_CACHE"
# open-mmlab (like torch.hub) ends file names with the first 8 hex digits of their sha256.
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "ftp", "file")


def default_cache_dir() -> str:
    """$PSPNET_TF_CACHE, else ~/.cache/pspnet_tf."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "pspnet_tf")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: str, cache_dir: str | None = None) -> str:
    """A local path for `source`: a file path as is, a URL downloaded once into the cache.

    The download lands under a temporary name and is renamed only once complete and its
    hash (when the name carries one) matches, so an interrupted download is retried.
    """
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
    temporary = f"{path}.part-{os.getpid()}"
    try:
        urllib.request.urlretrieve(source, temporary)
        expected = _HASH_SUFFIX.search(name)
        if expected and not _sha256(temporary).startswith(expected.group(1)):
            raise UserError(f"{source}: the download's sha256 does not start with "
                            f"{expected.group(1)} as its name says; it is corrupt, try again")
        os.replace(temporary, path)
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"could not download {source} ({error}); check the URL and the "
                        f"network, or download it yourself and pass the local file") from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
