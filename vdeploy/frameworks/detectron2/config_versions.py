"""Config format versions and detectron2 releases: upgrading VERSION-1 files, migrating between releases.

`vdeploy config migrate` uses `migrate_config`; `load_config` uses `guess_config_version` and
`apply_legacy_renames` to read files written before detectron2's config format VERSION 2.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from ...errors import ConfigError

# Renames of config format VERSION 1 (internal detectron2 before its first release) to VERSION 2.
# Source: the renames detectron2's own config/compat.py applies when it upgrades such a file.
LEGACY_RENAMES_V1_TO_V2 = (
    ("MODEL.RPN_HEAD.NAME", "MODEL.RPN.HEAD_NAME"),
    ("MODEL.WEIGHT", "MODEL.WEIGHTS"),
    ("MODEL.PANOPTIC_FPN.SEMANTIC_LOSS_SCALE", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT"),
    ("MODEL.PANOPTIC_FPN.RPN_LOSS_SCALE", "MODEL.RPN.LOSS_WEIGHT"),
    ("MODEL.PANOPTIC_FPN.INSTANCE_LOSS_SCALE", "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT"),
    ("MODEL.PANOPTIC_FPN.COMBINE_ON", "MODEL.PANOPTIC_FPN.COMBINE.ENABLED"),
    ("MODEL.PANOPTIC_FPN.COMBINE_OVERLAP_THRESHOLD", "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH"),
    ("MODEL.PANOPTIC_FPN.COMBINE_STUFF_AREA_LIMIT", "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT"),
    ("MODEL.PANOPTIC_FPN.COMBINE_INSTANCES_CONFIDENCE_THRESHOLD",
     "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH"),
    ("MODEL.ROI_HEADS.SCORE_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
    ("MODEL.ROI_HEADS.NMS", "MODEL.ROI_HEADS.NMS_THRESH_TEST"),
    ("MODEL.RETINANET.INFERENCE_SCORE_THRESHOLD", "MODEL.RETINANET.SCORE_THRESH_TEST"),
    ("MODEL.RETINANET.INFERENCE_TOPK_CANDIDATES", "MODEL.RETINANET.TOPK_CANDIDATES_TEST"),
    ("MODEL.RETINANET.INFERENCE_NMS_THRESHOLD", "MODEL.RETINANET.NMS_THRESH_TEST"),
    ("TEST.DETECTIONS_PER_IMG", "TEST.DETECTIONS_PER_IMAGE"),
    ("TEST.AUG_ON", "TEST.AUG.ENABLED"),
    ("TEST.AUG_MIN_SIZES", "TEST.AUG.MIN_SIZES"),
    ("TEST.AUG_MAX_SIZE", "TEST.AUG.MAX_SIZE"),
    ("TEST.AUG_FLIP", "TEST.AUG.FLIP"),
)
# Anchors moved from MODEL.RPN / MODEL.RETINANET (whichever the architecture used) to one generator.
LEGACY_ANCHOR_KEYS = (("ANCHOR_SIZES", "SIZES"), ("ANCHOR_ASPECT_RATIOS", "ASPECT_RATIOS"))

# Released detectron2 versions, oldest first; "latest" is the main branch the goldens were made with.
RELEASES = ("v0.1", "v0.1.1", "v0.2", "v0.3", "v0.4", "v0.5", "v0.6", "latest")
# Keys of `defaults.yaml` that the given release added (absent from every older one). Source: the
# history of detectron2's config/defaults.py as recalled by the author, not generated from tagged
# files; the placement of a key within one release step may be off. Verify against the release's
# defaults.py before relying on it for an exact version. Keys not listed exist since v0.1.
KEYS_ADDED_IN = {
    "v0.1.1": ("MODEL.ANCHOR_GENERATOR.OFFSET", "SOLVER.CLIP_GRADIENTS", "VIS_PERIOD"),
    "v0.2": ("INPUT.RANDOM_FLIP", "SOLVER.AMP"),
    "v0.3": ("MODEL.RPN.BBOX_REG_LOSS_TYPE", "MODEL.RPN.BBOX_REG_LOSS_WEIGHT",
             "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT",
             "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "SOLVER.REFERENCE_WORLD_SIZE", "SOLVER.NESTEROV"),
    "v0.4": ("MODEL.RPN.CONV_DIMS", "MODEL.RETINANET.NORM"),
    "v0.5": ("SOLVER.BASE_LR_END",),
    "v0.6": ("SOLVER.NUM_DECAYS", "SOLVER.RESCALE_INTERVAL", "MODEL.ROI_BOX_HEAD.USE_FED_LOSS",
             "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER",
             "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES"),
    "latest": ("DATALOADER.REPEAT_SQRT", "FLOAT32_PRECISION"),
}


def _pop(cfg: dict, dotted: str, prune: bool = True) -> tuple[bool, Any]:
    parts = dotted.split(".")
    node, parents = cfg, []
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False, None
        parents.append((node, part))
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return False, None
    value = node.pop(parts[-1])
    while prune and parents and not node:  # drop sections the pop left empty
        parent, key = parents.pop()
        parent.pop(key)
        node = parent
    return True, value


def _set(cfg: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _get(cfg: dict, dotted: str, missing: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def guess_config_version(data: dict) -> Optional[int]:
    """The config format VERSION of a (partial) config; files without one that use VERSION 1 names
    are VERSION 1, others are taken as current (None), as detectron2 guesses."""
    version = data.get("VERSION")
    if isinstance(version, int) and not isinstance(version, bool):
        return version
    if version is not None:
        raise ConfigError(f"VERSION must be an integer, got {type(version).__name__}")
    if _get(data, "MODEL.WEIGHT", missing=...) is not ... or _get(data, "TEST.AUG_ON", missing=...) is not ...:
        return 1
    return None


def apply_legacy_renames(data: dict, version: int, current: int) -> list[str]:
    """Rename VERSION-1 keys of a partial config in place; returns one line per renamed key."""
    if current != 2 or version != 1:
        raise ConfigError(f"cannot upgrade config VERSION {version} to {current}")
    lines = []
    for old, new in LEGACY_RENAMES_V1_TO_V2:
        found, value = _pop(data, old)
        if found:
            _set(data, new, value)
            lines.append(f"renamed {old} -> {new} (config VERSION 1 -> 2)")
    used = "RETINANET" if _get(data, "MODEL.META_ARCHITECTURE") == "RetinaNet" else "RPN"
    for section in ("RPN", "RETINANET"):
        for old_name, new_name in LEGACY_ANCHOR_KEYS:
            old = f"MODEL.{section}.{old_name}"
            found, value = _pop(data, old)
            if found and section == used:
                _set(data, f"MODEL.ANCHOR_GENERATOR.{new_name}", value)
                lines.append(f"renamed {old} -> MODEL.ANCHOR_GENERATOR.{new_name} (config VERSION 1 -> 2)")
            elif found:
                lines.append(f"dropped {old} (a {section} setting this architecture does not use)")
    if _pop(data, "MODEL.RETINANET.ANCHOR_STRIDES")[0]:
        lines.append("dropped MODEL.RETINANET.ANCHOR_STRIDES (unused; removed in config VERSION 2)")
    return lines


def _release_index(version: str) -> int:
    name = version if version.startswith("v") or version == "latest" else f"v{version}"
    if name not in RELEASES:
        raise ConfigError(f"unknown detectron2 release {version!r}; known: {', '.join(RELEASES)}")
    return RELEASES.index(name)


def migrate_config(cfg: dict, to_version: str, *, from_version: str = "latest",
                   defaults: Optional[dict] = None) -> tuple[dict, list[str]]:
    """`cfg` (a full merged config) rewritten for detectron2 release `to_version`.

    Going back drops the keys newer releases added; where the config's value differs from the
    default (which reproduces the old behaviour) the report says that the older release cannot
    express it. Going forward from `from_version` adds the new keys with their defaults.
    Returns the new config and one report line per dropped, renamed or added key.
    """
    from .config import is_training_only, load_defaults  # config.py imports this module

    defaults = load_defaults() if defaults is None else defaults
    src, dst = _release_index(from_version), _release_index(to_version)
    out, lines = copy.deepcopy(cfg), []
    for release in RELEASES[min(src, dst) + 1:max(src, dst) + 1]:
        for key in KEYS_ADDED_IN.get(release, ()):
            default = _get(defaults, key)
            if dst < src:
                found, value = _pop(out, key)
                if not found:
                    continue
                if value == default or is_training_only(key):
                    lines.append(f"dropped {key} (added in {release}; value {value!r})")
                else:
                    lines.append(f"dropped {key} = {value!r} (added in {release}): releases before it always "
                                 f"behave as {default!r}, so the model they build will differ")
            elif _get(out, key, missing=...) is ...:
                _set(out, key, copy.deepcopy(default))
                lines.append(f"added {key} = {default!r} (new in {release})")
    return out, lines
