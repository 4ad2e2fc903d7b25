"""detectron2 YAML configs as plain nested dicts, merged the way detectron2 merges them.

`load_config(path)` = package defaults (detectron2's full `get_cfg()` dump) <- optional extra
defaults (a framework built on detectron2 adding its keys, e.g. centermask2) <- the `_BASE_` chain
<- the file. `base_defaults=` replaces the detectron2 defaults altogether (fast-reid has its own).
Full dumps written by `cfg.dump()` load the same way.

Semantics follow detectron2's CfgNode (yacs): a string value is read as a Python literal when it
is one (`STEPS: (210000, 250000)` is a tuple, here a list); a value must keep its default's type
(ints widen to floats); a key must exist in the defaults. YAML is read with a SafeLoader
subclass that bounds size, depth and aliases; files come from the config's tree only
(vdeploy/frameworks/config_files.py).

Keys the defaults do not know are judged by what they could change: keys that only concern
training (solver, data loading, losses, test-time augmentation) come and go between detectron2
releases and are dropped with one warning; any other unknown key under MODEL, INPUT or TEST is an
error, because ignoring it could silently build a different model.
"""
from __future__ import annotations

import ast
import copy
import fnmatch
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from ...errors import ConfigError
from ..config_files import ConfigScope, read_text, short
from .config_versions import apply_legacy_renames, guess_config_version, migrate_config  # noqa: F401

log = logging.getLogger("vdeploy")

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
BASE_KEY = "_BASE_"
_MAX_BASE_DEPTH = 16
# Sections whose unknown keys are refused: everything the deployed model is built from.
INFERENCE_SECTIONS = ("MODEL", "INPUT", "TEST")
# Unknown keys matching these (fnmatch, on the dotted name) change training only. They appear in
# configs written by other detectron2 releases (e.g. DATALOADER.REPEAT_SQRT and FLOAT32_PRECISION
# exist only after v0.6, MODEL.ROI_BOX_HEAD.*FED_LOSS* only from v0.6 on) and in project forks.
TRAINING_ONLY_KEYS = (
    "SOLVER.*", "DATALOADER.*", "DATASETS.*", "FLOAT32_PRECISION", "SEED", "CUDNN_BENCHMARK", "VIS_PERIOD",
    "OUTPUT_DIR", "GLOBAL.*", "TEST.AUG*", "TEST.EVAL_PERIOD", "TEST.PRECISE_BN*", "TEST.EXPECTED_RESULTS",
    "TEST.KEYPOINT_OKS_SIGMAS", "INPUT.CROP*", "INPUT.RANDOM_FLIP", "INPUT.*_TRAIN*", "INPUT.MASK_FORMAT",
    "MODEL.*LOSS*", "MODEL.*SMOOTH_L1*", "MODEL.*_TRAIN", "MODEL.*BATCH_SIZE_PER_IMAGE",
    "MODEL.*POSITIVE_FRACTION", "MODEL.*IOU_THRESHOLDS", "MODEL.*IOU_LABELS", "MODEL.*BOUNDARY_THRESH",
    "MODEL.*PROPOSAL_APPEND_GT", "MODEL.*TRAIN_ON_PRED_BOXES", "MODEL.BACKBONE.FREEZE_AT", "MODEL.DEVICE",
    "MODEL.WEIGHTS", "MODEL.WEIGHT",
)


# --------------------------------------------------------------------------- reading YAML

# detectron2's own Base-RetinaNet.yaml spells its anchor sizes as
# `!!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3)] for x in [32, 64, ...]]"]`.
# That one tag is accepted and its text computed by `_arithmetic` below, which knows numbers,
# lists, + - * / ** and list comprehensions over lists, and nothing else; Python's eval never runs.
EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"
_ARITHMETIC = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
               ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}
_MAX_ITEMS = 10_000


class _Refused(Exception):
    pass


def _arithmetic(node: ast.AST, names: dict, budget: list) -> Any:
    # budget[0]: nodes this expression may still visit; comprehensions nest, so this bounds the work.
    budget[0] -= 1
    if budget[0] < 0:
        raise _Refused("expression too large")
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body, names, budget)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) <= _MAX_ITEMS:
        return [_arithmetic(e, names, budget) for e in node.elts]
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arithmetic(node.operand, names, budget)
        if isinstance(value, (int, float)):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        a, b = _arithmetic(node.left, names, budget), _arithmetic(node.right, names, budget)
        numbers = all(isinstance(v, (int, float)) for v in (a, b))
        if numbers and not (isinstance(node.op, ast.Pow) and abs(b) > 64):  # no 10**10**10
            if isinstance(node.op, (ast.Mult, ast.Pow)) and isinstance(a, int) and isinstance(b, int) \
                    and _int_bits(a) * (abs(b) if isinstance(node.op, ast.Pow) else 1) + _int_bits(b) > 4096:
                raise _Refused("number too large")  # (10**64)*(10**64)*... grows without a ** in sight
            try:
                return _ARITHMETIC[type(node.op)](a, b)
            except (ArithmeticError, ValueError):
                raise _Refused("arithmetic error") from None
    if isinstance(node, ast.ListComp) and len(node.generators) == 1:
        gen = node.generators[0]
        items = _arithmetic(gen.iter, names, budget)
        if isinstance(gen.target, ast.Name) and not gen.ifs and not gen.is_async and isinstance(items, list):
            return [_arithmetic(node.elt, {**names, gen.target.id: item}, budget) for item in items]
    raise _Refused(type(node).__name__)


def _int_bits(value: int) -> int:
    return abs(value).bit_length()


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str) or len(args[0]) > 2000:
        raise _Refused("eval tag without a single expression")
    try:
        return _arithmetic(ast.parse(args[0], mode="eval"), {}, [_MAX_ITEMS * 10])
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Refused("not an expression") from None


class _Bounded(Exception):
    """A YAML document beyond the limits below; the message says which, the mark says where."""

    def __init__(self, why: str, mark):
        super().__init__(why)
        self.why, self.mark = why, mark


# A detectron2 config has about 1500 nodes with its defaults; these leave room for any real one and
# stop YAML bombs (aliases of aliases: "billion laughs") while the document is composed, before any
# Python object is built. Sizes count every alias as the whole subtree it stands for.
MAX_YAML_NODES = 200_000
MAX_YAML_ALIASES = 10_000
MAX_YAML_DEPTH = 64


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader plus the arithmetic-only eval tag above, and bounded composition."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict = {}  # id(node) -> expanded size; holds nodes whose subtree is complete

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _Bounded(f"more than {MAX_YAML_ALIASES} aliases", mark)
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise _Bounded("an alias refers to the node that contains it", mark)
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Bounded(f"values nested deeper than {MAX_YAML_DEPTH} levels", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = ()
        size = 1 + sum(self._sizes[id(c)][0] for c in children)
        if size > MAX_YAML_NODES:
            raise _Bounded(f"the document expands to more than {MAX_YAML_NODES} values (aliases counted "
                           "in full)", mark)
        self._sizes[id(node)] = (size, node)
        return node


_ConfigLoader.add_constructor(EVAL_TAG, _construct_eval)


def read_yaml(path: str | Path, scope: Optional[ConfigScope] = None) -> dict:
    """One YAML mapping, read with a bounded yaml.SafeLoader; any problem is a one-line ConfigError."""
    path = Path(path)
    text = read_text(path, scope)
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except _Bounded as e:
        where = f":{e.mark.line + 1}" if e.mark is not None else ""
        raise ConfigError(f"{path}{where}: YAML refused: {e.why}") from None
    except _Refused:
        raise ConfigError(f"{path}: uses a YAML tag that could run code (its expression is not plain "
                          f"arithmetic); refused") from None
    except yaml.constructor.ConstructorError as e:
        tag = str(getattr(e, "problem", "") or e)
        where = f" (line {e.problem_mark.line + 1})" if getattr(e, "problem_mark", None) else ""
        if "python/" in tag:
            raise ConfigError(f"{path}{where}: uses a YAML tag that could run code; refused") from None
        raise ConfigError(f"{path}{where}: unsupported YAML tag: {tag[:120]}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or "syntax error")[:120]
        raise ConfigError(f"{path}:{where} invalid YAML ({problem})") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{path}: YAML document too deeply nested or too large; refused") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def _merge_dicts(base: dict, override: dict, path: Path, prefix: str = "") -> dict:
    """detectron2's `_BASE_` merge: nested dicts merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and key in out:
            if not isinstance(out[key], dict):
                raise ConfigError(f"{path}: {key_name(prefix + str(key))} is a mapping here but not in its _BASE_")
            out[key] = _merge_dicts(out[key], value, path, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def read_chain(path: str | Path, *, roots: Sequence[str | Path] = (), scope: Optional[ConfigScope] = None,
               _chain: tuple = ()) -> list[tuple[Path, dict]]:
    """Each file of the `_BASE_` chain that starts at `path`, nearest first, as (path, its own keys).

    Bases are relative to the file that names them and confined to the config's tree or an allowed
    root (`roots`, VDEPLOY_CONFIG_ROOTS); see vdeploy/frameworks/config_files.py."""
    path = Path(path).expanduser()
    scope = scope or ConfigScope(path, roots)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: _BASE_ cycle: {cycle}")
    if len(_chain) >= _MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: _BASE_ chain deeper than {_MAX_BASE_DEPTH}")
    data = read_yaml(path, scope)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return [(path, data)]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: _BASE_ must be a file path, got {short(base)}")
    if base.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: _BASE_ {short(base)} is a URL; download it and point _BASE_ at the file")
    base_path = scope.base(base, path)
    return [(path, data), *read_chain(base_path, scope=scope, _chain=(*_chain, resolved))]


def read_with_bases(path: str | Path, _chain: tuple = (), *, roots: Sequence[str | Path] = ()) -> dict:
    """The file merged over its `_BASE_` chain (see `read_chain` for where bases may be)."""
    chain = read_chain(path, roots=roots, _chain=_chain)
    merged = chain[-1][1]
    for file, data in reversed(chain[:-1]):
        merged = _merge_dicts(merged, data, file)
    return merged


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def key_name(key: str, limit: int = 60) -> str:
    """A config key as it may appear in a message: a dotted name, cut to `limit` characters.

    Anything else is not echoed at all, so that a file that is not a config (whose "keys" would be
    its lines) never has its content printed."""
    if not key or not set(key) <= _NAME_CHARS:
        return "<a key that is not a name>"
    return key if len(key) <= limit else key[:limit - 3] + "..."


def key_names(keys: Sequence[str], limit: int = 12) -> str:
    names = [key_name(k) for k in keys[:limit]]
    return ", ".join(names) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# --------------------------------------------------------------------------- merging into defaults

def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    """A YAML string that spells a Python literal means that literal (as yacs reads it)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return _plain(value)


def _coerce(key: str, value: Any, default: Any, path: Path) -> Any:
    if value is None or default is None or type(value) is type(default):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{path}: {key_name(key)} must be a {type(default).__name__} like its default "
                      f"({short(default)}), got {type(value).__name__} {short(value)}")


def is_training_only(dotted: str) -> bool:
    return any(fnmatch.fnmatchcase(dotted, pattern) for pattern in TRAINING_ONLY_KEYS)


def merge_into_defaults(defaults: dict, overrides: dict, path: Path, *, allow_new: bool = False,
                        ignored: Optional[list] = None, prefix: str = "") -> dict:
    """`overrides` merged into a copy of `defaults` with detectron2's checks (see the module doc).

    allow_new: accept keys absent from `defaults` (used to layer extra defaults over the base ones).
    ignored: receives the dotted names of unknown training-only keys that were dropped.
    """
    out = copy.deepcopy(defaults)
    ignored = [] if ignored is None else ignored
    for key, raw in overrides.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfigError(f"{path}: config keys must be strings, got {short(key)} under "
                              f"{key_name(prefix[:-1]) if prefix else 'the top level'}")
        if key == BASE_KEY:
            raise ConfigError(f"{path}: _BASE_ is only allowed at the top level")
        if key not in out:
            if allow_new:
                out[key] = _plain(copy.deepcopy(raw)) if isinstance(raw, dict) else _decode(raw)
            elif dotted.split(".")[0] not in INFERENCE_SECTIONS or is_training_only(dotted):
                ignored.append(dotted)
            else:
                raise ConfigError(f"{path}: unknown config key {key_name(dotted)} (not in this detectron2 version's defaults, "
                                  f"and it could change the model); refused")
            continue
        if isinstance(out[key], dict):
            if not isinstance(raw, dict):
                raise ConfigError(f"{path}: {key_name(dotted)} must be a mapping, got {short(raw)}")
            out[key] = merge_into_defaults(out[key], raw, path, allow_new=allow_new, ignored=ignored,
                                           prefix=f"{dotted}.")
        elif isinstance(raw, dict):
            raise ConfigError(f"{path}: {key_name(dotted)} is a single value, not a mapping")
        else:
            out[key] = _coerce(dotted, _decode(raw), out[key], path)
    return out


def load_defaults(base_defaults: Optional[str | Path] = None, extra_defaults: Optional[str | Path] = None) -> dict:
    """The default config: detectron2's (or `base_defaults`), with `extra_defaults` layered on top."""
    base_path = Path(base_defaults) if base_defaults else DEFAULTS_PATH
    defaults = _plain(read_with_bases(base_path))
    if extra_defaults:
        extra_path = Path(extra_defaults)
        defaults = merge_into_defaults(defaults, read_with_bases(extra_path), extra_path, allow_new=True)
    return defaults


def load_config(path: str | Path, *, extra_defaults: Optional[str | Path] = None,
                base_defaults: Optional[str | Path] = None) -> dict:
    """The fully merged config of a detectron2-style YAML file, as a nested plain dict."""
    path = Path(path)
    defaults = load_defaults(base_defaults, extra_defaults)
    data = read_with_bases(path)
    version = guess_config_version(data)
    current = defaults.get("VERSION")
    if isinstance(current, int) and isinstance(version, int) and version > current:
        raise ConfigError(f"{path}: config VERSION {version} is newer than the supported {current}")
    if isinstance(current, int) and isinstance(version, int) and version < current:
        for line in apply_legacy_renames(data, version, current):
            log.warning("%s: %s", path, line)
        data["VERSION"] = current
    ignored: list = []
    cfg = merge_into_defaults(defaults, data, path, ignored=ignored)
    if ignored:
        log.warning("%s: ignoring %d config key(s) unknown to this detectron2 version that only affect "
                    "training: %s", path, len(ignored), key_names(ignored))
    return cfg


# --------------------------------------------------------------------------- writing / comparing

class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # shared lists are written out in full, like cfg.dump()
        return True


def config_to_yaml(cfg: dict) -> str:
    return yaml.dump(cfg, Dumper=_NoAliasDumper, default_flow_style=False, sort_keys=True, allow_unicode=True)


def diff_from_defaults(cfg: dict, defaults: dict) -> dict:
    """The part of `cfg` that differs from `defaults` (keys absent from the defaults included)."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            sub = diff_from_defaults(value, defaults[key])
            if sub:
                out[key] = sub
        elif key not in defaults or defaults[key] != value:
            out[key] = copy.deepcopy(value)
    return out
