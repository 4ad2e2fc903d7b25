"""detectron2 LazyConfig files (`.py`) as a model source, claimed by content.

A Python file is claimed when, read as a syntax tree (never run), it imports from `detectron2`
or imports `model` from a config file next to it that is claimed in turn (the new-baselines
200ep/400ep files only do that). MMSegmentation's `.py` configs import neither, so they stay with
mmseg. A claimed file that the reader then refuses (an `import os`, a call) reports the reader's
precise refusal.
"""
from __future__ import annotations

import ast
from pathlib import Path

from .. import SOURCES, ModelSource

_MAX_BYTES = 1 << 20
_MAX_HOPS = 12


def _tree(path: Path):
    try:
        if not path.is_file() or path.stat().st_size > _MAX_BYTES:
            return None
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _claims_path(path: Path, hops: int) -> bool:
    tree = _tree(path) if path.suffix == ".py" else None
    if tree is None or hops > _MAX_HOPS:
        return False
    for stmt in tree.body:
        if isinstance(stmt, ast.Import) and any(a.name.split(".")[0] == "detectron2" for a in stmt.names):
            return True
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and (stmt.module or "").split(".")[0] == "detectron2":
            return True
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.level > 0 and stmt.module and \
                any(a.name == "model" for a in stmt.names):
            base = path.parent
            for _ in range(stmt.level - 1):
                base = base.parent
            if _claims_path(base.joinpath(*stmt.module.split(".")).with_suffix(".py"), hops + 1):
                return True
    return False


def claims(spec: str) -> bool:
    return _claims_path(Path(spec), 0)


def _build(spec: str, weights=None, **options):
    from .lazy_build import build

    return build(spec, weights, **options)


# Asked before mmseg (50): the claim above is specific to detectron2, mmseg's is broader.
SOURCES.register("detectron2-lazyconfig", ModelSource("detectron2-lazyconfig", claims, _build, precedence=45))
