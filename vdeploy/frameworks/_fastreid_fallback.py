"""TEMPORARY stand-ins for vdeploy.frameworks.detectron2.config / vdeploy.frameworks.checkpoint
(owned by another helper). Deleted once those land."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import yaml

from ..errors import CheckpointError, ConfigError


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path, depth=0):
    if depth > 10:
        raise ConfigError(f"{path}: _BASE_ chain too deep")
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    base = cfg.pop("_BASE_", None)
    if base:
        cfg = _merge(_read(os.path.join(os.path.dirname(path), base), depth + 1), cfg)
    return cfg


def load_config(path, *, base_defaults=None, extra_defaults=None):
    d = {}
    for src in (base_defaults, extra_defaults):
        if src:
            d = _merge(d, _read(src) if isinstance(src, (str, os.PathLike)) else src)
    return _merge(d, _read(path))


@dataclass
class Checkpoint:
    state_dict: dict
    meta: dict = field(default_factory=dict)
    format: str = "torch"
    sha256: str = ""


def load_checkpoint(path):
    import torch

    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("model", "state_dict"):
        if isinstance(obj, dict) and k in obj:
            meta = obj.get("meta", {})
            return Checkpoint(obj[k], meta, "torch", sha)
    return Checkpoint(obj, {}, "torch", sha)


@dataclass
class LoadReport:
    missing: list
    unexpected: list


def load_into_module(module, sd):
    import torch

    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    for k in own:
        if k in sd:
            v = torch.as_tensor(sd[k])
            if v.shape != own[k].shape:
                raise CheckpointError(f"{k}: checkpoint shape {tuple(v.shape)} != model {tuple(own[k].shape)}")
            own[k].copy_(v)
    return LoadReport(missing, unexpected)
