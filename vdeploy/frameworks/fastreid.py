"""fast-reid YAML configs -> a re-identification DeployableModel (no fast-reid installed).

The config is read once here and turned into keyword arguments; the model code never sees it.
Test-time preprocessing is fast-reid's deployment recipe: BGR -> RGB, `cv2.resize(INTER_CUBIC)`
to `INPUT.SIZE_TEST`, normalisation with PIXEL_MEAN / PIXEL_STD inside the graph.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..errors import CheckpointError, ConfigError
from . import SOURCES, ModelSource

DEFAULTS = Path(__file__).with_name("fastreid_defaults.yaml")
META_ARCHS = ("Baseline", "MGN", "MoCo", "Distiller")  # fast-reid's
BUILT_ARCHS = ("Baseline", "MGN")
BACKBONES = ("build_resnet_backbone", "build_resnest_backbone", "build_vit_backbone")
_HEAD_KEYS = {"NECK_FEAT", "WITH_BNNECK", "POOL_LAYER", "EMBEDDING_DIM"}
_BACKBONE_KEYS = {"LAST_STRIDE", "WITH_IBN", "WITH_NL"}


def _raw_model_sections(path: str) -> list[dict]:
    """MODEL sections of a YAML file and of its `_BASE_` chain (nearest first), without defaults.

    The chain is read by the detectron2 reader, with its limits and its confinement of bases."""
    from .detectron2.config import read_chain

    return [doc["MODEL"] for _, doc in read_chain(path) if isinstance(doc.get("MODEL"), dict)]


def claims(spec: str) -> bool:
    """A YAML file whose MODEL section (or its bases') is fast-reid's: Baseline-style meta-arch
    or keys that only fast-reid has (MODEL.HEADS.NECK_FEAT, MODEL.BACKBONE.LAST_STRIDE, ...)."""
    if not os.path.isfile(spec):
        return False
    try:
        sections = _raw_model_sections(spec)
    except ConfigError:  # not a YAML config, or one whose chain is refused: another reader says why
        return False
    for model in sections:
        if model.get("META_ARCHITECTURE") in META_ARCHS:
            return True
        heads, backbone = model.get("HEADS"), model.get("BACKBONE")
        if isinstance(heads, dict) and _HEAD_KEYS & set(heads):
            return True
        if isinstance(backbone, dict) and _BACKBONE_KEYS & set(backbone):
            return True
    return False


def load_config(path: str) -> dict:
    """The merged config: fast-reid's own defaults (not detectron2's) <- `_BASE_` chain <- file."""
    from .detectron2.config import load_config as load_yaml

    return load_yaml(path, base_defaults=DEFAULTS)


def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"config has no {dotted}")
        node = node[part]
    return node


def model_kwargs(cfg: dict) -> dict:
    """The keyword arguments of `build_reid_model`, validated; ConfigError on what is unsupported."""
    arch = _get(cfg, "MODEL.META_ARCHITECTURE")
    if arch not in BUILT_ARCHS:
        raise ConfigError(f"MODEL.META_ARCHITECTURE {arch!r} is not supported; only {BUILT_ARCHS} are")
    backbone = _get(cfg, "MODEL.BACKBONE.NAME")
    if backbone not in BACKBONES:
        raise ConfigError(f"MODEL.BACKBONE.NAME {backbone!r} is not supported; only {BACKBONES} are")
    if arch == "MGN" and backbone != "build_resnet_backbone":
        # fast-reid's MGN copies stage 4 into ResNet bottlenecks: any other backbone fails there too.
        raise ConfigError(f"MODEL.META_ARCHITECTURE 'MGN' with MODEL.BACKBONE.NAME {backbone!r} is not supported; "
                          "MGN needs 'build_resnet_backbone'")
    head = _get(cfg, "MODEL.HEADS.NAME")
    if head != "EmbeddingHead":
        raise ConfigError(f"MODEL.HEADS.NAME {head!r} is not supported; only 'EmbeddingHead' is")
    depth = str(_get(cfg, "MODEL.BACKBONE.DEPTH"))
    size = _size(cfg, "INPUT.SIZE_TEST")
    vit = {}
    if backbone == "build_vit_backbone":
        depth_n = depth  # 'small' / 'base'
        # The position embedding is sized for the training input; fast-reid refuses any other size.
        if _size(cfg, "INPUT.SIZE_TRAIN") != size:
            raise ConfigError(f"INPUT.SIZE_TEST {size} differs from INPUT.SIZE_TRAIN {_get(cfg, 'INPUT.SIZE_TRAIN')}: "
                              "not supported with 'build_vit_backbone', whose position embedding fixes the size")
        vit = {"stride_size": _size(cfg, "MODEL.BACKBONE.STRIDE_SIZE")}
    else:
        try:
            depth_n = int(depth.rstrip("x"))
        except ValueError:
            raise ConfigError(f"MODEL.BACKBONE.DEPTH {depth!r} is not a ResNet depth like '50x'") from None
    return {
        "arch": arch,
        "backbone": backbone,
        **vit,
        "depth": depth_n,
        "last_stride": int(_get(cfg, "MODEL.BACKBONE.LAST_STRIDE")),
        "norm": _get(cfg, "MODEL.BACKBONE.NORM"),
        "with_ibn": bool(_get(cfg, "MODEL.BACKBONE.WITH_IBN")),
        "with_se": bool(_get(cfg, "MODEL.BACKBONE.WITH_SE")),
        "with_nl": bool(_get(cfg, "MODEL.BACKBONE.WITH_NL")),
        "feat_dim": int(_get(cfg, "MODEL.BACKBONE.FEAT_DIM")),
        "embedding_dim": int(_get(cfg, "MODEL.HEADS.EMBEDDING_DIM")),
        "pool": _get(cfg, "MODEL.HEADS.POOL_LAYER"),
        "with_bnneck": bool(_get(cfg, "MODEL.HEADS.WITH_BNNECK")),
        "head_norm": _get(cfg, "MODEL.HEADS.NORM"),
        "pixel_mean": [float(v) for v in _get(cfg, "MODEL.PIXEL_MEAN")],
        "pixel_std": [float(v) for v in _get(cfg, "MODEL.PIXEL_STD")],
        "size_test": [int(v) for v in size],
    }


def _size(cfg: dict, key: str) -> list[int]:
    size = _get(cfg, key)
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ConfigError(f"{key} must be [height, width], got {size!r}")
    return [int(v) for v in size]


def build_reid_model(*, depth, last_stride, norm, with_ibn, with_se, with_nl, feat_dim, embedding_dim,
                     pool, with_bnneck, head_norm, pixel_mean, pixel_std, arch="Baseline",
                     backbone="build_resnet_backbone", size_test=None, stride_size=(16, 16), **_):
    from ..models.fastreid import EmbeddingHead, ReidBaseline, ResNet
    from ..models.fastreid.mgn import build_mgn
    from ..models.fastreid.resnest import ResNeSt
    from ..models.fastreid.vit import VisionTransformer

    head_kwargs = dict(feat_dim=feat_dim, embedding_dim=embedding_dim, pool=pool, with_bnneck=with_bnneck,
                       norm=head_norm)
    try:
        if arch == "MGN":  # fast-reid's MGN drops the backbone's non-local blocks
            resnet = ResNet(depth, last_stride, norm, with_ibn, with_se, False)
            return build_mgn(resnet, head_kwargs, norm, with_se, pixel_mean, pixel_std).eval()
        if backbone == "build_resnest_backbone":
            net = ResNeSt(depth, last_stride, norm)
        elif backbone == "build_vit_backbone":
            net = VisionTransformer(size_test, depth, stride_size)
        else:
            net = ResNet(depth, last_stride, norm, with_ibn, with_se, with_nl)
        heads = EmbeddingHead(**head_kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return ReidBaseline(net, heads, pixel_mean, pixel_std).eval()


def spec_for(kw: dict, out_dim: int) -> dict:
    h, w = kw["size_test"]
    return {
        "task": "embedding",
        "classes": [],
        "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": "RGB",
                    "shape": ["N", 3, h, w]}],
        "preprocess": {
            "resize": {"type": "fixed", "height": h, "width": w, "interp": "cv2_cubic"},
            "normalize": {"mean": kw["pixel_mean"], "std": kw["pixel_std"], "where": "graph"},
        },
        "postprocess": {"type": "embedding"},
        "outputs": [{"name": "features", "shape": ["N", out_dim],
                     "meaning": "re-ID embedding (BNNeck output), not L2-normalised" if kw.get("arch") != "MGN" else
                     "re-ID embedding: MGN's 8 heads (b1, b2, b3, b21, b22, b31, b32, b33) concatenated, "
                     "not L2-normalised"}],
    }


# Parameters fast-reid keeps for training only: the classifier of the head.
_TRAINING_ONLY = ("heads.weight", "heads.cls_layer.", "pixel_mean", "pixel_std",
                  *(f"{h}.{p}" for h in ("b1_head", "b2_head", "b3_head", "b21_head", "b22_head", "b31_head",
                                         "b32_head", "b33_head") for p in ("weight", "cls_layer.")))  # MGN


def load_weights(model, weights: str) -> dict:
    from .checkpoint import load_checkpoint, load_into_module

    ckpt = load_checkpoint(weights)
    # DataParallel-trained checkpoints prefix every key with "module."
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt.state_dict.items()}
    report = load_into_module(model, sd, ignore=_TRAINING_ONLY)
    if report.missing or report.unexpected:
        key = (report.missing or report.unexpected)[0]
        raise CheckpointError(f"{weights}: does not fit this config: {len(report.missing)} model weights missing, "
                              f"{len(report.unexpected)} checkpoint weights without a place (e.g. {key})")
    return {"weights": str(weights), "weights_sha256": ckpt.sha256}


def build(spec: str, weights: Optional[str] = None, **options):
    from ..models.base import DeployableModel

    from .overrides import apply_opts

    kw = model_kwargs(apply_opts(load_config(spec), options.pop("config_overrides", ()), spec))
    model = build_reid_model(**kw)
    if weights:
        prov = load_weights(model, weights)
    else:
        prov = {"weights": None, "note": "random initialisation"}
    prov = {"source": str(spec), "framework": "fastreid", **prov}
    return DeployableModel(model, spec_for(kw, model.out_dim), prov, batchable=True)


SOURCES.register("fastreid", ModelSource("fastreid", claims, build, precedence=10))
