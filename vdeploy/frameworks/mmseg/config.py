"""Read MMSegmentation 1.x Python configs as data, without executing them.

A config file is parsed with `ast` and only these forms are evaluated: module-level
assignments to names; literals (numbers, strings, None, booleans); lists, tuples and dicts;
`dict(key=value, ..., **other)` calls; names bound earlier in the same file; unary +/-;
arithmetic on numbers and `+` on strings/lists/tuples; subscripts with constant keys;
simple f-strings; and list comprehensions over a list (`[dict(x=r) for r in ratios]`).
Anything else (imports, other calls, attribute access, lambdas, control flow) raises
ConfigError naming the line, because evaluating it would mean running the file's code.

`_base_` (a path or a list of paths, relative to the file) is resolved with mmengine's merge
rules: bases are merged in order and must not define the same top-level name twice; the file's
own dicts merge into the bases' key by key unless they carry `_delete_=True`.
"""
from __future__ import annotations

import ast
import operator
import os
from typing import Any

from ...errors import ConfigError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
_MAX_DEPTH = 16
_MAX_FILE_BYTES = 1 << 20

_NUMBER_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


class _Refused(Exception):
    def __init__(self, node: ast.AST, why: str):
        super().__init__(why)
        self.node, self.why = node, why


def load_config(path: str | os.PathLike) -> dict:
    """The merged config of `path` as plain Python data (dicts, lists, tuples, scalars)."""
    return _strip_delete(_load(os.fspath(path), ()))


def _load(path: str, chain: tuple) -> dict:
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"{path}: `_base_` files include each other in a cycle")
    if len(chain) > _MAX_DEPTH:
        raise ConfigError(f"{path}: `_base_` chain deeper than {_MAX_DEPTH}")
    own = _evaluate_file(path)
    bases = own.pop(BASE_KEY, None)
    if bases is None:
        return own
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `_base_` must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for rel in bases:
        base_path = os.path.join(os.path.dirname(path), rel)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: base config {rel!r} not found (looked at {base_path})")
        base = _load(base_path, chain + (path,))
        twice = sorted(set(base) & set(merged))
        if twice:
            raise ConfigError(f"{path}: bases define {', '.join(twice)} more than once")
        merged.update(base)
    return _merge(own, merged, path)


def _merge(child: dict, base: dict, path: str, where: str = "") -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and key in out and not value.get(DELETE_KEY, False):
            if not isinstance(out[key], dict):
                raise ConfigError(f"{path}: {where}{key} is a dict here but a {type(out[key]).__name__} in its "
                                  "base; add `_delete_=True` to replace it")
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


def _evaluate_file(path: str) -> dict:
    try:
        if os.path.getsize(path) > _MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {_MAX_FILE_BYTES} bytes; not a config")
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from None
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python: {e.msg}") from None
    env: dict[str, Any] = {}
    try:
        for stmt in tree.body:
            _execute(stmt, env)
    except _Refused as r:
        line = getattr(r.node, "lineno", "?")
        raise ConfigError(f"{path}:{line}: refused: {r.why} (configs are read as data, never run)") from None
    return env


def _execute(stmt: ast.stmt, env: dict) -> None:
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
        return  # a docstring or a stray string
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        raise _Refused(stmt, "imports are not allowed")
    if isinstance(stmt, ast.Assign):
        value = _eval(stmt.value, env)
        for target in stmt.targets:
            if not isinstance(target, ast.Name):
                raise _Refused(stmt, "only assignments to plain names are allowed")
            env[target.id] = value
        return
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        env[stmt.target.id] = _eval(stmt.value, env)
        return
    raise _Refused(stmt, f"a {type(stmt).__name__} statement is not allowed; only `name = value`")


def _eval(node: ast.AST, env: dict) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float, bool, type(None))):
            return node.value
        raise _Refused(node, f"constant of type {type(node.value).__name__} is not allowed")
    if isinstance(node, ast.List):
        return [_eval(e, env) for e in _no_starred(node.elts)]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, env) for e in _no_starred(node.elts))
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(_dict_splat(v, env))
            else:
                out[_hashable(k, env)] = _eval(v, env)
        return out
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise _Refused(node, f"name {node.id!r} is not defined earlier in this file")
        return env[node.id]
    if isinstance(node, ast.Call):
        return _eval_call(node, env)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand, env)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Refused(node, "unary +/- applies to numbers only")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        return _eval_binop(node, env)
    if isinstance(node, ast.Subscript):
        return _eval_subscript(node, env)
    if isinstance(node, ast.JoinedStr):
        return "".join(_eval_fstring_part(p, env) for p in node.values)
    if isinstance(node, ast.ListComp):
        return _eval_listcomp(node, env)
    if isinstance(node, ast.Set) or isinstance(node, ast.SetComp):
        raise _Refused(node, "sets (and mmengine's `{{_base_.x}}` references) are not supported")
    if isinstance(node, ast.Attribute):
        raise _Refused(node, f"attribute access (.{node.attr}) is not allowed")
    if isinstance(node, ast.Lambda):
        raise _Refused(node, "lambdas are not allowed")
    raise _Refused(node, f"a {type(node).__name__} expression is not allowed")


def _no_starred(elts):
    for e in elts:
        if isinstance(e, ast.Starred):
            raise _Refused(e, "star-unpacking is not allowed")
    return elts


def _hashable(node: ast.AST, env: dict):
    key = _eval(node, env)
    if not isinstance(key, (str, int, float, bool, type(None), tuple)):
        raise _Refused(node, "dict keys must be strings, numbers or tuples")
    return key


def _dict_splat(node: ast.AST, env: dict) -> dict:
    value = _eval(node, env)
    if not isinstance(value, dict):
        raise _Refused(node, "`**` applies to dicts only")
    return value


def _eval_call(node: ast.Call, env: dict) -> dict:
    if not (isinstance(node.func, ast.Name) and node.func.id == "dict" and "dict" not in env):
        name = ast.unparse(node.func) if hasattr(ast, "unparse") else type(node.func).__name__
        raise _Refused(node, f"calling {name}() is not allowed; only dict(...) is")
    if node.args:
        raise _Refused(node, "dict() takes keyword arguments only here")
    out: dict = {}
    for kw in node.keywords:
        if kw.arg is None:
            out.update(_dict_splat(kw.value, env))
        else:
            out[kw.arg] = _eval(kw.value, env)
    return out


def _eval_binop(node: ast.BinOp, env: dict):
    a, b = _eval(node.left, env), _eval(node.right, env)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers and type(node.op) in _NUMBER_OPS:
        try:
            return _NUMBER_OPS[type(node.op)](a, b)
        except ZeroDivisionError:
            raise _Refused(node, "division by zero") from None
    if isinstance(node.op, ast.Add) and type(a) is type(b) and isinstance(a, (str, list, tuple)):
        return a + b
    raise _Refused(node, f"operator {type(node.op).__name__} on {type(a).__name__} and {type(b).__name__} "
                         "is not allowed")


def _eval_subscript(node: ast.Subscript, env: dict):
    container = _eval(node.value, env)
    if isinstance(node.slice, ast.Slice):
        parts = [None if p is None else _eval(p, env) for p in (node.slice.lower, node.slice.upper, node.slice.step)]
        if not all(p is None or isinstance(p, int) for p in parts) or not isinstance(container, (list, tuple, str)):
            raise _Refused(node, "slices take integer bounds on lists, tuples and strings")
        return container[slice(*parts)]
    key = _eval(node.slice, env)
    try:
        return container[key]
    except (KeyError, IndexError, TypeError):
        raise _Refused(node, f"cannot subscript a {type(container).__name__} with {key!r}") from None


def _eval_fstring_part(node: ast.AST, env: dict) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.FormattedValue) and node.format_spec is None and node.conversion == -1:
        value = _eval(node.value, env)
        if isinstance(value, (str, int, float, bool, type(None))):
            return str(value)
    raise _Refused(node, "f-strings may only insert plain values, without conversions or format specs")


def _eval_listcomp(node: ast.ListComp, env: dict) -> list:
    if len(node.generators) != 1:
        raise _Refused(node, "list comprehensions may have one `for` only")
    gen = node.generators[0]
    if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
        raise _Refused(node, "list comprehensions may only be `[expr for name in sequence]`")
    seq = _eval(gen.iter, env)
    if not isinstance(seq, (list, tuple)):
        raise _Refused(node, "list comprehensions may only iterate over a list or a tuple")
    return [_eval(node.elt, {**env, gen.target.id: item}) for item in seq]
