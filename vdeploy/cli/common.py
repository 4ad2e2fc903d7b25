"""Argument helpers shared by the commands (not a command itself)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

# The image types are decided once, by the reader: a folder lists exactly what read_image reads.
from ..runtime.io import IMAGE_SUFFIXES  # noqa: F401  (re-exported)


def parse_size(text: str | None, option: str = "--input-size"):
    """'800x1333' -> (800, 1333), '224' -> (224, 224), None/'' -> None: the one parser of sizes."""
    if not text:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        size = tuple(int(v) for v in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2:
        raise UserError(f"{option} must look like 800x1333 (height x width) or 224, got {text!r}")
    if min(size) <= 0:
        raise UserError(f"{option} must be positive, got {text!r}")
    return size


def parse_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def expand_images(items) -> list[Path]:
    """Image arguments -> image paths: a file as given (whatever its suffix: read_image decides from
    its header), a folder as its images (IMAGE_SUFFIXES, the formats read_image reads), sorted, each
    as a path under that folder."""
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        else:
            out.append(p)
    if not out:
        raise UserError("no images given")
    return out


from ..api import is_bundle, open_predictor  # noqa: E402,F401  (the commands' shared entry points)
