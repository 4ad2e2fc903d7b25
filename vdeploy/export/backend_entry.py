"""The registry entry of the "torch" backend (the eager model), declared to the runtime through the
`vdeploy.backends` entry point so that the runtime never names the torch side. Torch-free itself:
the class (and torch) is imported only when the backend is chosen."""
from __future__ import annotations

from ..runtime.backends import BackendEntry


def _load():
    from .torch_backend import TorchEagerBackend

    return TorchEagerBackend


TORCH_BACKEND = BackendEntry("torch", None, "torch", 100, _load, ("pytorch",), ("fp32", "bf16"))
