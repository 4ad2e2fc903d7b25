"""Read MMSegmentation 1.x Python configs as data, without executing them.

Each file is parsed with `ast` and evaluated by the bounded interpreter of config_eval.py, with
the builtins of config_builtins.py; what Python it knows and its limits are described there.

`_base_` (a path or a list of paths, relative to the file) is resolved with mmengine's merge
rules: bases are merged in order and must not define the same top-level name twice; the file's
own dicts merge into the bases' key by key unless they carry `_delete_=True`. Bases must be `.py`
files in the config's tree or an allowed root (vdeploy/frameworks/config_files.py).
"""
from __future__ import annotations

import ast
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError
from ..config_files import ConfigScope, short
from .config_builtins import BUILTINS
from .config_eval import MAX_SECONDS, MAX_TOTAL_SIZE, MAX_WORK, _Interpreter, _Refused

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
_MAX_DEPTH = 16


def load_config(path: str | os.PathLike, *, roots: Sequence[str | os.PathLike] = ()) -> dict:
    """The merged config of `path` as plain Python data (dicts, lists, tuples, scalars).

    `roots`: folders besides the config's tree (and VDEPLOY_CONFIG_ROOTS) that bases may come from."""
    path = os.fspath(path)
    state = _Load(ConfigScope(path, roots, suffixes=(".py",)))
    return _strip_delete(_load(path, (), state))


class _Load:
    """What one load_config call may still spend, shared by the files of its `_base_` tree."""

    def __init__(self, scope: ConfigScope):
        self.scope = scope
        self.work = MAX_WORK
        self.total = 0
        self.deadline = time.monotonic() + MAX_SECONDS


def _load(path: str, chain: tuple, state: _Load) -> dict:
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"{path}: `_base_` files include each other in a cycle")
    if len(chain) > _MAX_DEPTH:
        raise ConfigError(f"{path}: `_base_` chain deeper than {_MAX_DEPTH}")
    own = _evaluate_file(path, state)
    bases = own.pop(BASE_KEY, None)
    if bases is None:
        return own
    return _merge(own, _merged_bases(path, bases, chain, state), path)


def _merged_bases(path: str, bases, chain: tuple, state: _Load) -> dict:
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `_base_` must be a path or a list of paths, got {short(bases)}")
    merged: dict = {}
    for rel in bases:
        base_path = os.fspath(state.scope.base(rel, Path(path), key="_base_"))
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: base config {short(rel)} not found (looked at {base_path})")
        base = _load(base_path, chain + (path,), state)
        twice = sorted(set(base) & set(merged))
        if twice:
            raise ConfigError(f"{path}: bases define {', '.join(short(t, 40) for t in twice[:8])} more than once")
        merged.update(base)
    return merged


def load_bases(path: str | os.PathLike, *, roots: Sequence[str | os.PathLike] = ()) -> dict:
    """The merged config of `path`'s `_base_` files alone (empty without any): what the file
    itself changes is the difference between this and load_config (`config show --diff`)."""
    path = os.path.abspath(os.fspath(path))
    state = _Load(ConfigScope(path, roots, suffixes=(".py",)))
    bases = _evaluate_file(path, state).get(BASE_KEY)
    return _strip_delete(_merged_bases(path, bases, (), state)) if bases is not None else {}


def _merge(child: dict, base: dict, path: str, where: str = "") -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and key in out and not value.get(DELETE_KEY, False):
            if not isinstance(out[key], dict):
                raise ConfigError(f"{path}: {where}{short(key, 40)} is a dict here but a {type(out[key]).__name__} in "
                                  "its base; add `_delete_=True` to replace it")
            out[key] = _merge(value, out[key], path, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_strip_delete(v) for v in value)
    return value


def _evaluate_file(path: str, state: _Load) -> dict:
    source = state.scope.read(Path(path))
    try:
        with warnings.catch_warnings():  # SyntaxWarnings quote the file's lines on stderr
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # e.g. an integer literal of 5000 digits
        raise ConfigError(f"{path}: cannot be parsed as a config ({type(e).__name__})") from None
    interp = _Interpreter(state, BUILTINS)
    try:
        for stmt in tree.body:
            interp.execute(stmt)
        size = interp.size_of_names()
    except _Refused as r:
        line = getattr(r.node, "lineno", "?")
        raise ConfigError(f"{path}:{line}: refused: {r.why} (configs are read as data, never run)") from None
    state.total += size
    if state.total > MAX_TOTAL_SIZE:
        raise ConfigError(f"{path}: the config and its bases hold more than {MAX_TOTAL_SIZE} values; refused")
    return interp.env
