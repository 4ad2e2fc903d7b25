"""The Python API the commands are a shell over."""
from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .runtime.sources import is_bundle  # noqa: F401  (re-exported: one definition)


def open_predictor(source: str, weights: str | None = None, backend: str | None = None, *, input_size=None,
                   threads: int | None = None, device: str = "cpu", config_overrides=()):
    """A Predictor for a bundle folder or, through PyTorch, for a model spec."""
    from .runtime.predictor import Predictor

    if is_bundle(source):
        if weights:
            raise UserError("--weights applies to a model spec, not to a bundle (its weights are inside)")
        if config_overrides:
            raise UserError("--opts / --cfg-options change a model config; a bundle's model is already built (re-export it)")
        return Predictor(source, backend, threads=threads, device=device)
    if Path(source).is_dir():
        raise UserError(f"{source}: folder has no deploy.json; not a bundle")
    if backend not in (None, "torch", "pytorch"):
        raise UserError(f"backend {backend!r} needs a bundle; export {source} first (vdeploy export)")
    from .export.spec import in_memory_bundle
    from .export.torch_backend import TorchEagerBackend
    from .frameworks import build_model

    options = {"input_size": input_size} if input_size else {}
    dm = build_model(source, weights, config_overrides=config_overrides, **options)
    bundle = in_memory_bundle(dm, input_size or dm.input_size)
    return Predictor.from_backend(bundle, TorchEagerBackend(bundle, deployable=dm, threads=threads, device=device))
