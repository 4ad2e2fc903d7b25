"""Turn a DeployableModel's spec into deploy.json metadata for a fixed or dynamic export."""
from __future__ import annotations

import copy
from typing import Optional


from ..models.base import DeployableModel
from ..bundle import Bundle
from ..bundle.parse import parse_contract
from ..runtime.synthetic import synthetic_image  # noqa: F401  (re-exported for the exporters)

IMAGE_MEANING = ("the resized image in `color` order, pixel values 0..255 times `scale` (no other scaling), "
                 "pasted top-left and padded bottom/right with preprocess.pad.value")
IM_INFO_MEANING = "valid (height, width) of the resized image inside the padded tensor, float32 [[h, w]]"


def bundle_meta(dm: DeployableModel, input_size: Optional[tuple[int, int]]) -> dict:
    meta = copy.deepcopy(dm.spec)
    meta["input_size"] = list(input_size) if input_size else None
    meta["batchable"] = bool(dm.batchable)
    meta["provenance"] = dict(dm.provenance)
    meta.setdefault("files", {})
    if input_size:
        h, w = input_size
        for inp in meta["inputs"]:
            shape = inp.get("shape")
            if shape and len(shape) == 4:
                inp["shape"] = [shape[0] if isinstance(shape[0], int) else (shape[0] if dm.batchable else 1), 3, int(h), int(w)]
    state_feeding_numbers(meta)
    return meta


def state_feeding_numbers(meta: dict) -> None:
    """Write into deploy.json every number a hand-written feeder needs, where a builder left it to
    the runtime's defaults: the image's dtype, layout, colour order and scale, the resize
    interpolation, where normalisation happens, the pad divisibility and the pad value (the pixel
    mean when normalisation is in the graph: padding with zeros moves detectron2's boxes), and what
    im_info holds. The values are the ones the runtime uses when they are absent (schema.py)."""
    pre = meta.setdefault("preprocess", {})
    rs = pre.setdefault("resize", {"type": "none"})
    if rs.get("type", "none") != "none":
        rs.setdefault("interp", "cv2_linear")
    if pre.get("normalize"):
        pre["normalize"].setdefault("where", "graph")
    pad = pre.setdefault("pad", {})
    pad.setdefault("size_divisibility", 0)
    image = meta["inputs"][0]
    for key, default in (("dtype", "float32"), ("layout", "NCHW"), ("color", "BGR"), ("scale", 1.0),
                         ("meaning", IMAGE_MEANING)):
        image.setdefault(key, default)
    for inp in meta["inputs"][1:]:
        if inp["name"] == "im_info":
            inp.setdefault("meaning", IM_INFO_MEANING)
    # the typed contract derives the pad value one way, for this and for older bundles alike
    contract = parse_contract(meta, where=f"{meta.get('provenance', {}).get('source', 'model')} spec", sealed=False)
    pad.setdefault("value", [float(v) for v in contract.preprocess.pad_value])


def in_memory_bundle(dm: DeployableModel, input_size=None) -> Bundle:
    """A Bundle object with no files, to run the eager model through the runtime's pipeline."""
    from pathlib import Path

    return Bundle(Path(dm.provenance.get("source", "model")), bundle_meta(dm, input_size))
