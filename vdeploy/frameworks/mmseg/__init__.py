"""MMSegmentation 1.x configs (Python files read as data) and checkpoints."""
from __future__ import annotations

import ast
import os
from typing import Optional

from ...errors import ConfigError
from .. import SOURCES, ModelSource
from .config import load_config

_MAX_BYTES = 1 << 20


def claims(spec: str) -> bool:
    """A Python file assigning `model` or `_base_` whose merged config has `model.decode_head`.

    A file that looks like an mmseg config but is refused by the reader (an `import`, a call)
    is still claimed, so that the user sees the reader's precise refusal."""
    try:
        if not os.path.isfile(spec) or os.path.getsize(spec) > _MAX_BYTES:
            return False
        with open(spec, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return False  # not a config this reader could parse (the refusal comes from whoever claims it)
    names = {t.id for s in tree.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)}
    if not names & {"model", "_base_"}:
        return False
    try:
        model = load_config(spec).get("model")
    except ConfigError:  # the model is often only in the bases (HRNet, OCRNet): `_base_` says mmseg too
        return "decode_head" in text or "_base_" in names
    return isinstance(model, dict) and "decode_head" in model


def build(spec: str, weights: Optional[str] = None, **options):
    from ...models.base import DeployableModel
    from .build import build_segmentor, dataset_classes, load_weights, model_kwargs, spec_for

    from ..overrides import apply_cfg_options

    kw = model_kwargs(apply_cfg_options(load_config(spec), options.pop("config_overrides", ()), spec))
    model = build_segmentor(kw)
    classes = None
    prov = {"source": str(spec), "framework": "mmseg"}
    depth = kw.get("type") == "DepthEstimator"
    if weights:
        from .vpd_args import UNUSED_CHECKPOINT_PARTS

        ckpt, classes = load_weights(model, weights, UNUSED_CHECKPOINT_PARTS if depth else ())
        prov.update(weights=str(weights), weights_sha256=ckpt.sha256)
    else:
        prov.update(weights=None, note="random initialisation")
    if depth:  # VPD: a depth map, no classes (the checkpoint's are the scene types of its class embeddings)
        return DeployableModel(model, spec_for(kw, []), prov, batchable=False)
    num_classes = kw["head"]["num_classes"]
    if classes is not None and len(classes) != num_classes:
        raise ConfigError(f"checkpoint lists {len(classes)} classes but the decode head has {num_classes}")
    before_trace = None
    if "text" in kw:
        # SAN: the class names' text embeddings are computed on first use (tens of seconds), and
        # before an export traces the graph, which then holds them as a constant
        before_trace = model.text_encoder.class_embeddings
        classes = classes or kw["text"]["classes"]
    classes = classes or dataset_classes(kw["dataset"], num_classes)
    return DeployableModel(model, spec_for(kw, classes), prov, batchable=False, before_trace=before_trace)


SOURCES.register("mmseg", ModelSource("mmseg", claims, build))
