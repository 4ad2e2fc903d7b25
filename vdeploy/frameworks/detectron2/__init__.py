"""detectron2 configs as a model source: GeneralizedRCNN (Faster/Mask/Keypoint R-CNN, cascade),
RetinaNet, PanopticFPN, SemanticSegmentor and ProposalNetwork.

A YAML file is claimed when its `_BASE_` chain (as written, before defaults) is a detectron2 config:
a MODEL section and none of the keys or meta architectures that mark centermask2 or fast-reid
configs (those detectron2-style frameworks are asked first, but the claim stands on its own). Any
other META_ARCHITECTURE is claimed too, so that the build refuses it by name ("... is not
supported") rather than the file being left to no framework.
"""
from __future__ import annotations

from pathlib import Path

from .. import SOURCES, ModelSource

# fast-reid's meta architectures (its configs are detectron2-style YAML too).
FOREIGN_META_ARCHITECTURES = ("Baseline", "MGN", "Distiller")
# MODEL sub-keys that only other detectron2-based frameworks define.
FOREIGN_MODEL_KEYS = ("FCOS", "VOVNET", "MOBILENET", "MASKIOU_ON", "MASKIOU_LOSS_WEIGHT", "HEADS", "LOSSES",
                      "BACKBONE.DEPTH", "BACKBONE.WITH_IBN")
FOREIGN_NAMES = {"PROPOSAL_GENERATOR.NAME": ("FCOS",), "ROI_HEADS.NAME": ("CenterROIHeads",)}


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _claims(spec: str) -> bool:
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return False
    from ...errors import UserError
    from .config import read_with_bases

    try:  # the file and its _BASE_ chain as written: defaults would make any YAML look like one
        raw = read_with_bases(str(path))
    except UserError:  # a YAML file the reader refuses (a _BASE_ outside its tree, a YAML bomb) is claimed
        return True    # last of the YAML frameworks, so that the build reports the reader's precise refusal
    model = raw.get("MODEL") if isinstance(raw, dict) else None
    # detectron2's default META_ARCHITECTURE is GeneralizedRCNN.
    if not isinstance(model, dict) or model.get("META_ARCHITECTURE", "GeneralizedRCNN") in FOREIGN_META_ARCHITECTURES:
        return False
    if any(_dig(model, k) is not None for k in FOREIGN_MODEL_KEYS):
        return False
    return not any(_dig(model, k) in names for k, names in FOREIGN_NAMES.items())


def _build(spec: str, weights=None, **options):
    from .build import build

    return build(spec, weights, **options)


SOURCES.register("detectron2", ModelSource("detectron2", _claims, _build, precedence=90))
