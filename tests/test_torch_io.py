"""The PyTorch-free .pth reader: bit-identical to torch.load(weights_only=True) on the
formats torch.save writes, and refusing (without running it) anything but tensors."""

import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable

import numpy as np
import pytest

from pspnet_tf.torch_io import load_checkpoint, read_state_dict
from pspnet_tf.errors import UserError

torch = pytest.importorskip("torch")


def sample_checkpoint() -> dict:
    """What mmseg/mmcv save ({"meta", "state_dict", "optimizer"}), with every dtype and
    tensor layout the reader must reproduce."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=generator)
    base[0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])
    shared = torch.arange(20, dtype=torch.float32)
    state = collections.OrderedDict([
        ("float32", base), ("float16", base.half()), ("float64", base.double()),
        ("int64", torch.arange(-5, 5)), ("int32", torch.arange(-3, 3, dtype=torch.int32)),
        ("int16", torch.arange(-3, 3, dtype=torch.int16)),
        ("int8", torch.arange(-3, 3, dtype=torch.int8)),
        ("uint8", torch.arange(250, 256, dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(2.5)), ("scalar_int", torch.tensor(7)),
        ("empty", torch.zeros(0, 3)), ("empty_int", torch.zeros(2, 0, dtype=torch.int64)),
        ("shared_head", shared[:10].view(2, 5)), ("shared_tail", shared[5:]),
        ("shared_whole", shared),
        ("transposed", base.t()), ("sliced", base[1:, 2:5]), ("strided", base[::2, ::3]),
        ("permuted", torch.randn(2, 3, 4, generator=generator).permute(2, 0, 1)),
        ("expanded", torch.tensor([1.0, 2.0]).expand(3, 2)),
        ("parameter", torch.nn.Parameter(torch.randn(3, 2, generator=generator))),
        ("frozen_parameter", torch.nn.Parameter(torch.ones(2), requires_grad=False)),
        ("same_object_again", base),
    ])
    meta = {"mmseg_version": "0.5", "CLASSES": ("road", "car"), "PALETTE": [[1, 2, 3]],
            "iter": 20000, "lr": 0.01, "note": None, "size": torch.Size([2, 3]),
            "raw": b"\x00\xff", "nested": {"deeper": [1, (2, "three")]}}
    optimizer = {"state": {0: {"momentum_buffer": torch.full((2,), 0.5)}},
                 "param_groups": [{"lr": 0.1, "params": [0]}]}
    return {"meta": meta, "state_dict": state, "optimizer": optimizer}


SAVERS: dict[str, Callable] = {
    "zip": torch.save,
    "zip_without_byteorder_record": lambda obj, path: torch.save(
        obj, path, _disable_byteorder_record=True),
    "legacy": lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False),
}


def assert_same(expected, actual, where: str = "") -> None:
    """`actual` (our reader) equals `expected` (torch.load) bit for bit, tensors as arrays."""
    if isinstance(expected, torch.Tensor):
        reference = expected.detach()
        if reference.dtype == torch.bfloat16:
            reference = reference.float()  # exact: bfloat16 is float32's upper half
        reference = reference.numpy()
        assert isinstance(actual, np.ndarray), where
        assert (actual.dtype, actual.shape) == (reference.dtype, reference.shape), where
        assert actual.tobytes() == reference.tobytes(), where  # NaN, inf and -0.0 too
        assert actual.flags.c_contiguous and actual.flags.writeable, where
    elif isinstance(expected, dict):
        assert type(actual) is type(expected) and list(actual) == list(expected), where
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):  # torch.Size comes back as a plain tuple
        assert isinstance(actual, tuple if isinstance(expected, tuple) else list), where
        assert len(actual) == len(expected), where
        for index, (one, other) in enumerate(zip(expected, actual)):
            assert_same(one, other, f"{where}[{index}]")
    else:
        assert type(actual) is type(expected) and actual == expected, where


@pytest.mark.parametrize("format_name", sorted(SAVERS))
def test_checkpoints_read_bit_identical_to_torch_load(format_name, tmp_path):
    path = str(tmp_path / "checkpoint.pth")
    SAVERS[format_name](sample_checkpoint(), path)
    loaded = load_checkpoint(path)
    assert_same(torch.load(path, weights_only=True), loaded)
    state = loaded["state_dict"]
    assert state["same_object_again"] is state["float32"]  # as torch.load gives it
    state["shared_head"][0, 0] = 100.0  # views of one storage come back independent
    assert state["shared_whole"][0] == 0.0 and state["shared_tail"][0] == 5.0


class ViewedStorage:
    """Pickled as a storage view, as PyTorch before 1.0 wrote them."""


class TensorOnView:
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (ViewedStorage(), 1, (2, 3), (1, 2), False, collections.OrderedDict()))


def test_legacy_storage_views_are_read(tmp_path):
    """('storage', type, root key, location, numel, (view key, offset, numel)) ids."""
    path = str(tmp_path / "views.pth")

    class LegacyPickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, ViewedStorage):
                return ("storage", torch.FloatStorage, "root", "cpu", 12, ("view", 4, 8))
            return None

    with open(path, "wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        LegacyPickler(handle, protocol=2).dump({"view": TensorOnView()})
        pickle.dump(["root"], handle, protocol=2)
        handle.write(np.int64(12).tobytes() + np.arange(12, dtype="<f4").tobytes())
    loaded = load_checkpoint(path)
    assert_same(torch.load(path, weights_only=True), loaded)
    np.testing.assert_array_equal(loaded["view"], [[5, 7, 9], [6, 8, 10]])


def test_bfloat16_becomes_the_equal_float32(tmp_path):
    path = str(tmp_path / "bf16.pth")
    values = torch.tensor([1.0, -2.5, 3.0e38, 1.0e-38, float("inf")]).bfloat16()
    torch.save({"bf16": values, "transposed": values[:4].view(2, 2).t()}, path)
    loaded = load_checkpoint(path)
    assert loaded["bf16"].dtype == np.float32
    assert_same(torch.load(path, weights_only=True), loaded)


def rewrite_zip(source: str, target: str, change: Callable[[str, bytes], bytes]) -> None:
    """Copies a torch zip checkpoint member by member through `change(name, data)`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, change(name, old.read(name)))


def test_big_endian_storages_are_byteswapped(tmp_path):
    little, big = str(tmp_path / "little.pth"), str(tmp_path / "big.pth")
    tensors = {"float": torch.randn(3, 4), "int64": torch.arange(-4, 8),
               "half": torch.randn(5).half()}
    torch.save(tensors, little)  # storage keys 0, 1, 2 in this order
    dtypes = {f"data/{key}": value.numpy().dtype for key, value in
              zip("012", tensors.values())}

    def to_big_endian(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        stored = dtypes.get(name.split("/", 1)[1])
        return np.frombuffer(data, stored).byteswap().tobytes() if stored else data

    rewrite_zip(little, big, to_big_endian)
    loaded = load_checkpoint(big)
    assert_same(torch.load(big, weights_only=True), loaded)
    assert_same(tensors, loaded)


def test_read_state_dict_unwraps_mmseg_checkpoints_and_gives_float32(tmp_path):
    path = str(tmp_path / "mmseg.pth")
    torch.save({"meta": {"iter": 1}, "state_dict": {"w": torch.ones(2, dtype=torch.float64),
                                                    "n": torch.tensor(3)}}, path)
    state = read_state_dict(path)
    assert state["w"].dtype == np.float32 and state["n"].dtype == np.int64


def error_for(path: str) -> str:
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert path in message and "\n" not in message and message.isprintable()
    assert len(message) < len(path) + 400
    return message


class RunsShell:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_reduce_to_os_system_is_refused_without_running(tmp_path):
    marker = str(tmp_path / "code_ran")
    evil = pickle.dumps({"state_dict": {"w": RunsShell(marker)}}, protocol=2)
    pickle.loads(evil)  # the payload is live: plain pickle runs it
    assert os.path.exists(marker)
    os.remove(marker)

    raw = str(tmp_path / "raw.pth")
    with open(raw, "wb") as handle:
        handle.write(evil)
    in_zip = str(tmp_path / "in_zip.pth")
    torch.save({"w": torch.ones(2)}, str(tmp_path / "valid.pth"))
    rewrite_zip(str(tmp_path / "valid.pth"), in_zip,
                lambda name, data: evil if name.endswith("/data.pkl") else data)
    for path in (raw, in_zip):
        message = error_for(path)
        assert "not loaded" in message and "system" in message
        assert not os.path.exists(marker)


def crafted_global(module: str, name: str) -> bytes:
    """A protocol-2 pickle calling module.name("1+1")."""
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() +
            b"X\x03\x00\x00\x001+1\x85R.")


@pytest.mark.parametrize("pickled", [
    crafted_global("builtins", "eval"),
    crafted_global("torch._utils", "_rebuild_from_type_v2"),
    pickle.dumps(collections.Counter(a=1), protocol=2),
    pickle.dumps(np.ones(2), protocol=2),
], ids=["builtins.eval", "other_torch_function", "collections.Counter", "numpy_array"])
def test_unexpected_globals_in_a_valid_zip_layout_are_refused(pickled, tmp_path):
    valid, crafted = str(tmp_path / "valid.pth"), str(tmp_path / "crafted.pth")
    torch.save({"w": torch.ones(2)}, valid)
    rewrite_zip(valid, crafted,
                lambda name, data: pickled if name.endswith("/data.pkl") else data)
    assert "not loaded" in error_for(crafted)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_whole_pickled_module_is_refused(legacy, tmp_path):
    path = str(tmp_path / "model.pth")
    torch.save(torch.nn.Linear(2, 3), path, _use_new_zipfile_serialization=not legacy)
    assert "torch.nn.modules.linear.Linear" in error_for(path)


def text(value: str) -> bytes:
    """The pickle opcode pushing a str."""
    return b"X" + len(value).to_bytes(4, "little") + value.encode()


TWO_FLOATS = (b"ctorch._utils\n_rebuild_tensor_v2\n((" + text("storage") +
              b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + b"K\x02tQK\x00K\x02\x85"
              b"K\x01\x85\x89ccollections\nOrderedDict\n)RtR")  # a tensor on storage 0


@pytest.mark.parametrize("pickled", [
    b"\x80\x02}" + text("w") + TWO_FLOATS + b"}" + text("stride") +
    b"J\xff\xff\xff\xff\x85sbs.",
    b"\x80\x02ctorch\nFloatStorage\n}" + text("name") + text("UntypedStorage") +
    b"sb0}" + text("w") + TWO_FLOATS + b"s.",
], ids=["tensor_stride", "storage_type"])
def test_pickles_cannot_alter_checked_objects(pickled, tmp_path):
    """pickle's BUILD sets attributes: a negative stride set after the bounds check would
    read memory outside the data, a changed storage type would change later loads."""
    valid, crafted = str(tmp_path / "valid.pth"), str(tmp_path / "crafted.pth")
    torch.save({"w": torch.tensor([1.5, 2.5])}, valid)
    rewrite_zip(valid, crafted,
                lambda name, data: pickled if name.endswith("/data.pkl") else data)
    assert "not a readable PyTorch checkpoint" in error_for(crafted)
    np.testing.assert_array_equal(load_checkpoint(valid)["w"], np.float32([1.5, 2.5]))


def truncate(path: str, keep: float) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[:int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["empty", "zip_cut", "legacy_cut", "storage_cut",
                                    "stride_past_storage"])
def test_damaged_files_give_one_clear_error(damage, tmp_path):
    path = str(tmp_path / "damaged.pth")
    tensors = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    if damage == "empty":
        with open(path, "wb") as handle:
            handle.write(b"")
    elif damage == "legacy_cut":
        SAVERS["legacy"](tensors, path)
        truncate(path, 0.9)
    else:
        torch.save(tensors, path)
        if damage == "zip_cut":
            truncate(path, 0.5)
        else:  # storage 0 holds fewer elements than its tensor reads
            valid = str(tmp_path / "valid.pth")
            os.replace(path, valid)
            if damage == "storage_cut":
                rewrite_zip(valid, path, lambda name, data:
                            data[:100] if name.endswith("/data/0") else data)
            else:
                rewrite_zip(valid, path, lambda name, data: data.replace(
                    b"K@K\x01\x86", b"K@KA\x86") if name.endswith("/data.pkl") else data)
    assert "not a readable PyTorch checkpoint" in error_for(path)


@pytest.mark.parametrize("pickled, expected", [
    # FRAME opcode whose length asks for exabytes: pickle allocates before it reads
    (b"\x95" + struct.pack("<Q", 2 ** 62) + b"N.", "more memory than this machine has"),
    # FLOAT opcode on a line of unprintable bytes: ValueError quotes them, newline included
    (b"F\x1a\xff\x08\x1b\n.", "not a readable PyTorch checkpoint (ValueError: could not"),
], ids=["huge_frame", "unprintable_float"])
def test_errors_that_quote_the_bytes_or_ask_for_memory_stay_one_line(pickled, expected,
                                                                     tmp_path):
    path = str(tmp_path / "damaged.pth")
    with open(path, "wb") as handle:
        handle.write(pickled)
    assert expected in error_for(path)


def test_random_bytes_always_give_one_clear_error(tmp_path):
    """300 seeded files of random bytes (a fresh draw each run once gave CI a ValueError
    quoting bytes with a newline): 2 of these make pickle ask for exabytes, the rest
    fail in pickle's parser."""
    path = str(tmp_path / "damaged.pth")
    for seed in range(300):
        with open(path, "wb") as handle:
            handle.write(np.random.default_rng(seed).bytes(4096))
        error_for(path)


def test_the_old_tar_format_is_refused_with_how_to_resave(tmp_path):
    path = str(tmp_path / "old.pth")
    with tarfile.open(path, "w") as archive:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(name)
            info.size = 4
            archive.addfile(info, io.BytesIO(b"\x80\x02N."))
    message = error_for(path)
    assert "tar format" in message and "torch.save(" in message


def test_a_missing_file_is_named(tmp_path):
    assert "does not exist" in error_for(str(tmp_path / "nothing.pth"))
