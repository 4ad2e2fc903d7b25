"""Rebuild the demo's stand-in Mask R-CNN checkpoint (no trained weights can be downloaded here).

Each tensor is drawn from a generator seeded by (2026, crc32(key)) and shaped by the key's role,
with the output layers rescaled so that detections look like a trained model's; BatchNorm
statistics come from `standin_bn_stats.npz`. This is the recipe of the project's reference
outputs (../shared/goldens/README.md), so the demo's model is the one conformance is tested on;
the SHA-256 in the manifest guards against any drift.
"""
from __future__ import annotations

import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 2026
# (suffix, multiplier, offset) for output layers; the longest matching suffix applies.
OUTPUT_LAYERS = {
    "cls_score.weight": (0.5, 0.0), "objectness_logits.weight": (0.5, 0.0),
    "head.cls_score.weight": (0.05, 0.0), "head.cls_score.bias": (1.0, -2.0),
    "bbox_pred.weight": (0.05, 0.0), "bbox_pred.bias": (1.0, 0.7),
    "anchor_deltas.weight": (0.05, 0.0), "anchor_deltas.bias": (1.0, 0.7),
    "mask_head.predictor.weight": (10.0, 0.0),
}


def _tensor(key: str, shape) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64([SEED, zlib.crc32(key.encode())]))
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    if key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
        t = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("running_mean") or key.endswith("norm.bias"):
        t = rng.normal(0.0, 0.1, shape)
    elif len(shape) >= 2:
        fan_in = shape[0] * int(np.prod(shape[2:])) if ".deconv." in key else int(np.prod(shape[1:]))
        t = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    else:
        t = rng.normal(0.0, 0.05, shape)
    hits = [s for s in OUTPUT_LAYERS if key.endswith(s)]
    mul, add = OUTPUT_LAYERS[max(hits, key=len)] if hits else (1.0, 0.0)
    return (t * mul + add).astype(np.float32)


def build(out: str) -> None:
    import torch

    manifest = json.loads((HERE / "standin_manifest.json").read_text())
    sd = {k: _tensor(k, s) for k, s in manifest["keys"]}
    h = hashlib.sha256()
    for k, _ in manifest["keys"]:
        h.update(k.encode())
        h.update(np.ascontiguousarray(sd[k]).tobytes())
    if h.hexdigest() != manifest["weights_sha256"]:
        raise SystemExit("stand-in weights differ from the reference recipe (numpy change?)")
    sd.update(dict(np.load(HERE / "standin_bn_stats.npz")))
    torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, out)


if __name__ == "__main__":
    build(sys.argv[1])
