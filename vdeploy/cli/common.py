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


from ..api import is_bundle, open_predictor  # noqa: E402,F401  (the commands' shared entry points)
