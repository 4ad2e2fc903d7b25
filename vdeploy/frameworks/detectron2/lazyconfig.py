"""detectron2 LazyConfig files (`configs/new_baselines/*.py`, ViTDet, MViTv2) read as data, never run.

A LazyConfig is Python, but only a small part of Python is used by real configs: imports of
detectron2 classes, `L(Class)(key=value)`, `partial`, relative imports of other config files,
`model_zoo.get_config("common/...py")`, attribute assignments, `del`, `.pop`/`.update`, list and
dict comprehensions, arithmetic on numbers and lists. This module interprets exactly that over the
`ast`, producing plain dicts: `L(X)(a=1)` becomes `{"_target_": Symbol("...X"), "a": 1}`.

What it refuses (ConfigError naming file:line): an `import` of a module other than detectron2 /
fvcore / torch / functools / omegaconf, a relative import or `get_config` that leaves the config
tree, a call of anything that is not `L(...)`, `partial`, a data constructor (ShapeSpec,
OmegaConf.create) or a pure builtin, `def` / `class` / loops / `with`, and lambdas are kept as
opaque data (never called). Nothing in a file runs, so a refused file has had no effect.

Which classes the `model` tree may name is decided later, by the builder (lazy_build.py); the
training parts (dataloader, optimizer, train, lr_multiplier) are read as data and never built.
"""
from __future__ import annotations

import ast
import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ...errors import ConfigError

# Top-level modules a config may import names from. Importing binds a Symbol; nothing is imported.
ALLOWED_MODULES = ("detectron2", "fvcore", "torch", "functools", "omegaconf")
_MAX_BYTES = 1 << 20
_MAX_STEPS = 200_000     # evaluation steps per load: configs take a few thousand
_MAX_LEN = 100_000       # longest list / string / range a config may build
_MAX_DEPTH = 40          # import chain


@dataclass(frozen=True)
class Symbol:
    """A name imported from a library module: `detectron2.modeling.backbone.RegNet`. Never resolved."""

    path: str

    @property
    def name(self) -> str:
        """The part after the last module: "ResNet.make_default_stages", "ViT", "T.ResizeScale"."""
        parts = self.path.split(".")
        for i, p in enumerate(parts):
            if p[:1].isupper():
                return ".".join(parts[i:])
        return parts[-1]


@dataclass(frozen=True)
class LazyCallable:
    """`L(Symbol)`: waits for its keyword arguments."""

    target: Symbol


@dataclass
class Lambda:
    """A `lambda` kept as data (the builder may recognise a few shapes; it is never called)."""

    where: str
    node: ast.Lambda

    def called_symbol(self) -> Optional[str]:
        """Name of the class the body calls (`lambda c: NaiveSyncBatchNorm(c)`), if any."""
        body = self.node.body
        if isinstance(body, ast.Call):
            f = body.func
            return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        return None


@dataclass
class Partial:
    """`partial(Symbol, **kw)` (norm_layer=partial(nn.LayerNorm, eps=1e-6))."""

    target: Symbol
    kwargs: dict


class Module(dict):
    """A loaded config file's top-level names (attribute access like a module)."""


def target_name(node: Any) -> Optional[str]:
    """`Symbol.name` of a lazy node's `_target_`, or None for plain data."""
    t = node.get("_target_") if isinstance(node, dict) else None
    return t.name if isinstance(t, Symbol) else None


# --------------------------------------------------------------------------- files and trees

def tree_root(path: Path) -> Path:
    """The config tree a file belongs to: the nearest folder (the file's own, or above) with a
    `common/` folder, as detectron2's `configs/` and each project's `configs/` have; else its own."""
    for d in [path.parent, *path.parent.parents]:
        if (d / "common").is_dir():
            return d
    return path.parent


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _zoo_file(rel: str, start: Path, where: str) -> Path:
    """`model_zoo.get_config(rel)`: detectron2's own `configs/` tree, looked for above `start`
    (in a detectron2 checkout, `configs/`; in a zoo folder, the sibling `detectron2/`)."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or p.suffix != ".py":
        raise ConfigError(f"{where}: model_zoo.get_config({rel!r}) must name a .py file inside the config tree")
    for d in [start, *start.parents]:
        for cand in (d / p, d / "configs" / p, d / "detectron2" / p, d / "detectron2" / "configs" / p):
            if cand.is_file() and _inside(cand, cand.parents[len(p.parts) - 1]):
                return cand
    raise ConfigError(f"{where}: model_zoo.get_config({rel!r}): no such file in the config tree above {start}")


def load(path: str | os.PathLike) -> Module:
    """Every top-level name of a LazyConfig file (model, dataloader, train, ...), as data."""
    try:
        return _Loader().load(Path(path), ())
    except (RecursionError, MemoryError):
        raise ConfigError(f"{path}: nested too deeply or too large to read as a config") from None


def parse(path: Path) -> ast.Module:
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ConfigError(f"{path}: larger than {_MAX_BYTES} bytes; not a config")
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python: {e.msg}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{path}: nested too deeply to read as a config") from None


class _Loader:
    def __init__(self):
        self.steps = 0
        self.calls = 0

    def load(self, path: Path, chain: tuple) -> Module:
        key = str(path.resolve())
        if key in chain:
            raise ConfigError(f"{path}: imports itself (cycle {' -> '.join(chain + (key,))})")
        if len(chain) > _MAX_DEPTH:
            raise ConfigError(f"{path}: config imports nested deeper than {_MAX_DEPTH}")
        # re-read on every import, as detectron2 does: each importer gets its own copy to change
        return _File(self, path, chain + (key,)).run()


# --------------------------------------------------------------------------- the interpreter

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
# Pure builtins with bounded results (range is checked for length).
_BUILTINS = {"range": range, "list": list, "tuple": tuple, "dict": dict, "len": len, "zip": zip, "min": min,
             "max": max, "int": int, "float": float, "bool": bool, "sum": sum, "abs": abs, "round": round,
             "sorted": sorted, "enumerate": enumerate, "str": str}
# Methods of config containers a statement may call.
_METHODS = {dict: ("pop", "update", "get", "keys", "values", "items", "copy"),
            list: ("pop", "append", "extend", "index", "copy", "insert", "remove")}
# Calls that only build data (the class is never instantiated).
_DATA_CONSTRUCTORS = ("ShapeSpec",)
# detectron2 functions whose result only training uses: recorded as an unevaluated call, never run.
_TRAINING_DATA_CALLS = ("detectron2.data.detection_utils.create_keypoint_hflip_indices",)


class _File:
    def __init__(self, loader: _Loader, path: Path, chain: tuple):
        self.loader, self.path, self.chain = loader, path, chain
        self.root = tree_root(path)
        self.names = Module()

    def where(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', '?')}"

    def refuse(self, node: ast.AST, why: str):
        raise ConfigError(f"{self.where(node)}: {why}; LazyConfig files are read as data, never run")

    def run(self) -> Module:
        tree = parse(self.path)
        self._refuse_model_class_defined_here(tree)
        # Check every statement's imports first: a refused file is refused before anything is read.
        for stmt in tree.body:
            self.check_statement(stmt)
        for stmt in tree.body:
            self.execute(stmt)
        return self.names

    def _refuse_model_class_defined_here(self, tree: ast.Module) -> None:
        """`model = L(Net)(...)` with `class Net` written in the config itself (detectron2's
        Misc/torchvision_imagenet_R_50.py): name that class, the one reason such a file cannot be
        built, before the imports it needs are refused one by one."""
        defined = {s.name: s for s in tree.body if isinstance(s, ast.ClassDef)}
        for stmt in tree.body:
            if not (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model"
                                                         for t in stmt.targets)):
                continue
            call = stmt.value
            lazy = call.func if isinstance(call, ast.Call) else None
            if (isinstance(lazy, ast.Call) and isinstance(lazy.func, ast.Name) and lazy.func.id in ("L", "LazyCall")
                    and len(lazy.args) == 1 and isinstance(lazy.args[0], ast.Name) and lazy.args[0].id in defined):
                name = lazy.args[0].id
                hint = ""
                if any(isinstance(s, (ast.Import, ast.ImportFrom)) and "torchvision" in ast.dump(s) for s in tree.body):
                    hint = " (a torchvision network can be exported as torchvision:NAME, e.g. torchvision:resnet50)"
                self.refuse(stmt, f"model is L({name})(...), and {name} is a class written in this config file "
                                  f"(line {defined[name].lineno}): its code would have to run{hint}")

    # ---- statements

    def check_statement(self, stmt: ast.stmt, in_function: bool = False) -> None:
        ok = (ast.Import, ast.ImportFrom, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete, ast.Expr, ast.Pass,
              ast.If, ast.For, ast.FunctionDef) + ((ast.Return,) if in_function else ())
        if not isinstance(stmt, ok):
            kind = {ast.AsyncFunctionDef: "an async function", ast.ClassDef: "a class definition",
                    ast.While: "a while loop", ast.With: "a with block", ast.Try: "a try block",
                    ast.Return: "return outside a function", ast.Global: "global",
                    ast.Nonlocal: "nonlocal"}.get(type(stmt), type(stmt).__name__)
            self.refuse(stmt, f"{kind} is not supported")
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) and in_function:
            self.refuse(stmt, "an import inside a function is not supported")
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                self._check_module(stmt, a.name)
        if isinstance(stmt, ast.ImportFrom):
            if stmt.level == 0:
                self._check_module(stmt, stmt.module or "")
            else:
                self._relative_file(stmt)
        if isinstance(stmt, ast.Expr) and not isinstance(stmt.value, (ast.Constant, ast.Call, ast.ListComp)):
            self.refuse(stmt, "an expression statement that is not a call")
        if isinstance(stmt, ast.FunctionDef):
            a = stmt.args
            if stmt.decorator_list or a.vararg or a.kwarg or a.posonlyargs or a.kwonlyargs:
                self.refuse(stmt, f"function {stmt.name!r}: decorators, *args, **kwargs are not supported")
            in_function = True
        if isinstance(stmt, ast.For) and stmt.orelse:
            self.refuse(stmt, "for ... else is not supported")
        for body in ("body", "orelse"):
            for s in getattr(stmt, body, ()) if isinstance(stmt, (ast.If, ast.For, ast.FunctionDef)) else ():
                self.check_statement(s, in_function)

    def _check_module(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] not in ALLOWED_MODULES:
            self.refuse(node, f"import of {module!r} is not allowed (only names from {', '.join(ALLOWED_MODULES)} "
                              "and config files of the same tree)")

    def _relative_file(self, stmt: ast.ImportFrom) -> Path:
        base = self.path.parent
        for _ in range(stmt.level - 1):
            base = base.parent
        target = base.joinpath(*(stmt.module or "").split(".")) if stmt.module else base
        file = target.with_suffix(".py") if stmt.module else None
        dotted = "." * stmt.level + (stmt.module or "")
        if file is None or not _inside(file, self.root):
            self.refuse(stmt, f"relative import {dotted!r} reaches outside the config tree {self.root}")
        if not file.is_file():
            self.refuse(stmt, f"relative import {dotted!r}: no config file {file}")
        return file

    def execute(self, stmt: ast.stmt, local: Optional[dict] = None) -> None:
        """Run one checked statement; `local` is a function's scope (None at the top level)."""
        self.loader.steps += 1
        env = local if local is not None else {}
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.asname:
                    self.names[a.asname] = Symbol(a.name)
                else:
                    top = a.name.split(".")[0]
                    self.names[top] = Symbol(top)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level == 0:
                for a in stmt.names:
                    if a.name == "*":
                        self.refuse(stmt, "`import *` is not supported")
                    self.names[a.asname or a.name] = Symbol(f"{stmt.module}.{a.name}")
            else:
                module = self.loader.load(self._relative_file(stmt), self.chain)
                for a in stmt.names:
                    if a.name not in module:
                        self.refuse(stmt, f"{a.name!r} is not defined in {stmt.module}")
                    self.names[a.asname or a.name] = module[a.name]
        elif isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, env)
            for t in stmt.targets:
                self.assign(t, value, local)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.assign(stmt.target, self.eval(stmt.value, env), local)
        elif isinstance(stmt, ast.AugAssign):
            current = self.eval(stmt.target, env)
            self.assign(stmt.target, self.binop(stmt, stmt.op, current, self.eval(stmt.value, env)), local)
        elif isinstance(stmt, ast.Delete):
            for t in stmt.targets:
                self.delete(t, local)
        elif isinstance(stmt, ast.Expr):
            self.eval(stmt.value, env)
        elif isinstance(stmt, ast.If):
            for s in stmt.body if self.eval(stmt.test, env) else stmt.orelse:
                self.execute(s, local)
        elif isinstance(stmt, ast.For):
            for item in list(self._iterable(stmt, self.eval(stmt.iter, env))):
                if local is not None:
                    self._bind_target(stmt.target, item, local)
                else:
                    self.assign(stmt.target, item, None)
                for s in stmt.body:
                    self.execute(s, local)
        elif isinstance(stmt, ast.FunctionDef):
            (local if local is not None else self.names)[stmt.name] = Function(self, stmt)
        elif isinstance(stmt, ast.Return):
            raise _Return(None if stmt.value is None else self.eval(stmt.value, env))

    def assign(self, target: ast.AST, value: Any, local: Optional[dict] = None) -> None:
        if isinstance(target, ast.Name):
            (local if local is not None else self.names)[target.id] = value
        elif isinstance(target, ast.Attribute):
            obj = self.eval(target.value, local or {})
            if not isinstance(obj, dict):
                self.refuse(target, f"cannot set .{target.attr} on {type(obj).__name__}")
            obj[target.attr] = value
        elif isinstance(target, ast.Subscript):
            obj, key = self.eval(target.value, local or {}), self.eval(target.slice, local or {})
            if not isinstance(obj, (dict, list)):
                self.refuse(target, f"cannot set an item of {type(obj).__name__}")
            try:
                obj[key] = value
            except (IndexError, TypeError) as e:
                self.refuse(target, f"cannot set item {key!r}: {e}")
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value) if isinstance(value, (list, tuple)) else None
            if values is None or len(values) != len(target.elts):
                self.refuse(target, "cannot unpack")
            for t, v in zip(target.elts, values):
                self.assign(t, v, local)
        else:
            self.refuse(target, f"cannot assign to {type(target).__name__}")

    def delete(self, target: ast.AST, local: Optional[dict] = None) -> None:
        if isinstance(target, ast.Name):
            (local if local is not None else self.names).pop(target.id, None)
            return
        if isinstance(target, ast.Attribute):
            obj, key = self.eval(target.value, local or {}), target.attr
        elif isinstance(target, ast.Subscript):
            obj, key = self.eval(target.value, local or {}), self.eval(target.slice, local or {})
        else:
            self.refuse(target, "cannot delete that")
        if not isinstance(obj, dict) or key not in obj:
            self.refuse(target, f"cannot delete {key!r}: not set")
        del obj[key]

    # ---- expressions

    def eval(self, node: ast.AST, env: dict) -> Any:
        self.loader.steps += 1
        if self.loader.steps > _MAX_STEPS:
            self.refuse(node, f"more than {_MAX_STEPS} evaluation steps")
        value = self._eval(node, env)
        if isinstance(value, (list, tuple, str, dict)) and len(value) > _MAX_LEN:
            self.refuse(node, f"builds a value longer than {_MAX_LEN}")
        return value

    def _eval(self, node: ast.AST, env: dict) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in self.names:
                return self.names[node.id]
            if node.id in _BUILTINS or node.id in ("True", "False", "None"):
                return _BUILTINS.get(node.id)
            self.refuse(node, f"name {node.id!r} is not defined")
        if isinstance(node, (ast.List, ast.Tuple)):
            items = []
            for e in node.elts:
                if isinstance(e, ast.Starred):
                    items.extend(self._iterable(e, self.eval(e.value, env)))
                else:
                    items.append(self.eval(e, env))
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                if k is None:
                    out.update(self._mapping(v, self.eval(v, env)))
                else:
                    out[self.eval(k, env)] = self.eval(v, env)
            return out
        if isinstance(node, ast.Attribute):
            return self.attribute(node, self.eval(node.value, env))
        if isinstance(node, ast.Subscript):
            obj = self.eval(node.value, env)
            key = self.eval(node.slice, env)
            if not isinstance(obj, (dict, list, tuple, str)):
                self.refuse(node, f"cannot index {type(obj).__name__}")
            try:
                return obj[key]
            except (KeyError, IndexError, TypeError) as e:
                self.refuse(node, f"bad index {key!r}: {e}")
        if isinstance(node, ast.Slice):
            parts = [None if p is None else self.eval(p, env) for p in (node.lower, node.upper, node.step)]
            return slice(*parts)
        if isinstance(node, ast.BinOp):
            return self.binop(node, node.op, self.eval(node.left, env), self.eval(node.right, env))
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand, env)
            if isinstance(node.op, ast.Not):
                return not v
            if isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(v, (int, float)):
                return -v if isinstance(node.op, ast.USub) else v
            self.refuse(node, "unsupported unary operator")
        if isinstance(node, ast.BoolOp):
            values = [self.eval(v, env) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else next((v for v in values if v), values[-1])
        if isinstance(node, ast.Compare):
            left = self.eval(node.left, env)
            for op, right in zip(node.ops, node.comparators):
                r = self.eval(right, env)
                if type(op) not in _CMPOPS:
                    self.refuse(node, "unsupported comparison")
                if not _CMPOPS[type(op)](left, r):
                    return False
                left = r
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.eval(node.test, env) else node.orelse, env)
        if isinstance(node, (ast.ListComp, ast.DictComp)):
            return self.comprehension(node, env)
        if isinstance(node, ast.JoinedStr):
            return "".join(str(self.eval(v.value if isinstance(v, ast.FormattedValue) else v, env))
                           for v in node.values)
        if isinstance(node, ast.Lambda):
            return Lambda(self.where(node), node)
        if isinstance(node, ast.Call):
            return self.call(node, env)
        self.refuse(node, f"{type(node).__name__} expressions are not supported")

    def attribute(self, node: ast.Attribute, obj: Any) -> Any:
        if node.attr.startswith("__"):
            self.refuse(node, f"attribute {node.attr!r} is not allowed")
        if isinstance(obj, Symbol):
            return Symbol(f"{obj.path}.{node.attr}")
        if isinstance(obj, dict):
            if node.attr in obj:
                return obj[node.attr]
            if type(obj) in (dict, Module) and node.attr in _METHODS[dict]:
                return _Method(obj, node.attr)
            self.refuse(node, f"{node.attr!r} is not set")
        if isinstance(obj, list) and node.attr in _METHODS[list]:
            return _Method(obj, node.attr)
        self.refuse(node, f"attribute {node.attr!r} of {type(obj).__name__} is not supported")

    def binop(self, node: ast.AST, op: ast.operator, a: Any, b: Any) -> Any:
        fn = _BINOPS.get(type(op))
        if fn is None:
            self.refuse(node, "unsupported operator")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if isinstance(op, ast.Pow) and numbers and abs(b) > 64:
            self.refuse(node, "exponent too large")
        if isinstance(op, ast.Mult) and not numbers:
            n = a if isinstance(a, int) else b
            seq = b if isinstance(a, int) else a
            if not isinstance(n, int) or not isinstance(seq, (list, tuple, str)) or len(seq) * max(n, 0) > _MAX_LEN:
                self.refuse(node, "sequence repetition too large or of the wrong type")
        elif not numbers and not (isinstance(op, ast.Add) and type(a) is type(b) and isinstance(a, (list, tuple, str))):
            self.refuse(node, f"operator on {type(a).__name__} and {type(b).__name__} is not supported")
        try:
            return fn(a, b)
        except (ArithmeticError, ValueError) as e:
            self.refuse(node, str(e))

    def comprehension(self, node, env: dict):
        out_list, out_dict = [], {}

        def bind(gens, local):
            if not gens:
                if isinstance(node, ast.ListComp):
                    out_list.append(self.eval(node.elt, local))
                else:
                    out_dict[self.eval(node.key, local)] = self.eval(node.value, local)
                if len(out_list) + len(out_dict) > _MAX_LEN:
                    self.refuse(node, f"comprehension longer than {_MAX_LEN}")
                return
            g = gens[0]
            if g.is_async:
                self.refuse(node, "async comprehensions are not supported")
            for item in self._iterable(g, self.eval(g.iter, local)):
                inner = dict(local)
                self._bind_target(g.target, item, inner)
                if all(self.eval(c, inner) for c in g.ifs):
                    bind(gens[1:], inner)

        bind(node.generators, dict(env))
        return out_list if isinstance(node, ast.ListComp) else out_dict

    def _bind_target(self, target: ast.AST, value: Any, env: dict) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value) if isinstance(value, (list, tuple)) else None
            if values is None or len(values) != len(target.elts):
                self.refuse(target, "cannot unpack")
            for t, v in zip(target.elts, values):
                self._bind_target(t, v, env)
        else:
            self.refuse(target, "unsupported loop target")

    def _iterable(self, node: ast.AST, value: Any):
        if isinstance(value, (list, tuple, str, range, zip, enumerate)):
            return value
        if isinstance(value, dict):
            return list(value)
        self.refuse(node, f"cannot iterate over {type(value).__name__}")

    def _mapping(self, node: ast.AST, value: Any) -> dict:
        if not isinstance(value, dict):
            self.refuse(node, f"** of {type(value).__name__}")
        return value

    def call(self, node: ast.Call, env: dict) -> Any:
        fn = self.eval(node.func, env)
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                args.extend(self._iterable(a, self.eval(a.value, env)))
            else:
                args.append(self.eval(a, env))
        kwargs = {}
        for k in node.keywords:
            if k.arg is None:
                kwargs.update(self._mapping(k.value, self.eval(k.value, env)))
            else:
                kwargs[k.arg] = self.eval(k.value, env)
        if isinstance(fn, LazyCallable):
            if args:
                self.refuse(node, f"L({fn.target.name})(...) takes keyword arguments only")
            return {"_target_": fn.target, **kwargs}
        if isinstance(fn, Symbol):
            return self.call_symbol(node, fn, args, kwargs)
        if isinstance(fn, _Method):
            return fn.call(self, node, args, kwargs)
        if isinstance(fn, Function):
            return fn.call(node, args, kwargs)
        if any(fn is b for b in _BUILTINS.values()):
            if fn is range:
                try:
                    r = range(*args)
                except TypeError as e:
                    self.refuse(node, f"range: {e}")
                if len(r) > _MAX_LEN:
                    self.refuse(node, f"range longer than {_MAX_LEN}")
                return list(r)
            try:
                value = fn(*args, **kwargs)
            except (TypeError, ValueError) as e:
                self.refuse(node, f"{fn.__name__}: {e}")
            return list(value) if isinstance(value, (zip, enumerate)) else value
        self.refuse(node, f"calling {ast.unparse(node.func)!r} is not supported")

    def call_symbol(self, node: ast.Call, fn: Symbol, args: list, kwargs: dict) -> Any:
        last = fn.path.split(".")[-1]
        if fn.path.endswith("config.LazyCall") or fn.path.endswith("config.lazy.LazyCall"):
            if len(args) != 1 or kwargs or not isinstance(args[0], Symbol):
                self.refuse(node, "L(...) takes one class or function imported from a library")
            return LazyCallable(args[0])
        if fn.path == "functools.partial":
            if not args or not isinstance(args[0], Symbol) or len(args) > 1:
                self.refuse(node, "partial(...) takes one imported function and keyword arguments")
            return Partial(args[0], kwargs)
        if fn.path.endswith("model_zoo.get_config") or fn.path == "detectron2.model_zoo.get_config":
            if len(args) != 1 or not isinstance(args[0], str) or kwargs:
                self.refuse(node, "model_zoo.get_config takes one config path")
            return self.loader.load(_zoo_file(args[0], self.path.parent, self.where(node)), self.chain)
        if fn.path.startswith("omegaconf.") and last == "create" and not args and not kwargs:
            return {}
        if fn.name in _DATA_CONSTRUCTORS and fn.path.startswith("detectron2.") and not args:
            return {"_target_": fn, **kwargs}
        if fn.path in _TRAINING_DATA_CALLS:
            return {"_unevaluated_call_": fn, "args": args, **kwargs}
        self.refuse(node, f"calling {fn.path} is not supported: it is not a known constructor "
                          "(only L(...), partial, model_zoo.get_config, ShapeSpec and OmegaConf.create)")


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class Function:
    """A `def` of the config (coco_schedule's `default_X_scheduler`): its body is interpreted with
    the same rules as the file when it is called, in a scope of its own."""

    def __init__(self, file: _File, node: ast.FunctionDef):
        self.file, self.node = file, node

    def call(self, where: ast.AST, args: list, kwargs: dict) -> Any:
        f, a = self.file, self.node.args
        names = [p.arg for p in a.args]
        if len(args) > len(names) or set(kwargs) - set(names):
            f.refuse(where, f"bad arguments to {self.node.name}()")
        local = dict(zip(names, args))
        defaults = dict(zip(names[len(names) - len(a.defaults):], a.defaults))
        for n in names[len(args):]:
            if n in kwargs:
                local[n] = kwargs[n]
            elif n in defaults:
                local[n] = f.eval(defaults[n], {})
            else:
                f.refuse(where, f"{self.node.name}() misses argument {n!r}")
        f.loader.calls += 1
        if f.loader.calls > _MAX_DEPTH:
            f.refuse(where, f"function calls nested deeper than {_MAX_DEPTH}")
        try:
            for s in self.node.body:
                f.execute(s, local)
        except _Return as r:
            return r.value
        finally:
            f.loader.calls -= 1
        return None


class _Method:
    """A bound container method (`model.roi_heads.pop`, `.update`)."""

    def __init__(self, obj, name: str):
        self.obj, self.name = obj, name

    def call(self, file: _File, node: ast.AST, args: list, kwargs: dict) -> Any:
        try:
            result = getattr(self.obj, self.name)(*args, **kwargs)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            file.refuse(node, f".{self.name}(): {e}")
        if isinstance(result, type({}.keys())) or isinstance(result, (type({}.values()), type({}.items()))):
            return list(result)
        return result


# --------------------------------------------------------------------------- interpolation

_INTERP = re.compile(r"^\$\{(\.*)([\w.]*)\}$")


@dataclass(frozen=True)
class Unresolved:
    """An interpolation whose target is not set: an error only if a builder reads it (training
    parts may point at keys that the model does not need)."""

    why: str


def resolve_interpolations(root: Any, names: dict, where: str) -> Any:
    """Replace OmegaConf's "${..key}" strings in `root` by the values they point to.

    `${.x}` is key x of the node holding the string, each further dot one container up (lists
    count, as in OmegaConf); `${a.b}` without leading dots starts from the file's top-level names.
    """

    def lookup(start: Any, dotted: str, trail: str) -> Any:
        node = start
        for part in filter(None, dotted.split(".")):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise LookupError(f"interpolation {trail!r}: {part!r} is not set")
        return node

    visits = [0]

    def walk(node: Any, parents: list, depth: int = 0) -> Any:
        # a value shared many times (`l = [l, l]` repeated) is walked once per use: count them all
        visits[0] += 1
        if depth > 64 or len(parents) > 100 or visits[0] > 2_000_000:
            raise ConfigError(f"{where}: the model config is nested too deeply or too large")
        if isinstance(node, str):
            m = _INTERP.match(node)
            if not m:
                return node
            dots, dotted = len(m.group(1)), m.group(2)
            try:
                if dots > len(parents):
                    raise LookupError(f"interpolation {node!r} goes above the config")
                value = lookup(names if dots == 0 else parents[-dots], dotted, node)
            except LookupError as e:
                return Unresolved(str(e))
            return walk(value, parents[: len(parents) - dots + 1] if dots else [], depth + 1)
        if isinstance(node, dict):
            return type(node)({k: walk(v, parents + [node], depth) for k, v in node.items()}) \
                if type(node) is not dict else {k: walk(v, parents + [node], depth) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            out = [walk(v, parents + [node], depth) for v in node]
            return out if isinstance(node, list) else tuple(out)
        return node

    return walk(root, [])
