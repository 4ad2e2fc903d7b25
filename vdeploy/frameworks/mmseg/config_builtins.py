"""The builtins a config may call (`dict list tuple sum range len min max zip enumerate int float
str bool abs round`), each checking its arguments and bounded like the rest of evaluation."""
from __future__ import annotations

from ..config_files import short
from .config_eval import _SCALARS, MAX_RANGE, _Interpreter, _Refused


def _numbers(it, node, what: str) -> list:
    items = list(it)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise _Refused(node, f"{what}() applies to numbers only here")
    return items


def _one_iterable(interp: _Interpreter, node, args, what: str) -> list:
    if len(args) != 1:
        raise _Refused(node, f"{what}() takes one argument here")
    return interp._sequence(node, args[0], f"{what}()")


def _b_list(interp, node, args, kwargs):
    return [] if not args else _one_iterable(interp, node, args, "list")


def _b_tuple(interp, node, args, kwargs):
    return () if not args else tuple(_one_iterable(interp, node, args, "tuple"))


def _b_sum(interp, node, args, kwargs):
    if not 1 <= len(args) <= 2 or set(kwargs) - {"start"}:
        raise _Refused(node, "sum() takes an iterable and an optional start")
    start = args[1] if len(args) == 2 else kwargs.get("start", 0)
    items = _numbers(_one_iterable(interp, node, args[:1], "sum") + [start], node, "sum")
    # Numbers are at most MAX_INT_BITS wide and at most MAX_VALUE_SIZE many: the sum stays small.
    return sum(items[:-1], items[-1])


def _b_range(interp, node, args, kwargs):
    if not 1 <= len(args) <= 3 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise _Refused(node, "range() takes one to three integers")
    try:
        r = range(*args)
    except ValueError:
        raise _Refused(node, "range() step must not be zero") from None
    if len(r) > MAX_RANGE:  # len() of a range is computed, not allocated
        raise _Refused(node, f"a range of more than {MAX_RANGE} numbers is not allowed")
    interp.spend(node, len(r))
    return list(r)


def _b_len(interp, node, args, kwargs):
    if len(args) != 1 or not isinstance(args[0], (list, tuple, dict, str)):
        raise _Refused(node, "len() takes one list, tuple, dict or string")
    return len(args[0])


def _min_max(which):
    def call(interp, node, args, kwargs):
        items = _one_iterable(interp, node, args, which.__name__) if len(args) == 1 else list(args)
        if not items:
            raise _Refused(node, f"{which.__name__}() of nothing")
        if not (all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
                or all(isinstance(v, str) for v in items)):
            raise _Refused(node, f"{which.__name__}() compares numbers or strings only here")
        return which(items)
    return call


def _b_zip(interp, node, args, kwargs):
    seqs = [interp._sequence(node, a, "zip()") for a in args]
    return [tuple(group) for group in zip(*seqs)]


def _b_enumerate(interp, node, args, kwargs):
    if set(kwargs) - {"start"} or len(args) not in (1, 2):
        raise _Refused(node, "enumerate() takes an iterable and an optional start")
    start = args[1] if len(args) == 2 else kwargs.get("start", 0)
    if not isinstance(start, int) or isinstance(start, bool):
        raise _Refused(node, "enumerate() start must be an integer")
    return [(start + i, v) for i, v in enumerate(interp._sequence(node, args[0], "enumerate()"))]


def _scalar_conversion(kind):
    def call(interp, node, args, kwargs):
        if len(args) > 1 or (args and not isinstance(args[0], _SCALARS)):
            raise _Refused(node, f"{kind.__name__}() takes one string, number, boolean or None here")
        if not args:
            return kind()
        value = args[0]
        if kind is not str and isinstance(value, str) and len(value) > 100:
            raise _Refused(node, f"{kind.__name__}() of a string longer than 100 characters")
        try:
            return kind(value)
        except (ValueError, TypeError, OverflowError):
            raise _Refused(node, f"{kind.__name__}() cannot convert {short(value, 40)}") from None
    return call


def _b_abs(interp, node, args, kwargs):
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], (int, float)):
        raise _Refused(node, "abs() takes one number")
    return abs(args[0])


def _b_round(interp, node, args, kwargs):
    digits = args[1] if len(args) == 2 else kwargs.get("ndigits")
    if not 1 <= len(args) <= 2 or set(kwargs) - {"ndigits"} or isinstance(args[0], bool) \
            or not isinstance(args[0], (int, float)) or not (digits is None or (isinstance(digits, int)
                                                                                and abs(digits) <= 100)):
        raise _Refused(node, "round() takes a number and optional digits (at most 100)")
    try:
        return round(args[0], digits) if digits is not None else round(args[0])
    except (OverflowError, ValueError):
        raise _Refused(node, f"round() cannot round {short(args[0], 40)}") from None


BUILTINS = {
    "dict": None,  # config_eval._Interpreter._call_dict: keyword arguments are expressions, not values
    "list": _b_list, "tuple": _b_tuple, "sum": _b_sum, "range": _b_range, "len": _b_len,
    "min": _min_max(min), "max": _min_max(max), "zip": _b_zip, "enumerate": _b_enumerate,
    "int": _scalar_conversion(int), "float": _scalar_conversion(float), "str": _scalar_conversion(str),
    "bool": _scalar_conversion(bool), "abs": _b_abs, "round": _b_round,
}
