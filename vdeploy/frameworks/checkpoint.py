"""Read model checkpoints safely, whatever framework wrote them, and load them into modules.

Formats are recognised from the file's first bytes (the suffix only breaks ties):
- PyTorch (`torch.save`, zip or legacy): `torch.load(weights_only=True)`, never anything looser.
  Containers `{"model": sd}` (detectron2, centermask2, fast-reid), `{"state_dict": sd, "meta": m}`
  (MMSegmentation) and a bare state dict are understood.
- Pickle (detectron2 / Detectron model-zoo `.pkl`: `{"model" or "blobs": {name: ndarray}, "__author__": ...}`):
  read by an Unpickler that can only rebuild numpy arrays, dtypes and plain containers.
- safetensors.

A file that needs any other Python object to load is refused with `CheckpointError`: loading it
would run whatever code its author put there.
"""
from __future__ import annotations

import hashlib
import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ..errors import CheckpointError

log = logging.getLogger("vdeploy")

# torch.save's legacy (pre-zip) format starts with a pickled magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"
_SCALAR_TYPES = (str, int, float, bool, type(None))


@dataclass
class Checkpoint:
    """Model weights of one file. `container` is the key that held them (`"model"`, `"state_dict"`,
    `"blobs"`) or None for a bare state dict; `meta` is the file's `"meta"` dict when it has one,
    else its top-level scalar entries (`"__author__"`, `"iteration"`, ...) or safetensors metadata."""

    state_dict: dict  # name -> torch.Tensor (numpy arrays from .pkl files are converted)
    meta: dict = field(default_factory=dict)
    format: str = "torch"  # "torch" | "pickle" | "safetensors"
    sha256: str = ""
    container: Optional[str] = None


@dataclass
class LoadReport:
    missing: list  # module keys the checkpoint did not provide
    unexpected: list  # checkpoint keys the module does not have


# --------------------------------------------------------------------------- restricted unpickling

def _numpy_globals() -> dict:
    import numpy as np

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): __import__("codecs").encode,  # bytes in protocol-2 pickles from Python 3
               ("collections", "OrderedDict"): __import__("collections").OrderedDict}
    # Pickles name the module that defined the function when they were written: numpy 1 wrote
    # numpy.core.*, numpy 2 writes numpy._core.*.
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _Forbidden(pickle.UnpicklingError):
    """A global outside the allow-list; its message is the global's dotted name."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals rebuild numpy arrays: nothing in the file can run code."""

    def __init__(self, file):
        super().__init__(file, encoding="latin1")  # Detectron's Python 2 pickles hold arrays as str
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Forbidden(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Forbidden("a persistent id (storage of another pickle format)")


# What to do with a refused file. Never "load it with weights_only=False" (or any looser unpickler):
# that runs whatever the file's author put in it, on this machine.
SAFE_ADVICE = ("to use it, extract only the weights where the file came from, or in a throwaway sandbox "
               "(a container or VM without credentials or network): load it there and re-save its state_dict "
               "with torch.save(state_dict, 'weights.pth') or, better, safetensors.torch.save_file(state_dict, "
               "'weights.safetensors'); or download the weights in safetensors format")


def _refusal(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: refusing to unpickle {what}: checkpoints may only hold tensors, arrays "
                           f"and plain containers (loading it could run code from the file); {SAFE_ADVICE}")


def _torch_words(text: str) -> str:
    """A line of torch's error text fit to quote: torch's own advice (`weights_only=False`,
    `add_safe_globals`) would tell the user to run the file's code, so any sentence with it is cut."""
    sentences = [x for x in text.replace("\n", " ").split(". ") if x.strip()]
    kept = [x for x in sentences if "weights_only" not in x and "safe_globals" not in x]
    return (kept[0] if kept else "unreadable")[:160]


def _load_pickle(path: Path, data: bytes) -> Any:
    try:
        return _ArrayUnpickler(io.BytesIO(data)).load()
    except _Forbidden as e:
        raise _refusal(path, str(e)) from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({e})") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- torch / safetensors

def _unsupported_global(message: str) -> str:
    # torch names the blocked callable as "GLOBAL module.name" in its weights_only error.
    for line in message.splitlines():
        if "GLOBAL" in line:
            words = line.split()
            i = words.index("GLOBAL") if "GLOBAL" in words else -1
            if 0 <= i < len(words) - 1:
                return words[i + 1].rstrip(".,:")
    return "an object that is not a tensor"


def _load_torch(path: Path) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "GLOBAL" in msg:
            raise _refusal(path, _unsupported_global(msg)) from None
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint: {_torch_words(msg) if msg else repr(e)}") from None
    except Exception as e:  # torch raises RuntimeError, KeyError, EOFError, ... for damaged files
        first = _torch_words(str(e)) if str(e) else repr(e)[:160]
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({type(e).__name__}: {first})") from None


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None
    return tensors, meta


def _sniff(path: Path, head: bytes) -> str:
    if head.startswith(_ZIP_MAGIC) or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20):
        return "safetensors"
    if head[:1] == b"\x80" or path.suffix.lower() == ".pkl":
        return "pickle"
    if path.suffix.lower() == ".safetensors":
        return "safetensors"
    raise CheckpointError(f"{path}: unknown checkpoint format (not a PyTorch, pickle or safetensors file)")


# --------------------------------------------------------------------------- containers

def _is_weight(v: Any) -> bool:
    import numpy as np
    import torch

    return isinstance(v, torch.Tensor) or (isinstance(v, np.ndarray) and v.dtype != object)


def _to_tensor(key: str, v: Any, path: Path):
    import numpy as np
    import torch

    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, np.ndarray) and v.dtype != object:
        v = np.ascontiguousarray(v)
        return torch.from_numpy(v if v.flags.writeable else v.copy())
    if isinstance(v, np.generic):
        return torch.from_numpy(np.asarray(v))
    raise CheckpointError(f"{path}: entry {key!r} of the weights is a {type(v).__name__}, not a tensor")


def _split_container(obj: Any, path: Path) -> tuple[Mapping, dict, Optional[str]]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of weights")
    for key in ("model", "state_dict", "blobs"):
        sd = obj.get(key)
        if isinstance(sd, Mapping):
            if isinstance(obj.get("meta"), Mapping):  # MMSegmentation: dataset classes, versions
                return sd, dict(obj["meta"]), key
            meta = {str(k): v for k, v in obj.items() if k != key and isinstance(v, _SCALAR_TYPES)}
            return sd, meta, key
    weights = {k: v for k, v in obj.items() if _is_weight(v)}
    if weights and all(k in weights or isinstance(v, _SCALAR_TYPES) for k, v in obj.items()):
        return weights, {str(k): v for k, v in obj.items() if k not in weights}, None
    raise CheckpointError(f"{path}: no weights found (expected a 'model' or 'state_dict' entry, or a dict of "
                          f"tensors; top-level keys: {', '.join(map(str, list(obj)[:8]))})")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path) -> Checkpoint:
    """The weights in `path` as CPU tensors, read without ever running code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    fmt = _sniff(path, head)
    if fmt == "safetensors":
        tensors, meta = _load_safetensors(path)
        return Checkpoint(tensors, meta, fmt, _file_sha256(path), None)
    obj = _load_torch(path) if fmt == "torch" else _load_pickle(path, path.read_bytes())
    sd, meta, container = _split_container(obj, path)
    if fmt == "pickle" and container != "model":
        # Detectron (Caffe2) files keep SGD momentum next to each blob; it is optimizer state.
        sd = {k: v for k, v in sd.items() if not str(k).endswith("_momentum")}
    tensors = {str(k): _to_tensor(str(k), v, path) for k, v in sd.items()}
    return Checkpoint(tensors, meta, fmt, _file_sha256(path), container)


# --------------------------------------------------------------------------- loading into a module

def load_into_module(module, state_dict: Mapping, *, ignore: Iterable[str] = ()) -> LoadReport:
    """Copy `state_dict` into `module` in place. Keys starting with a prefix in `ignore` are skipped.

    A shape mismatch is an error (the checkpoint is for another model); missing and unexpected keys
    are returned and logged once, because the caller knows whether they matter.
    """
    import torch

    ignore = tuple(ignore)
    own = module.state_dict()
    given = {k: v for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    missing = [k for k in own if k not in given and not (ignore and k.startswith(ignore))]
    unexpected = [k for k in given if k not in own]
    with torch.no_grad():
        for key, target in own.items():
            if key not in given:
                continue
            value = _to_tensor(key, given[key], Path("<state dict>"))
            if tuple(value.shape) != tuple(target.shape):
                raise CheckpointError(f"checkpoint weight {key} has shape {tuple(value.shape)}, the model expects "
                                      f"{tuple(target.shape)}")
            target.copy_(value)
    if missing or unexpected:
        log.warning("checkpoint does not match the model exactly: %d missing (%s), %d unexpected (%s)",
                    len(missing), _sample(missing), len(unexpected), _sample(unexpected))
    return LoadReport(missing, unexpected)


def _sample(keys: list, n: int = 4) -> str:
    if not keys:
        return "-"
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")
