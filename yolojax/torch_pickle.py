"""Read PyTorch ``.pt`` zip checkpoints without torch and without executing code from the file.

A ``.pt`` file is a zip archive holding ``<prefix>/data.pkl`` (the pickled object graph) and one raw
storage blob per tensor in ``<prefix>/data/<key>``. We unpickle ``data.pkl`` with an
unpickler whose ``find_class`` accepts only an allowlist of globals: tensor rebuild helpers, plain
containers and the torch / Ultralytics module classes, which become inert attribute bags. Any other
global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` …) raises :class:`UnsafeCheckpointError`
before anything is called.
"""
from __future__ import annotations

import codecs
import collections
import pathlib
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint references a Python global outside the allowlist."""


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch zip checkpoint."""


class TorchObject:
    """Inert stand-in for a pickled torch/Ultralytics object: keeps the pickled state as attributes."""

    _qualname = "object"

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self):
        return f"<{self._qualname}>"


def _storage_dtypes():
    return {
        "HalfStorage": np.float16, "FloatStorage": np.float32, "DoubleStorage": np.float64,
        "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
        "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    }


class _StorageType:
    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    arr = storage
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(arr[storage_offset])
    item = arr.itemsize
    view = np.lib.stride_tricks.as_strided(arr[storage_offset:], shape=size,
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    return data


def _torch_size(*args):
    return tuple(*args) if args else ()


def _torch_device(*args):
    return str(args[0]) if args else "cpu"


_MODULE_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.", "ultralytics.utils.", "ultralytics.yolo.utils.",
                    "ultralytics.models.", "ultralytics.yolo.v8.")
_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
}


def _numpy_globals():
    """NumPy scalar/array reconstruction that Ultralytics metrics dicts may contain (data only)."""
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma
    out = {("_codecs", "encode"): codecs.encode, ("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = ma.scalar
        out[(mod, "_reconstruct")] = ma._reconstruct
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file, encoding="utf-8")
        self._zf, self._prefix, self._source = zf, prefix, source
        self._storages: dict[str, np.ndarray] = {}
        self._dtypes = _storage_dtypes()
        self._classes: dict[str, type] = {}
        self._extra = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        if (module, name) in self._extra:
            return self._extra[(module, name)]
        if module == "torch" and name in self._dtypes:
            return _StorageType(name, self._dtypes[name])
        if module.startswith(_MODULE_PREFIXES) and name[:1].isupper():
            qual = f"{module}.{name}"
            if qual not in self._classes:
                self._classes[qual] = type(name, (TorchObject,), {"_qualname": qual})
            return self._classes[qual]
        raise UnsafeCheckpointError(
            f"{self._source}: refusing to load: the pickle references the global '{module}.{name}', which is not "
            f"on yolojax's allowlist of tensor and module classes. Loading it could execute code from the file. "
            f"If this is a genuine Ultralytics checkpoint, export its state dict to .npz with a trusted PyTorch "
            f"install (yolojax.weights documents the key names) and load that instead.")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])  # pid[3]: the device location, unused
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self._source}: unexpected storage type {storage_type!r}")
        if key not in self._storages:
            try:
                raw = self._zf.read(f"{self._prefix}/data/{key}")
            except KeyError as e:
                raise CheckpointFormatError(f"{self._source}: tensor storage '{key}' is missing from the archive "
                                            f"(truncated or damaged file).") from e
            arr = np.frombuffer(raw, dtype=storage_type.dtype)
            if arr.size < numel:
                raise CheckpointFormatError(f"{self._source}: tensor storage '{key}' is truncated.")
            self._storages[key] = arr[:numel]
        return self._storages[key]


def load_pt(path) -> Any:
    """Unpickle a torch zip checkpoint safely; tensors come back as read-only-copied NumPy arrays."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointFormatError(
            f"{path}: not a PyTorch zip checkpoint ({e}). The file may be truncated or corrupt (re-download it), "
            f"or saved with the legacy non-zip torch format, which yolojax does not read.") from e
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointFormatError(f"{path}: zip archive without data.pkl; not a PyTorch checkpoint.")
        name = pkl[0]
        prefix = name.rsplit("/", 1)[0] if "/" in name else ""
        try:
            with zf.open(name) as f:
                return _RestrictedUnpickler(f, zf, prefix, str(path)).load()
        except (UnsafeCheckpointError, CheckpointFormatError):
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, OSError) as e:
            raise CheckpointFormatError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e}).") from e


def module_state_dict(module: TorchObject, prefix: str = "") -> dict[str, np.ndarray]:
    """Collect ``_parameters`` and ``_buffers`` recursively with dotted names (torch's state_dict order)."""
    out: dict[str, np.ndarray] = {}
    d = module.__dict__
    for group in ("_parameters", "_buffers"):
        for k, v in (d.get(group) or {}).items():
            if v is not None:
                out[prefix + k] = np.asarray(v)
    for k, sub in (d.get("_modules") or {}).items():
        if sub is not None:
            out.update(module_state_dict(sub, prefix + k + "."))
    return out
