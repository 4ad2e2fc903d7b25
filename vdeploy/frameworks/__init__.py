"""Model sources: turn what a user names on the command line into a DeployableModel.

A source is `torchvision:NAME` or a framework config file. Each framework registers one
`ModelSource` here; which one reads a file is decided from the file's content, never from
its name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import UserError
from ..registry import Registry, import_all


@dataclass(frozen=True)
class ModelSource:
    name: str
    # claims(spec) -> True when this framework reads that spec (a path or `prefix:name`).
    claims: Callable[[str], bool]
    # build(spec, weights, **options) -> DeployableModel
    build: Callable[..., "object"]
    # Sources are asked in this order, lowest first: a framework built on another's config format
    # (centermask2 and fast-reid read detectron2-style YAML) must claim its files before that one.
    precedence: int = 50
    # False for sources named `prefix:NAME` rather than read from a config file (no --opts for them)
    reads_config: bool = True


SOURCES: Registry[ModelSource] = Registry("model source")

# One line per framework; each module calls SOURCES.register(...) at import.
_MODULES = (
    "vdeploy.frameworks.torchvision_source",
    "vdeploy.frameworks.detectron2",
    "vdeploy.frameworks.detectron2.lazy_source",
    "vdeploy.frameworks.centermask2",
    "vdeploy.frameworks.fastreid",
    "vdeploy.frameworks.mmseg",
    "vdeploy.frameworks.tiny_source",
)


def _load_all() -> None:
    import_all(_MODULES)


def resolve(spec: str) -> ModelSource:
    _load_all()
    for _, src in sorted(SOURCES.items(), key=lambda item: (item[1].precedence, item[0])):
        if src.claims(spec):
            return src
    raise UserError(f"cannot tell which framework {spec!r} belongs to: expected torchvision:NAME, "
                    "a detectron2/centermask2/fast-reid YAML config, a detectron2 LazyConfig .py or an MMSegmentation .py config")


def build_model(spec: str, weights: Optional[str] = None, **options):
    """Build the DeployableModel named by `spec` (config path or `torchvision:NAME`).

    Construction runs under a fixed seed: a model built without weights (for trying things) is the
    same model every time, so that the torch backend rebuilt from a bundle's provenance is the
    model that was exported.
    """
    import torch

    source = resolve(spec)
    if options.get("config_overrides") and not source.reads_config:
        raise UserError(f"{spec}: --opts / --cfg-options change a config file; {source.name} models have none")
    options = {k: v for k, v in options.items() if v or k != "config_overrides"}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dm = source.build(spec, weights, **options)
    if options.get("config_overrides"):  # `vdeploy verify` rebuilds the model with them
        dm.provenance["config_overrides"] = [list(pair) for pair in options["config_overrides"]]
    # Absolute paths: `vdeploy verify` rebuilds this model from a bundle's provenance, from any folder.
    for key in ("source", "weights"):
        value = dm.provenance.get(key)
        if isinstance(value, str) and Path(value).exists():
            dm.provenance[key] = str(Path(value).resolve())
    return dm
