"""Argument helpers shared by the commands (not a command itself)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def parse_size(text: str | None):
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input-size must look like 800x1333 (height x width), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise UserError(f"--input-size must be positive, got {text!r}")
    return h, w


def parse_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def expand_images(items) -> list[Path]:
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    if not out:
        raise UserError("no images given")
    return out


def is_bundle(source: str) -> bool:
    return (Path(source) / "deploy.json").is_file()


def open_predictor(source: str, weights: str | None = None, backend: str | None = None, *, input_size=None,
                   threads: int | None = None, device: str = "cpu"):
    """A Predictor for a bundle folder or, through PyTorch, for a model spec."""
    from ..runtime.predictor import Predictor

    if is_bundle(source):
        if weights:
            raise UserError("--weights applies to a model spec, not to a bundle (its weights are inside)")
        return Predictor(source, backend, threads=threads, device=device)
    if Path(source).is_dir():
        raise UserError(f"{source}: folder has no deploy.json; not a bundle")
    if backend not in (None, "torch", "pytorch"):
        raise UserError(f"backend {backend!r} needs a bundle; export {source} first (vdeploy export)")
    from ..export.spec import in_memory_bundle
    from ..export.torch_backend import TorchEagerBackend
    from ..frameworks import build_model

    options = {"input_size": input_size} if input_size else {}
    dm = build_model(source, weights, **options)
    bundle = in_memory_bundle(dm, input_size or dm.input_size)
    return Predictor.from_backend(bundle, TorchEagerBackend(bundle, deployable=dm, threads=threads, device=device))
