"""Hypothesis fuzzing of the config readers: whatever the text, the YAML reader and the mmseg
reader answer with a config or one ConfigError, never another exception, and within a deadline.

The mmseg reader is also checked differentially: a generated program it accepts is run by Python
itself (it holds only the constructs the reader allows, so it is pure; `range`, `zip` and
`enumerate` are given their list-returning forms, as the reader has them) and must give the
same names with the same values."""
from __future__ import annotations

import atexit
import builtins
import datetime
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vdeploy.errors import ConfigError  # noqa: E402
from vdeploy.frameworks.detectron2.config import load_config, read_with_bases  # noqa: E402
from vdeploy.frameworks.mmseg.config import load_config as load_mmseg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT.parent / "shared" / "zoo"
FUZZ = settings(max_examples=200, deadline=datetime.timedelta(seconds=5), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_WORK = Path(tempfile.mkdtemp(prefix="vdeploy-fuzz-"))
atexit.register(shutil.rmtree, _WORK, True)


def _file(name: str, text: str) -> Path:
    path = _WORK / "configs" / "sub" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def _seeds(pattern: str, limit: int) -> list[str]:
    files = sorted(ZOO.rglob(pattern))[:limit] if ZOO.is_dir() else []
    texts = [p.read_text() for p in files]
    return texts or ["MODEL:\n  MASK_ON: true\n  ANCHOR_GENERATOR:\n    SIZES: [[32], [64]]\n"]


def mutated(seeds: list[str], alphabet: str):
    """A seed text with a few characters replaced, inserted or deleted, or spliced with itself."""
    @st.composite
    def build(draw):
        text = draw(st.sampled_from(seeds))
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(text)))
            kind = draw(st.sampled_from(["replace", "insert", "delete", "splice"]))
            chunk = draw(st.text(alphabet=alphabet, min_size=1, max_size=6))
            if kind == "replace":
                text = text[:i] + chunk + text[i + len(chunk):]
            elif kind == "insert":
                text = text[:i] + chunk + text[i:]
            elif kind == "delete":
                text = text[:i] + text[i + draw(st.integers(1, 20)):]
            else:
                j = draw(st.integers(0, len(text)))
                text = text[:i] + text[j:j + draw(st.integers(1, 200))] + text[i:]
        return text
    return build()


# --------------------------------------------------------------------------- YAML

YAML_ALPHABET = " \n\t:-[]{},&*!|>'\"#%@`?<.0123456789abcxyzMODEL_BASE"
YAML_TEXTS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=YAML_ALPHABET, max_size=300),
    mutated(_seeds("*.yaml", 40), YAML_ALPHABET),
    st.lists(st.sampled_from(["a: &a [1, 2]", "b: &b [*a, *a, *a]", "c: [*b, *b, *b, *b]", "<<: *a",
                              "_BASE_: x.yaml", "_BASE_: ../sub/x.yaml", "_BASE_: /dev/zero",
                              "MODEL: {MASK_ON: yes}", "MODEL:\n  WEIGHTS: !!python/object/apply:os.system [ls]",
                              "X: !!python/object/apply:eval ['[x * 2**(1.0/3) for x in [1, 2]]']",
                              "INPUT: {MIN_SIZE_TEST: '10**100'}", "VERSION: 1", "VERSION: x"]),
             max_size=6).map("\n".join),
)


@FUZZ
@given(YAML_TEXTS)
def test_yaml_reader_answers_a_config_or_a_config_error(text):
    path = _file("x.yaml", text)
    for read in (read_with_bases, load_config):
        try:
            assert isinstance(read(path), dict)
        except ConfigError as e:
            assert "\n" not in str(e) and len(str(e)) < 1000


# --------------------------------------------------------------------------- mmseg

NAMES = ["a", "b", "model", "x", "sum", "range", "len", "dict"]
LEAVES = st.one_of(
    st.integers(-10 ** 6, 10 ** 6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["'s'", "'ab'", "None", "True", "False", "10**10", "[0]", "''", "()", "{}", "[1, 2, 3]",
                     "(1, 'x')", "dict(k=1)", "'{}'"]),
    st.sampled_from(NAMES),
)
BINOPS = ["+", "-", "*", "/", "//", "%", "**", "<<", "&"]
COMPARE = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
CALLS = ["sum", "range", "len", "min", "max", "list", "tuple", "dict", "zip", "enumerate", "int", "float", "str",
         "bool", "abs", "round", "print", "open", "getattr"]


def _expressions(children):
    two = st.tuples(children, children)
    return st.one_of(
        st.tuples(children, st.sampled_from(BINOPS), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(COMPARE), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "not ", "~"]), children).map(lambda t: f"({t[0]}{t[1]})"),
        st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(children, max_size=3).map(lambda xs: "(" + "".join(x + ", " for x in xs) + ")"),
        st.lists(two, max_size=3).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.lists(st.tuples(st.sampled_from(["k", "type", "a"]), children), max_size=3).map(
            lambda kv: "dict(" + ", ".join(f"{k}={v}" for k, v in kv) + ")"),
        st.tuples(children, children).map(lambda t: f"dict({t[0]}, **{t[1]})"),
        st.tuples(st.sampled_from(CALLS), st.lists(children, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}:]"),
        st.tuples(children, children, children).map(lambda t: f"[{t[0]} for i in {t[1]} if {t[2]}]"),
        st.tuples(children, children).map(lambda t: f"{{str(i): {t[0]} for i, j in enumerate({t[1]})}}"),
        st.tuples(children, children).map(lambda t: f"sum({t[0]} for i in {t[1]})"),
        st.tuples(children, st.sampled_from(["", "!r", "!s"]), st.sampled_from(["", ":>4", ":.2f", ":03d", ":x"])).map(
            lambda t: f'f"<{{{t[0]}{t[1]}{t[2]}}}>"'),
        st.tuples(children, st.sampled_from(["__class__", "update", "real"])).map(lambda t: f"{t[0]}.{t[1]}"),
        children.map(lambda c: f"(lambda: {c})"),
    )


EXPRESSIONS = st.recursive(LEAVES, _expressions, max_leaves=10)
STATEMENTS = st.one_of(
    st.tuples(st.sampled_from(NAMES), EXPRESSIONS).map(lambda t: f"{t[0]} = {t[1]}"),
    st.tuples(st.sampled_from(NAMES), st.sampled_from(["+=", "*=", "-="]), EXPRESSIONS).map(" ".join),
    EXPRESSIONS.map(lambda e: f"a, b = {e}"),
    EXPRESSIONS,
    st.tuples(st.sampled_from(NAMES), EXPRESSIONS).map(lambda t: f"{t[0]}.update({t[1]})"),
    st.sampled_from(["import os", "from mmseg import x", "pass", "'''doc'''", "x: int = 3", "del a",
                     "for i in []: pass", "a[0] = 1", "_base_ = 'base.py'", "_base_ = ['../sub/base.py']",
                     "_base_ = '/etc/passwd'"]),
)
PROGRAMS = st.lists(STATEMENTS, min_size=1, max_size=8).map(lambda lines: "\n".join(lines) + "\n")

# Mostly accepted programs, for the differential check: names defined first, allowed forms only.
OK_LEAVES = st.one_of(st.integers(-1000, 1000).map(str), st.sampled_from(["a", "b", "x", "model", "'s'", "None",
                                                                           "2.5", "[1, 2]", "True", "()"]))


def _ok_expressions(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "//", "%", "**"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(COMPARE), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.lists(children, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(["k", "type"]), children), max_size=2).map(
            lambda kv: "dict(" + ", ".join(f"{k}={v}" for k, v in kv) + ")"),
        st.tuples(st.sampled_from(["sum", "len", "list", "tuple", "min", "max", "str", "abs", "bool"]),
                  children).map(lambda t: f"{t[0]}({t[1]})"),
        children.map(lambda c: f"[i * 2 for i in range(len(b)) if i != {c}]"),
        children.map(lambda c: f"{{f'k{{i}}': {c} for i, j in enumerate(b)}}"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        children.map(lambda c: f"b[{c}]"),
        children.map(lambda c: f"dict(model, k={c})"),
        children.map(lambda c: f'f"{{{c}!r:>5}}"'),
    )


OK_STATEMENTS = st.one_of(
    st.tuples(st.sampled_from(["a", "b", "x", "model", "y"]), st.recursive(OK_LEAVES, _ok_expressions, max_leaves=6)).map(
        lambda t: f"{t[0]} = {t[1]}"),
    st.recursive(OK_LEAVES, _ok_expressions, max_leaves=6).map(lambda e: f"b += [{e}]"),
    st.recursive(OK_LEAVES, _ok_expressions, max_leaves=6).map(lambda e: f"model.update(z={e})"),
)
OK_PROGRAMS = st.lists(OK_STATEMENTS, min_size=1, max_size=6).map(
    lambda lines: "a = 3\nb = [1, 2, 3]\nx = 'ab'\nmodel = dict(k=1, b=b)\n" + "\n".join(lines) + "\n")
PY_ALPHABET = " \n()[]{}:,.=+-*/%<>!'\"fx_0123456789abcdeimnoprstuy"
MMSEG_TEXTS = st.one_of(PROGRAMS, OK_PROGRAMS, mutated(_seeds("mmseg/**/*.py", 60), PY_ALPHABET), st.text(max_size=200))

# What Python needs to run an accepted program the way the reader evaluated it.
_PY_BUILTINS = {name: getattr(builtins, name) for name in
                ("dict", "list", "tuple", "sum", "len", "min", "max", "int", "float", "str", "bool", "abs", "round")}
_PY_BUILTINS.update(range=lambda *a: list(range(*a)), zip=lambda *a: list(zip(*a)),
                    enumerate=lambda *a, **k: list(enumerate(*a, **k)))


@FUZZ
@given(MMSEG_TEXTS)
def test_mmseg_reader_answers_a_config_or_a_config_error(text):
    _file("base.py", "c = 1\n")
    path = _file("m.py", text)
    try:
        cfg = load_mmseg(path)
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    assert isinstance(cfg, dict)
    if "_base_" in text:
        return
    # Accepted: only the constructs above, so Python may run it; it must agree.
    env = {"__builtins__": _PY_BUILTINS}
    exec(compile(text, str(path), "exec"), env)  # noqa: S102 - the reader accepted it: pure data
    expected = {k: v for k, v in env.items() if not k.startswith("__")}
    assert repr(cfg) == repr(expected)
