"""Backends by name: one registry entry each (name, bundle format, package, preference, aliases,
precisions). A name may carry a precision, `<engine>-<precision>` (`openvino-bf16`,
`onnxruntime-int8`, `torch-bf16`); a plain name is float32.

The engines shipped with the runtime register themselves below. Backends that live elsewhere (the
eager PyTorch model lives on the torch side) are plug-ins: an installed package names an entry
under the `vdeploy.backends` entry-point group, so this package never names a torch-side module.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from typing import Callable

from ...errors import UserError
from ...registry import Registry

ENTRY_POINT_GROUP = "vdeploy.backends"


@dataclass(frozen=True)
class BackendEntry:
    name: str
    format: str | None       # the bundle format it reads; None: rebuilds the model from provenance
    requires: str            # the package the engine lives in (checked without importing it)
    preference: int          # lower is tried first when a bundle has several formats
    load: Callable[[], type] = field(compare=False)  # returns the Backend subclass (imports lazily)
    aliases: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32",)   # what it can run, given a bundle file for it

    def available(self) -> bool:
        import importlib.util

        try:
            return not self.requires or importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):  # a module blocked in sys.modules
            return False


BACKENDS: Registry[BackendEntry] = Registry("backend")
_plugins_loaded = False


def register_backend(entry: BackendEntry) -> BackendEntry:
    BACKENDS.register(entry.name, entry)
    return entry


def _load_plugins() -> None:
    """Register the backends other installed packages declare. One that fails to load is an error."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BACKENDS:
            entry = ep.load()
            if not isinstance(entry, BackendEntry) or entry.name != ep.name:
                raise TypeError(f"entry point {ep.value} must be the BackendEntry named {ep.name!r}")
            register_backend(entry)


def entries() -> list[BackendEntry]:
    """Every registered backend, in order of preference."""
    _load_plugins()
    return sorted((e for _, e in BACKENDS.items()), key=lambda e: (e.preference, e.name))


def backend_name(engine: str, precision: str) -> str:
    return engine if precision == "fp32" else f"{engine}-{precision}"


def split_name(name: str) -> tuple[BackendEntry, str]:
    """`openvino-bf16` -> (openvino's entry, "bf16"); aliases too (`ov-bf16`); plain names are fp32."""
    engine, _, precision = name.partition("-")
    precision = precision or "fp32"
    for e in entries():
        if engine == e.name or engine in e.aliases:
            if precision not in e.precisions:
                raise UserError(f"backend {e.name!r} runs {', '.join(e.precisions)}, not {precision!r}")
            return e, precision
    raise UserError(f"unknown backend {name!r}; choose from: {', '.join(e.name for e in entries())} "
                    "(with a precision: <engine>-bf16, <engine>-int8)")


def canonical_name(name: str) -> str:
    entry, precision = split_name(name)
    return backend_name(entry.name, precision)


def backend_entry(name: str) -> BackendEntry:
    return split_name(name)[0]


def backend_class(name: str):
    entry = backend_entry(name)
    try:
        return entry.load()
    except ImportError as e:
        raise UserError(f"backend {entry.name!r} needs a package that is not installed ({e.name})") from None


def create_backend(name: str, bundle, **options):
    entry, precision = split_name(name)
    return backend_class(name)(bundle, precision=precision, **options)


def runnable_backends(bundle) -> list[str]:
    """The backends (with their precision) that read one of the bundle's model files, in order of
    preference, float32 first."""
    have = bundle.runnable()
    names = [backend_name(e.name, p) for p in ("fp32", "bf16", "int8") for e in entries()
             if e.format and (e.format, p) in have and p in e.precisions]
    return names


def default_backend(bundle) -> str:
    for name in runnable_backends(bundle):
        if split_name(name)[1] == "fp32" and backend_entry(name).available():
            return name
    names = runnable_backends(bundle)
    if names:
        raise UserError(f"{bundle.path}: no installed engine runs it; install one of: "
                        + ", ".join(backend_entry(n).requires for n in names))
    raise UserError(f"{bundle.path}: has no model file any backend can run")


# The engines of the runtime itself, each registered by its own module.
for _module in ("onnxruntime", "openvino", "torchscript"):
    importlib.import_module(f"{__name__}.{_module}")
