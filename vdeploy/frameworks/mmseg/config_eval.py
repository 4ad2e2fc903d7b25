"""The interpreter that evaluates a config file's syntax tree as data (config.py reads the files).

It knows the pure, side-effect-free part of Python that mmseg's configs are written in:
- statements: `name = value` (also `a, b = ...`, `name: T = value`, `name += value`), bare
  expressions (evaluated under the same rules, their value dropped; docstrings), and
  `name.update(...)` on a dict the file itself defined;
- literals (numbers, strings, None, booleans), lists, tuples and dicts (`**` included), names
  bound earlier in the same file, arithmetic, comparisons, `and`/`or`/`not`, `x if c else y`,
  `+` on strings/lists/tuples and `*` by an int, subscripts and slices, f-strings (with
  conversions and format specs), list and dict comprehensions (several `for`s, `if`s, tuple
  targets) and generator expressions;
- calls of the builtins `dict list tuple sum range len min max zip enumerate int float str bool
  abs round` (unless the file rebinds the name).
Anything else (imports, attribute access, other calls, lambdas, control flow, sets) raises
ConfigError naming file:line, because evaluating it would mean running the file's code.

Evaluation is bounded: every node visited and every element, character and comprehension step
produced is counted against one budget per load, sizes are checked *before* allocating (so
`[0] * 10**10`, `s = s + s` repeated, `10**10**10` and a huge `range` are refused, not attempted),
every value's size counts shared parts in full (`l = [l, l]` repeated 40 times is 2**40 elements
to whoever walks it) and its nesting depth is limited. A wall-clock deadline backs these up.
"""
from __future__ import annotations

import ast
import operator
import re
import time
from collections import ChainMap
from typing import Any, Optional

from ..config_files import short

# Limits. mmseg 1.2.2's costliest zoo config (Mask2Former-Swin, a chain of five files) takes about
# 3 500 units of work and holds about 2 000 values; these leave ample room for any real config and stop an expression
# that would grow without bound long before it costs seconds or memory.
MAX_WORK = 2_000_000  # node visits + elements/characters produced + items compared, per load
MAX_VALUE_SIZE = 200_000  # values in one value, shared parts counted in full
MAX_TOTAL_SIZE = 2_000_000  # values in all the names of all the files of one load
MAX_VALUE_DEPTH = 100  # nesting of lists/dicts in a value
MAX_EVAL_DEPTH = 100  # nesting of the expression being evaluated
MAX_STR = 100_000  # characters in one string
MAX_INT_BITS = 4096  # 1233 decimal digits
MAX_RANGE = 100_000
MAX_SECONDS = 10.0

_NUMBER_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
               ast.Pow: operator.pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_SCALARS = (str, int, float, bool, type(None))
_TOO_BIG = f"a value of more than {MAX_VALUE_SIZE} elements (shared parts counted in full) is not allowed"
_TOO_LARGE_NUMBER = f"a number larger than 2**{MAX_INT_BITS} is not allowed"
# A format spec whose widths and precisions stay small: `{x:>8.3f}`, `{i:02d}`.
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d{0,3})[,_]?(?:\.(\d{1,3}))?[bcdeEfFgGnosxX%]?\Z", re.S)


class _Refused(Exception):
    def __init__(self, node: ast.AST, why: str):
        super().__init__(why)
        self.node, self.why = node, why


class _Interpreter:
    """Evaluates one file's statements into `env` (name -> value) within the load's budget."""

    def __init__(self, state, builtins: dict):
        self.state = state  # config._Load: the budget shared by the files of one load
        self.builtins = builtins
        self.env: dict[str, Any] = {}
        self.depth = 0
        # id(container) -> (size, depth, container); the container is kept so that its id stays its own.
        self.sizes: dict[int, tuple] = {}

    # ----------------------------------------------------------------------- budget

    def spend(self, node: ast.AST, units: int) -> None:
        state = self.state
        before = state.work
        state.work -= units
        if state.work < 0:
            raise _Refused(node, f"evaluating more than {MAX_WORK} steps is not allowed")
        if before // 4096 != state.work // 4096 and time.monotonic() > state.deadline:
            raise _Refused(node, f"evaluating for more than {MAX_SECONDS:g} s is not allowed")

    def measure(self, node: ast.AST, value: Any) -> tuple[int, int]:
        """(values in `value` with shared parts counted in full, nesting depth); refuses beyond limits."""
        if isinstance(value, str):
            return 1, 0
        if not isinstance(value, (list, tuple, dict)):
            return 1, 0
        known = self.sizes.get(id(value))
        if known is not None and known[2] is value:
            return known[0], known[1]
        return self._measure(node, value, set())

    def _measure(self, node: ast.AST, value: Any, open_: set) -> tuple[int, int]:
        if not isinstance(value, (list, tuple, dict)):
            return 1, 0
        known = self.sizes.get(id(value))
        if known is not None and known[2] is value:
            return known[0], known[1]
        if id(value) in open_:
            raise _Refused(node, "a value contains itself")
        if len(open_) >= MAX_VALUE_DEPTH:
            raise _Refused(node, f"values nested deeper than {MAX_VALUE_DEPTH} levels")
        open_.add(id(value))
        items = [x for kv in value.items() for x in kv] if isinstance(value, dict) else value
        self.spend(node, len(items))
        size, depth = 1, 0
        for item in items:
            s, d = self._measure(node, item, open_)
            size += s
            depth = max(depth, d + 1)
            if size > MAX_VALUE_SIZE:
                raise _Refused(node, _TOO_BIG)
        open_.discard(id(value))
        if depth > MAX_VALUE_DEPTH:
            raise _Refused(node, f"values nested deeper than {MAX_VALUE_DEPTH} levels")
        self.sizes[id(value)] = (size, depth, value)
        return size, depth

    def made(self, node: ast.AST, value: Any) -> Any:
        """A value the interpreter just built: counted and checked before anyone uses it."""
        if isinstance(value, str):
            if len(value) > MAX_STR:
                raise _Refused(node, f"a string longer than {MAX_STR} characters is not allowed")
            self.spend(node, len(value) // 16)
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
            raise _Refused(node, _TOO_LARGE_NUMBER)
        elif isinstance(value, (list, tuple, dict)):
            self.measure(node, value)
        return value

    def size_of_names(self) -> int:
        return sum(self.measure(ast.Module(body=[], type_ignores=[]), v)[0] for v in self.env.values())

    # ----------------------------------------------------------------------- statements

    def execute(self, stmt: ast.stmt) -> None:
        self.spend(stmt, 1)
        try:
            self._execute(stmt)
        except _Refused as r:
            if not hasattr(r.node, "lineno"):
                r.node = stmt
            raise
        except RecursionError:
            raise _Refused(stmt, "nested too deeply") from None
        except MemoryError:
            raise _Refused(stmt, "a value this large is not allowed") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as e:
            # The expression is allowed but fails on these values (`1 < 'a'`, `min([])`): a wrong config.
            raise _Refused(stmt, f"evaluating it fails ({type(e).__name__})") from None

    def _execute(self, stmt: ast.stmt) -> None:
        env = self.env
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant):
                return  # a docstring or a stray constant
            if self._is_update(stmt.value):
                self._update(stmt.value)
                return
            self.eval(stmt.value)  # checked like any expression; the value is dropped
            return
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            raise _Refused(stmt, "imports are not allowed (mmengine's `read_base()` style configs are not "
                                 "supported; use `_base_ = [...]`)")
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value)
            for target in stmt.targets:
                self._assign(target, value, stmt)
            return
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            env[stmt.target.id] = self.eval(stmt.value)
            return
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            if stmt.target.id not in env:
                raise _Refused(stmt, f"name {short(stmt.target.id, 40)} is not defined earlier in this file")
            current, value = env[stmt.target.id], self.eval(stmt.value)
            if isinstance(current, list) and isinstance(stmt.op, (ast.Add, ast.Mult)):
                self._in_place(stmt, current, value)  # Python's list += / *= change the list itself
                return
            env[stmt.target.id] = self._binop(stmt, stmt.op, current, value)
            return
        if isinstance(stmt, ast.Pass):
            return
        raise _Refused(stmt, f"a {type(stmt).__name__} statement is not allowed; only `name = value`")

    def _assign(self, target: ast.AST, value: Any, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
            return
        if isinstance(target, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in target.elts):
            items = self._sequence(stmt, value, "unpacking")
            if len(items) != len(target.elts):
                raise _Refused(stmt, f"unpacking {len(items)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, items):
                self._assign(t, v, stmt)
            return
        raise _Refused(stmt, "only assignments to names (or tuples of names) are allowed")

    def _in_place(self, stmt: ast.AugAssign, target: list, value: Any) -> None:
        if isinstance(stmt.op, ast.Add):
            items = self._sequence(stmt, value, "`+=` on a list")
            self._check_length(stmt, target, len(target) + len(items))
            self._check_size(stmt, self.measure(stmt, target)[0] + sum(self.measure(stmt, v)[0] for v in items))
            target.extend(items)
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _Refused(stmt, f"`*=` on a list takes an int, not a {type(value).__name__}")
            count = max(value, 0)
            self._check_length(stmt, target, len(target) * count)
            self._check_size(stmt, self.measure(stmt, target)[0] * count)
            target *= count
        # Every value that holds this list grew with it: measure afresh.
        self.sizes.clear()
        self.made(stmt, target)

    def _is_update(self, node: ast.AST) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name))

    def _update(self, node: ast.Call) -> None:
        """`name.update(...)` on a dict this file defined: the one method call configs use (mmseg's
        MaskFormer/Mask2Former configs add optimizer keys this way)."""
        name = node.func.value.id
        target = self.env.get(name)
        if not isinstance(target, dict):
            raise _Refused(node, f"`.update()` applies only to a dict defined earlier in this file, "
                                 f"not {short(name, 40)}")
        addition = self._call_dict(node)
        self.spend(node, len(addition))
        target.update(addition)
        # In-place growth changes the size of every value that holds `target`: measure afresh.
        self.sizes.clear()
        self.made(node, target)

    # ----------------------------------------------------------------------- expressions

    def eval(self, node: ast.AST, env: Optional[dict] = None) -> Any:
        self.spend(node, 1)
        self.depth += 1
        try:
            if self.depth > MAX_EVAL_DEPTH:
                raise _Refused(node, f"expression nested deeper than {MAX_EVAL_DEPTH} levels")
            return self._eval(node, self.env if env is None else env)
        finally:
            self.depth -= 1

    def _eval(self, node: ast.AST, env: dict) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, _SCALARS):
                return self.made(node, node.value)
            raise _Refused(node, f"constant of type {type(node.value).__name__} is not allowed")
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise _Refused(node, f"name {short(node.id, 40)} is not defined earlier in this file")
            return env[node.id]
        if isinstance(node, ast.List):
            return self.made(node, [self.eval(e, env) for e in self._no_starred(node.elts)])
        if isinstance(node, ast.Tuple):
            return self.made(node, tuple(self.eval(e, env) for e in self._no_starred(node.elts)))
        if isinstance(node, ast.Dict):
            out: dict = {}
            for k, v in zip(node.keys, node.values):
                if k is None:
                    out.update(self._splat(v, env))
                else:
                    out[self._key(k, self.eval(k, env))] = self.eval(v, env)
            return self.made(node, out)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, env)
        if isinstance(node, ast.BinOp):
            return self._binop(node, node.op, self.eval(node.left, env), self.eval(node.right, env))
        if isinstance(node, ast.BoolOp):
            value = None
            for operand in node.values:
                value = self.eval(operand, env)
                if bool(value) == isinstance(node.op, ast.Or):
                    return value
            return value
        if isinstance(node, ast.Compare):
            return self._compare(node, env)
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.eval(node.test, env) else node.orelse, env)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, env)
        if isinstance(node, ast.JoinedStr):
            return self.made(node, "".join(self._fstring_part(p, env) for p in node.values))
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            return self.made(node, [item for item in self._comprehension(node, env, lambda e: self.eval(node.elt, e))])
        if isinstance(node, ast.DictComp):
            out = {}
            for k, v in self._comprehension(node, env, lambda e: (self.eval(node.key, e), self.eval(node.value, e))):
                out[self._key(node, k)] = v
            return self.made(node, out)
        if isinstance(node, (ast.Set, ast.SetComp)):
            raise _Refused(node, "sets (and mmengine's `{{_base_.x}}` references) are not supported")
        if isinstance(node, ast.Attribute):
            raise _Refused(node, f"attribute access (.{short(node.attr, 40)[1:-1]}) is not allowed")
        if isinstance(node, ast.Lambda):
            raise _Refused(node, "lambdas are not allowed")
        if isinstance(node, ast.Starred):
            raise _Refused(node, "star-unpacking is not allowed")
        raise _Refused(node, f"a {type(node).__name__} expression is not allowed")

    def _no_starred(self, elts):
        for e in elts:
            if isinstance(e, ast.Starred):
                raise _Refused(e, "star-unpacking is not allowed")
        return elts

    def _key(self, node: ast.AST, key: Any):
        if not isinstance(key, (str, int, float, bool, type(None), tuple)):
            raise _Refused(node, "dict keys must be strings, numbers or tuples")
        if isinstance(key, tuple):
            self.spend(node, self.measure(node, key)[0])  # hashing walks the tuple
        return key

    def _splat(self, node: ast.AST, env: dict) -> dict:
        value = self.eval(node, env)
        if not isinstance(value, dict):
            raise _Refused(node, "`**` applies to dicts only")
        self.spend(node, len(value))
        return value

    def _sequence(self, node: ast.AST, value: Any, what: str) -> list:
        """The items of something a config may iterate over (a list, tuple, dict's keys, string)."""
        if isinstance(value, (list, tuple, str)):
            items = list(value)
        elif isinstance(value, dict):
            items = list(value)
        else:
            raise _Refused(node, f"{what} needs a list, tuple, dict or string, not a {type(value).__name__}")
        self.spend(node, len(items))
        return items

    # ----------------------------------------------------------------------- operators

    def _unary(self, node: ast.UnaryOp, env: dict):
        v = self.eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Refused(node, "unary +/-/~ applies to numbers only")
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return v
        if isinstance(node.op, ast.Invert) and isinstance(v, int):
            return ~v
        raise _Refused(node, f"operator {type(node.op).__name__} is not allowed on {type(v).__name__}")

    def _binop(self, node: ast.AST, op: ast.operator, a: Any, b: Any):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numbers and type(op) in _NUMBER_OPS:
            self._check_number_growth(node, op, a, b)
            try:
                result = _NUMBER_OPS[type(op)](a, b)
            except ZeroDivisionError:
                raise _Refused(node, "division by zero") from None
            except OverflowError:
                raise _Refused(node, _TOO_LARGE_NUMBER) from None
            if isinstance(result, complex):
                raise _Refused(node, "the result is a complex number")
            return self.made(node, result)
        if isinstance(op, ast.Add) and type(a) is type(b) and isinstance(a, (str, list, tuple)):
            self._check_length(node, a, len(a) + len(b))
            if not isinstance(a, str):
                self._check_size(node, self.measure(node, a)[0] + self.measure(node, b)[0])
            return self.made(node, a + b)
        if isinstance(op, ast.Mult) and isinstance(a, int) and not isinstance(a, bool) \
                and isinstance(b, (str, list, tuple)):
            a, b = b, a
        if isinstance(op, ast.Mult) and isinstance(a, (str, list, tuple)) and isinstance(b, int) \
                and not isinstance(b, bool):
            count = max(b, 0)
            self._check_length(node, a, len(a) * count)  # before allocating: `[0] * 10**10`
            if not isinstance(a, str):
                self._check_size(node, self.measure(node, a)[0] * count)
            return self.made(node, a * count)
        raise _Refused(node, f"operator {type(op).__name__} on {type(a).__name__} and {type(b).__name__} "
                             "is not allowed")

    def _check_number_growth(self, node, op, a, b) -> None:
        """Refuse integer results beyond MAX_INT_BITS before computing them (`10**10**10`)."""
        if isinstance(op, ast.Pow):
            if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
                if b > MAX_INT_BITS or (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
                    raise _Refused(node, _TOO_LARGE_NUMBER)
            elif isinstance(b, (int, float)) and abs(b) > MAX_INT_BITS and isinstance(a, int) and abs(a) > 1:
                raise _Refused(node, _TOO_LARGE_NUMBER)
        elif isinstance(op, ast.Mult) and isinstance(a, int) and isinstance(b, int):
            if a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
                raise _Refused(node, _TOO_LARGE_NUMBER)

    def _check_length(self, node, seq, length: int) -> None:
        limit = MAX_STR if isinstance(seq, str) else MAX_VALUE_SIZE
        if length > limit:
            what = f"string longer than {limit} characters" if isinstance(seq, str) else \
                f"sequence of more than {limit} elements"
            raise _Refused(node, f"a {what} is not allowed")
        self.spend(node, length // 16 if isinstance(seq, str) else length)

    def _check_size(self, node, size: int) -> None:
        if size > MAX_VALUE_SIZE:
            raise _Refused(node, _TOO_BIG)

    def _compare(self, node: ast.Compare, env: dict) -> bool:
        left = self.eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators):
            right = self.eval(comparator, env)
            # Comparing containers walks them: charge what it may visit.
            self.spend(node, sum(len(v) if isinstance(v, str) else self.measure(node, v)[0] for v in (left, right)))
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def _subscript(self, node: ast.Subscript, env: dict):
        container = self.eval(node.value, env)
        if isinstance(node.slice, ast.Slice):
            parts = [None if p is None else self.eval(p, env)
                     for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts) \
                    or not isinstance(container, (list, tuple, str)) or parts[2] == 0:
                raise _Refused(node, "slices take integer bounds (and a non-zero step) on lists, tuples and strings")
            result = container[slice(*parts)]
            self.spend(node, len(result))
            return self.made(node, result)
        key = self.eval(node.slice, env)
        if not isinstance(container, (list, tuple, str, dict)):
            raise _Refused(node, f"cannot subscript a {type(container).__name__}")
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            raise _Refused(node, f"cannot subscript a {type(container).__name__} with {short(key, 40)}") from None

    def _fstring_part(self, node: ast.AST, env: dict) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if not isinstance(node, ast.FormattedValue):
            raise _Refused(node, "unsupported f-string part")
        value = self.eval(node.value, env)
        if not isinstance(value, _SCALARS):
            raise _Refused(node, "f-strings may only insert strings, numbers, booleans and None")
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        elif node.conversion == ord("s"):
            value = str(value)
        spec = "" if node.format_spec is None else self.eval(node.format_spec, env)
        if not isinstance(spec, str) or not _FORMAT_SPEC.match(spec):
            raise _Refused(node, f"format spec {short(spec, 40)} is not allowed (widths and precisions up to 999)")
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            raise _Refused(node, f"format spec {short(spec, 40)} does not apply to a {type(value).__name__}") from None

    def _comprehension(self, node, env, produce):
        """produce(scope) for every binding of the comprehension's `for`s that passes its `if`s.

        A scope is ChainMap(comprehension variables, the file's names): the variables shadow the
        file's names inside the comprehension only, and the file's names are never copied."""
        def bind(gens, local: dict):
            scope = ChainMap(local, self.env)
            if not gens:
                yield produce(scope)
                return
            gen = gens[0]
            if gen.is_async:
                raise _Refused(node, "async comprehensions are not allowed")
            for item in self._sequence(gen.iter, self.eval(gen.iter, scope), "a comprehension"):
                inner = dict(local)
                self._bind(gen.target, item, inner, node)
                self.spend(node, 1 + len(inner))
                if all(self.eval(cond, ChainMap(inner, self.env)) for cond in gen.ifs):
                    yield from bind(gens[1:], inner)
        return list(bind(node.generators, dict(env.maps[0]) if isinstance(env, ChainMap) else {}))

    def _bind(self, target: ast.AST, value: Any, scope: dict, node: ast.AST) -> None:
        if isinstance(target, ast.Name):
            scope[target.id] = value
            return
        if isinstance(target, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in target.elts):
            items = self._sequence(node, value, "unpacking")
            if len(items) != len(target.elts):
                raise _Refused(node, f"unpacking {len(items)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, items):
                self._bind(t, v, scope, node)
            return
        raise _Refused(node, "comprehension variables must be names or tuples of names")

    # ----------------------------------------------------------------------- calls

    def _call(self, node: ast.Call, env: dict):
        func = node.func
        if not (isinstance(func, ast.Name) and func.id in self.builtins and func.id not in env):
            try:
                name = ast.unparse(func)
            except Exception:  # pragma: no cover - unparse handles every expression ast.parse builds
                name = type(func).__name__
            raise _Refused(node, f"calling {short(name, 60)[1:-1]}() is not allowed; only "
                                 f"{', '.join(sorted(self.builtins))} are")
        if func.id == "dict":
            return self.made(node, self._call_dict(node, env))
        if node.keywords and func.id not in ("sum", "enumerate", "round"):
            raise _Refused(node, f"{func.id}() takes no keyword arguments here")
        args = [self.eval(a, env) for a in self._no_starred(node.args)]
        kwargs = {kw.arg: self.eval(kw.value, env) for kw in node.keywords if kw.arg is not None}
        if any(kw.arg is None for kw in node.keywords):
            raise _Refused(node, f"{func.id}() takes no `**` arguments here")
        return self.made(node, self.builtins[func.id](self, node, args, kwargs))

    def _call_dict(self, node: ast.Call, env: Optional[dict] = None) -> dict:
        """dict(mapping_or_pairs, key=value, **other) and `name.update(...)` alike."""
        env = self.env if env is None else env
        if len(node.args) > 1:
            raise _Refused(node, "dict() takes at most one positional argument")
        out: dict = {}
        for arg in self._no_starred(node.args):
            value = self.eval(arg, env)
            if isinstance(value, dict):
                self.spend(node, len(value))
                out.update(value)
            else:
                for pair in self._sequence(node, value, "dict()"):
                    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                        raise _Refused(node, "dict() takes a dict or a sequence of (key, value) pairs")
                    out[self._key(node, pair[0])] = pair[1]
        named: set = set()  # keyword arguments, which Python refuses to receive twice
        for kw in node.keywords:
            given = self._splat(kw.value, env) if kw.arg is None else {kw.arg: self.eval(kw.value, env)}
            for key, value in given.items():
                if not isinstance(key, str):
                    raise _Refused(node, "`**` arguments need string keys")
                if key in named:
                    raise _Refused(node, f"keyword argument {short(key, 40)} given twice")
                named.add(key)
                out[key] = value
        return out
