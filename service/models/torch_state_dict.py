"""Read a PyTorch state dict of plain tensors into numpy arrays, without torch and without running pickled code.

`torch.save` has written two layouts, and both are read here:

* the legacy stream (torch < 1.6, and what facenet-pytorch 2.6.0 ships as `data/onet.pt`): five pickles in a row
  (the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a dict of system info with
  `little_endian`, the object itself, the list of storage keys), then, for each key in that order, the storage as
  an int64 little-endian element count followed by its raw little-endian bytes;
* the zip archive (torch >= 1.6): `<prefix>/data.pkl` (the object), `<prefix>/data/<key>` (each storage's raw
  bytes) and maybe `<prefix>/byteorder` ("little" when absent).

In both, a tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
backward_hooks)` over a persistent id `('storage', torch.FloatStorage, key, location, numel[, view])`.
`_RestrictedUnpickler.find_class` resolves exactly what a state dict of such tensors needs
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the typed storage classes of the dtypes numpy
has) to local stand-ins and refuses every other global with `TorchStateDictError`, so a hostile file can at worst
fail to load. Tensors are cut from their storage with their offset and strides (bounds checked) and copied.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, TypeGuard

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch's typed storage classes -> numpy dtype (little-endian). BFloat16 and the complex/quantised storages have
# no plain numpy counterpart and are refused like any other global.
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code).newbyteorder("<")
    for name, code in {
        "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
        "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
        "ByteStorage": "u1", "BoolStorage": "?",
    }.items()
}


class TorchStateDictError(ValueError):
    """The file is not a torch state dict of plain tensors, or it asks for something this reader refuses."""


# The stand-ins are immutable and have no `__setstate__` or `__dict__`, so a pickled BUILD cannot alter them.
class _StorageType(NamedTuple):
    name: str
    dtype: np.dtype[Any]


class _Storage(NamedTuple):
    key: str
    dtype: np.dtype[Any]
    numel: int


class _TensorRef(NamedTuple):
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _RebuildTensorV2:
    """Stand-in for `torch._utils._rebuild_tensor_v2`: records where the tensor lies; the data comes later."""

    __slots__ = ()

    def __call__(self, storage: object, offset: object, size: object, stride: object, requires_grad: object,
                 backward_hooks: object, metadata: object = None) -> _TensorRef:
        if not isinstance(storage, _Storage):
            raise TorchStateDictError(f"a tensor over {type(storage).__name__}, not over a storage")
        if not (_is_int(offset) and _is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
            raise TorchStateDictError(
                f"malformed tensor geometry: offset {offset!r}, size {size!r}, stride {stride!r}")
        if not isinstance(requires_grad, bool) or backward_hooks or metadata:
            raise TorchStateDictError("a tensor with backward hooks or metadata: not a plain state dict")
        return _TensorRef(storage, offset, size, stride)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_int_tuple(value: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(value, tuple) and all(_is_int(v) for v in value)


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensorV2(),
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a plain state dict (to local stand-ins) and torch's storage persistent ids."""

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchStateDictError(
                f"{self.source}: the pickle asks for {module}.{name}, which this reader refuses: it reads a state "
                "dict of plain tensors only (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the "
                f"storages torch.{', torch.'.join(STORAGE_DTYPES)})"
            ) from None

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchStateDictError(f"{self.source}: unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_int(numel):
            raise TorchStateDictError(f"{self.source}: malformed storage id {pid!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise TorchStateDictError(f"{self.source}: storage views (torch < 0.4 files) are not supported")
        storage = _Storage(key, storage_type.dtype, numel)
        if self.storages.setdefault(key, storage) != storage:
            raise TorchStateDictError(f"{self.source}: storage {key} is declared twice, differently")
        return storage


def _unpickle(data: IO[bytes], source: str) -> tuple[object, dict[str, _Storage]]:
    unpickler = _RestrictedUnpickler(data, source)
    try:
        return unpickler.load(), unpickler.storages
    except TorchStateDictError as exc:
        if str(exc).startswith(source):
            raise
        raise TorchStateDictError(f"{source}: {exc}") from None
    except Exception as exc:  # a malformed pickle: truncated, a stand-in called with the wrong arguments, ...
        raise TorchStateDictError(f"{source}: cannot unpickle: {exc}") from exc


def _tensor_refs(obj: object, source: str) -> dict[str, _TensorRef]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRef)
                                            for k, v in obj.items()):
        raise TorchStateDictError(f"{source}: not a state dict (a dict of name -> tensor)")
    return dict(obj)


def _materialise(ref: _TensorRef, flat: np.ndarray, name: str, source: str) -> np.ndarray:
    """Cut the tensor out of its storage's elements (honouring offset and strides) as a native-order copy."""
    size, stride = ref.size, ref.stride
    if all(size):  # strides are >= 0, so the last element lies furthest
        if ref.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= flat.size:
            raise TorchStateDictError(f"{source}: tensor {name} reaches past its storage ({flat.size} elements)")
    elif ref.offset > flat.size:
        raise TorchStateDictError(f"{source}: empty tensor {name} starts past its storage")
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=size, strides=[s * item for s in stride],
                                           writeable=False)
    return np.array(view, dtype=view.dtype.newbyteorder("="), order="C", copy=True)


def _storage_array(raw: bytes, storage: _Storage, byteorder: Literal["<", ">"], source: str) -> np.ndarray:
    if len(raw) != storage.numel * storage.dtype.itemsize:
        raise TorchStateDictError(
            f"{source}: storage {storage.key} holds {len(raw)} bytes, expected {storage.numel} x "
            f"{storage.dtype.itemsize}")
    return np.frombuffer(raw, dtype=storage.dtype.newbyteorder(byteorder))


def _read_legacy(fh: IO[bytes], source: str) -> tuple[dict[str, _TensorRef], dict[str, np.ndarray]]:
    magic, _ = _unpickle(fh, source)
    if magic != LEGACY_MAGIC:
        raise TorchStateDictError(f"{source}: neither a zip checkpoint nor a legacy torch file (bad magic number)")
    protocol, _ = _unpickle(fh, source)
    sys_info, _ = _unpickle(fh, source)
    if protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
        raise TorchStateDictError(f"{source}: unknown legacy torch protocol {protocol!r}")
    if sys_info.get("little_endian") is not True:
        raise TorchStateDictError(f"{source}: written on a big-endian machine, which this reader does not support")
    obj, storages = _unpickle(fh, source)
    refs = _tensor_refs(obj, source)
    keys, _ = _unpickle(fh, source)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys) and sorted(keys) == sorted(storages)):
        raise TorchStateDictError(f"{source}: the storage key list does not match the tensors' storages")
    arrays = {}
    for key in keys:
        storage = storages[key]
        header = fh.read(8)
        if len(header) != 8 or int.from_bytes(header, "little") != storage.numel:
            raise TorchStateDictError(f"{source}: storage {key} does not start with its element count")
        arrays[key] = _storage_array(fh.read(storage.numel * storage.dtype.itemsize), storage, "<", source)
    if fh.read(1):
        raise TorchStateDictError(f"{source}: unexpected bytes after the last storage")
    return refs, arrays


def _read_zip(archive: zipfile.ZipFile, source: str) -> tuple[dict[str, _TensorRef], dict[str, np.ndarray]]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchStateDictError(f"{source}: a zip without exactly one <prefix>/data.pkl: {archive.namelist()}")
    prefix = pickles[0].removesuffix("data.pkl")
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchStateDictError(f"{source}: unknown byteorder {byteorder!r}")
    obj, storages = _unpickle(io.BytesIO(archive.read(pickles[0])), source)
    refs = _tensor_refs(obj, source)
    arrays = {}
    for key, storage in storages.items():
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError:
            raise TorchStateDictError(f"{source}: storage {prefix}data/{key} is missing") from None
        arrays[key] = _storage_array(raw, storage, "<" if byteorder == "little" else ">", source)
    return refs, arrays


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of the torch state dict at `path` (zip or legacy layout), by name, as numpy arrays in
    native byte order. Raises `TorchStateDictError` for anything else, before any of it runs."""
    source = str(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            refs, arrays = _read_zip(archive, source)
    else:
        with path.open("rb") as fh:
            refs, arrays = _read_legacy(fh, source)
    return {name: _materialise(ref, arrays[ref.storage.key], name, source) for name, ref in refs.items()}
