"""Config overrides from the command line, with each framework's own semantics:

- detectron2-style YAML (detectron2, centermask2, fast-reid): `--opts KEY VALUE ...` as
  `cfg.merge_from_list` takes them: the dotted key must exist, the value is read as a Python
  literal when it is one (`0.5`, `(800,)`, `True`), else as a string, and must have its default's
  type (an int where a float is expected is widened);
- MMSegmentation: `--cfg-options key=value ...` as mmengine's DictAction takes them: dotted keys
  into nested dicts (missing ones created), values `1`, `0.5`, `True`, `None`, `[a,b]`, `(a,b)`,
  `a,b` (a list) or a string; `model.backbone.depth=101`.
Both are read as data: nothing in a value is executed.
"""
from __future__ import annotations

import ast
import copy
from typing import Any, Sequence

from ..errors import ConfigError

Override = tuple[str, str]


def literal(text: str) -> Any:
    """A Python literal when `text` is one (never evaluated beyond literals), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def apply_opts(cfg: dict, overrides: Sequence[Override], where: str) -> dict:
    """detectron2's merge_from_list: every key must already be in the merged config."""
    if not overrides:
        return cfg
    from .detectron2.config import _coerce  # one type rule for the file and the command line

    cfg = copy.deepcopy(cfg)
    for key, text in overrides:
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"--opts {key}: no such key in {where} ({'.'.join(parts[:i + 1])} is not there)")
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], dict):
            raise ConfigError(f"--opts {key}: is a section; give one of its keys")
        value = literal(text)
        if isinstance(value, tuple) and isinstance(node[parts[-1]], list):
            value = list(value)
        node[parts[-1]] = _coerce(key, value, node[parts[-1]], f"--opts in {where}")
    return cfg


def mmengine_value(text: str) -> Any:
    """A --cfg-options value as mmengine's DictAction reads it."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text == "None":
        return None
    if text[:1] in "[(" and text[-1:] in ")]":
        inner = [mmengine_value(v) for v in _split_top(text[1:-1])] if text[1:-1].strip() else []
        return inner if text[0] == "[" else tuple(inner)
    if "," in text:
        return [mmengine_value(v) for v in _split_top(text)]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + ([cur] if cur.strip() else [])


def apply_cfg_options(cfg: dict, overrides: Sequence[Override], where: str) -> dict:
    """mmengine's merge_from_dict: dotted keys into nested dicts, created where missing."""
    if not overrides:
        return cfg
    cfg = copy.deepcopy(cfg)
    for key, text in overrides:
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--cfg-options {key}: {part} is not a dict in {where}")
        node[parts[-1]] = mmengine_value(text)
    return cfg
