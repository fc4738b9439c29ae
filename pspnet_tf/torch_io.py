"""Reads PyTorch checkpoints (.pth) without PyTorch, and without running code from the file.

Both formats `torch.save` writes are read:

- the zip format (default since PyTorch 1.6): `<name>/data.pkl` (the pickled object) and
  one stored member `<name>/data/<key>` per storage, byte order in `<name>/byteorder`
  (little endian when absent, as torch.load assumes);
- the legacy format (`_use_new_zipfile_serialization=False`, and PyTorch before 1.6, which
  wrote many published checkpoints): pickles of a magic number, the protocol version and
  system info, then the object, then the list of storage keys, then each storage as an
  int64 element count and its little-endian bytes.

The even older tar format of early PyTorch versions is refused with how to re-save it.

Pickles are read by an unpickler that admits exactly the globals `torch.save` emits for
tensors and containers (tensor and parameter rebuilders, storage types, OrderedDict,
torch.Size, and the latin-1 decoding by which pickle protocol 2 writes bytes); anything
else (a class, `os.system`, `builtins.eval`) stops the load before it is called, as
`torch.load(weights_only=True)` does. Tensors come back as C-contiguous numpy arrays of
their own, with torch's dtype, shape, strides and storage offset applied (bfloat16, which
numpy lacks, as float32, which holds every bfloat16 value exactly). Each tensor reads only
its span of its storage, straight into the array returned when the tensor is contiguous,
so reading needs little more memory than the arrays it returns.
"""

import collections
import dataclasses
import io
import os
import pickle
import struct
import tarfile
import zipfile
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from pspnet_tf.errors import UserError, describe_error

# torch's storage classes -> numpy dtypes of their stored elements (little endian).
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "UntypedStorage": "u1",
}
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL_VERSION = 1001


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a tensor checkpoint never needs."""


class MalformedCheckpoint(ValueError):
    """The file's structure is not what torch.save writes."""


# Objects a pickle can reach are immutable tuples: pickle's BUILD opcode, which sets the
# attributes of an object, can neither retarget a checked tensor nor change a storage type.
class StorageType(NamedTuple):
    name: str  # torch's class name, e.g. FloatStorage

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


class Storage(NamedTuple):
    """One storage (or a legacy view of one): `numel` elements from `offset` in `key`."""

    key: str
    type: StorageType
    offset: int
    numel: int


class TensorRef(NamedTuple):
    """A tensor as its pickle describes it; its data is read once unpickling is done."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedCheckpoint(f"{what} is {value!r}, not a count")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *unused: Any) -> TensorRef:
    """torch._utils._rebuild_tensor(_v2): checks that the tensor lies inside its storage
    (requires_grad, backward hooks and metadata do not matter to the values)."""
    if not isinstance(storage, Storage):
        raise MalformedCheckpoint(f"a tensor's storage is {type(storage).__name__}")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or \
            len(size) != len(stride):
        raise MalformedCheckpoint(f"tensor size {size!r} and stride {stride!r} do not match")
    tensor = TensorRef(storage, _count(storage_offset, "a storage offset"),
                       tuple(_count(n, "a tensor size") for n in size),
                       tuple(_count(s, "a tensor stride") for s in stride))
    if 0 not in tensor.shape and tensor.offset + _span(tensor) > storage.numel:
        raise MalformedCheckpoint(f"a tensor of shape {tensor.shape} reaches past the "
                                  f"{storage.numel} elements of storage {storage.key}")
    return tensor


def _rebuild_parameter(data: Any, *unused: Any) -> Any:
    """torch._utils._rebuild_parameter(_with_state): an nn.Parameter is its tensor."""
    return data


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """Non-empty bytes as pickle protocol 2 writes them: _codecs.encode(text, "latin1").
    (It writes b"" as builtins.bytes(), which torch.load(weights_only=True) refuses too.)"""
    if not isinstance(text, str) or encoding != "latin1":
        raise MalformedCheckpoint(f"unexpected bytes encoding {encoding!r:.40}")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _latin1_bytes,
    **{("torch", name): StorageType(name) for name in _STORAGE_DTYPES},
}


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles containers of tensors, refusing every global outside _ALLOWED_GLOBALS."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, StorageType] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise RefusedGlobal(f"{module}.{name}")
        return allowed

    def persistent_load(self, saved_id: Any) -> Storage:
        """('storage', type, key, location, numel), plus a view (key, offset, numel) or
        None in the legacy format. The location (cpu, cuda:0) is ignored: all is read."""
        if not isinstance(saved_id, tuple) or len(saved_id) not in (5, 6) or \
                saved_id[0] != "storage":
            raise MalformedCheckpoint(f"unknown persistent id {saved_id!r:.80}")
        storage_type, key, numel = saved_id[1], saved_id[2], saved_id[4]
        view = saved_id[5] if len(saved_id) == 6 else None
        if not isinstance(storage_type, StorageType) or not isinstance(key, str):
            raise MalformedCheckpoint(f"unknown storage {saved_id!r:.80}")
        if self.storages.setdefault(key, storage_type) != storage_type:
            raise MalformedCheckpoint(f"storage {key} is read as two types")
        if view is None:
            return Storage(key, storage_type, 0, _count(numel, "a storage size"))
        if not isinstance(view, tuple) or len(view) != 3:
            raise MalformedCheckpoint(f"unknown storage view {view!r:.80}")
        return Storage(key, storage_type, _count(view[1], "a view offset"),
                       _count(view[2], "a view size"))


def _span(tensor: TensorRef) -> int:
    """Elements from a non-empty tensor's first element to its last, inclusive."""
    return 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride))


@dataclasses.dataclass(frozen=True)
class StoredData:
    """Where the tensor data lies in the checkpoint file."""

    handle: BinaryIO
    located: dict[str, tuple[int, int]]  # key -> (file position of element 0, elements)
    byteorder: str  # "<" or ">"

    def read(self, storage: Storage, first: int, count: int) -> np.ndarray:
        """Elements [first, first + count) of `storage`, read straight into a new array."""
        position, stored = self.located[storage.key]
        if storage.offset + first + count > stored:
            raise MalformedCheckpoint(f"storage {storage.key} holds {stored} elements, "
                                      "fewer than its tensors use")
        values = np.empty(count, storage.type.dtype.newbyteorder(self.byteorder))
        self.handle.seek(position + (storage.offset + first) * values.itemsize)
        if self.handle.readinto(values) != values.nbytes:
            raise MalformedCheckpoint(f"storage {storage.key} is truncated")
        return values


def _to_array(tensor: TensorRef, data: StoredData) -> np.ndarray:
    """The tensor's values as a C-contiguous array of its own (a contiguous tensor is the
    array its bytes were read into, without a copy)."""
    native = tensor.storage.type.dtype.newbyteorder("=")
    if 0 in tensor.shape:
        values = np.empty(tensor.shape, native)
    else:
        span = data.read(tensor.storage, tensor.offset, _span(tensor))
        values = np.lib.stride_tricks.as_strided(
            span, tensor.shape, [s * span.itemsize for s in tensor.stride])
        if not values.flags.c_contiguous:  # transposed, sliced, expanded
            values = values.copy()
        values = values.astype(native, copy=False)  # byte-swaps a big-endian file
    if tensor.storage.type.name == "BFloat16Storage":  # the high half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _materialise(obj: Any, data: StoredData, done: dict[int, Any]) -> Any:
    """`obj` with every TensorRef replaced by its array; an object pickled once (a tensor
    in two places) stays one object, as with torch.load."""
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, TensorRef):
        result = _to_array(obj, data)
    elif type(obj) in (dict, collections.OrderedDict):
        result = type(obj)((key, _materialise(value, data, done))
                           for key, value in obj.items())
    elif type(obj) in (list, tuple):
        result = type(obj)(_materialise(value, data, done) for value in obj)
    else:
        return obj
    done[id(obj)] = result
    return result


def _read_exactly(handle: BinaryIO, count: int, what: str) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise MalformedCheckpoint(f"{what} is truncated")
    return data


def _member_data_position(archive: zipfile.ZipFile, handle: BinaryIO, member: str) -> int:
    """Where a stored (uncompressed, as torch.save writes them) member's bytes start."""
    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise MalformedCheckpoint(f"{member} is compressed; torch.save stores tensor data "
                                  "uncompressed")
    handle.seek(info.header_offset)
    signature, name_length, extra_length = struct.unpack(
        "<4s22xHH", _read_exactly(handle, 30, member))
    if signature != b"PK\x03\x04":
        raise MalformedCheckpoint(f"{member} has no zip header")
    return info.header_offset + 30 + name_length + extra_length


def _load_zip(handle: BinaryIO) -> Any:
    with zipfile.ZipFile(handle) as archive:
        names = archive.namelist()
        prefix = names[0].split("/")[0] if names else ""
        byteorder_record = f"{prefix}/byteorder"
        recorded = archive.read(byteorder_record) if byteorder_record in names else b"little"
        if recorded not in (b"little", b"big"):
            raise MalformedCheckpoint(f"unknown byte order {recorded[:20]!r}")
        unpickler = _TensorUnpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl")))
        root = unpickler.load()
        located = {}
        for key, storage_type in unpickler.storages.items():
            member = f"{prefix}/data/{key}"
            located[key] = (_member_data_position(archive, handle, member),
                            archive.getinfo(member).file_size // storage_type.dtype.itemsize)
    return _materialise(root, StoredData(handle, located, "<" if recorded == b"little"
                                         else ">"), {})


def _load_legacy(handle: BinaryIO) -> Any:
    if _TensorUnpickler(handle).load() != _LEGACY_MAGIC_NUMBER:
        raise MalformedCheckpoint("it is neither a zip archive nor a legacy PyTorch file")
    version = _TensorUnpickler(handle).load()
    if version != _LEGACY_PROTOCOL_VERSION:
        raise MalformedCheckpoint(f"unknown legacy protocol version {version!r:.40}")
    _TensorUnpickler(handle).load()  # system info; the data is always little endian
    unpickler = _TensorUnpickler(handle)
    root = unpickler.load()
    keys = _TensorUnpickler(handle).load()
    if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
        raise MalformedCheckpoint("the storage list does not match the tensors")
    located = {}
    for key in keys:
        (numel,) = struct.unpack("<q", _read_exactly(handle, 8, f"storage {key}"))
        located[key] = (handle.tell(), _count(numel, "a storage size"))
        handle.seek(numel * unpickler.storages[key].dtype.itemsize, os.SEEK_CUR)
    return _materialise(root, StoredData(handle, located, "<"), {})


def load_checkpoint(path: str) -> Any:
    """The object `torch.save` wrote to `path`, tensors as numpy arrays (see the module
    docstring for the formats read and what is refused). Any problem is one UserError."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist; check the path")
    try:
        with open(path, "rb") as handle:
            if zipfile.is_zipfile(handle):
                handle.seek(0)
                return _load_zip(handle)
            if tarfile.is_tarfile(path):
                raise UserError(f"{path} is in early PyTorch's tar format, which is "
                                "not read; if you trust its source, re-save it with PyTorch: "
                                "torch.save(torch.load(path, weights_only=False), path)")
            handle.seek(0)
            if handle.read(4) == b"PK\x03\x04":
                raise MalformedCheckpoint("a zip archive without its directory: truncated")
            handle.seek(0)
            return _load_legacy(handle)
    except RefusedGlobal as error:
        raise UserError(f"{path} holds objects other than tensors and is not loaded, to "
                        f"avoid running code from it (it names {error}); re-save only its "
                        "state dict from a trusted environment") from error
    except (pickle.UnpicklingError, zipfile.BadZipFile, MalformedCheckpoint, EOFError,
            ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
            struct.error, RecursionError, OSError) as error:
        raise UserError(f"{path} is not a readable PyTorch checkpoint "
                        f"({describe_error(error)}); download it again") from error
    except MemoryError as error:  # pickle allocates what a length field asks, before reading
        raise UserError(f"{path} asks for more memory than this machine has: a length in it "
                        "is damaged (download it again), or it is too large for this machine"
                        ) from error


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a .pth file as numpy arrays (floating point as float32), keyed by
    their PyTorch names.

    mmsegmentation wraps the state dict as {"state_dict": ..., "meta": ...}; plain state
    dicts (open-mmlab ImageNet checkpoints) are accepted too.
    """
    loaded = load_checkpoint(path)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict (found {type(loaded).__name__}); "
                        "pass a PyTorch checkpoint of a PSPNet or a ResNetV1c")
    not_tensors = sorted(str(key) for key, value in state.items()
                         if not isinstance(value, np.ndarray))
    if not_tensors:
        raise UserError(f"{path}: state dict entries that are not tensors: "
                        f"{', '.join(not_tensors[:10])}; pass a plain state dict")
    return {key: value.astype(np.float32, copy=False)
            if np.issubdtype(value.dtype, np.floating) else value
            for key, value in state.items()}
