"""Config-reading helpers every mmseg argument module shares: sections, norm and activation
dicts in the models' spelling, tuples for lists, picking keys with mmseg's defaults."""
from __future__ import annotations

from typing import Any, Optional

from ...errors import ConfigError

_NORMS = ("BN", "SyncBN", "BN2d", "GN", "LN")
_ACTS = ("ReLU", "ReLU6", "GELU", "HSwish", "HSigmoid", "Sigmoid", "LeakyReLU", "PReLU", "Swish", "QuickGELU")


def _section(cfg: dict, key: str, where: str) -> dict:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"config has no `{where}{key}` dict")
    return value


def norm_spec(part: dict, where: str, default: Optional[dict] = None, key: str = "norm_cfg") -> Optional[dict]:
    """A config's norm_cfg as the models' norm dict ({"type": "BN", "eps": ...}) or None."""
    cfg = part.get(key, default)
    if cfg is None:
        return None
    kind = cfg.get("type")
    if kind not in _NORMS:
        raise ConfigError(f"{where}.{key} type {kind!r} is not supported; expected one of {_NORMS}")
    out: dict[str, Any] = {"type": "BN" if kind in ("SyncBN", "BN2d") else kind}
    for k in ("eps", "num_groups", "momentum"):
        if k in cfg:
            out[k] = cfg[k]
    if kind == "GN" and "num_groups" not in cfg:
        raise ConfigError(f"{where}.{key}: GN needs num_groups")
    return out


def act_spec(part: dict, where: str, default: Optional[dict] = None, key: str = "act_cfg") -> Optional[dict]:
    cfg = part.get(key, default)
    if cfg is None:
        return None
    kind = cfg.get("type")
    if kind not in _ACTS:
        raise ConfigError(f"{where}.{key} type {kind!r} is not supported; expected one of {_ACTS}")
    return {k: v for k, v in cfg.items() if k != "inplace"}


def _tup(v):
    return tuple(_tup(x) for x in v) if isinstance(v, (list, tuple)) else v


def _pick(part: dict, defaults: dict) -> dict:
    """The keys of `defaults` from a config part (lists as tuples)."""
    return {k: _tup(part.get(k, d)) for k, d in defaults.items()}


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ConfigError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return int(value[0]), int(value[1])
