"""Fixed-shape detection outputs for static targets (NPU compilers such as atc and SNPE, static
TensorRT engines), which reject a data-dependent number of detections.

Every per-detection output is padded with zeros to the maximum number of detections K, and a
`num_detections` output (int64 [1]) says how many rows are real. The padding is a Gather with K
fixed indices over [outputs; zeros], so every output shape is static in the graph itself
([K, 4], [K], [K], [K, 28, 28]), not only after shape inference. The runtime reads both forms.
"""
from __future__ import annotations

import copy

import torch

from ..errors import UserError
from ..models.base import DeployableModel

COUNT_OUTPUT = "num_detections"


class StaticDetections(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, k: int):
        super().__init__()
        self.model, self.k = model, k
        self.register_buffer("rows", torch.arange(k), persistent=False)

    def forward(self, *inputs):
        outs = self.model(*inputs)
        padded = [torch.cat([o, o.new_zeros((self.k,) + tuple(o.shape[1:]))]).index_select(0, self.rows) for o in outs]
        # counted from the data, not read from a shape, so that tracing keeps it dynamic
        count = torch.ones_like(outs[0].reshape(outs[0].shape[0], -1)[:, 0], dtype=torch.int64).sum().reshape(1)
        return (*padded, torch.clamp(count, max=self.k))


def with_static_outputs(dm: DeployableModel, k: int | None = None) -> DeployableModel:
    """`dm` with every detection output padded to K rows (default: the model's maximum detections)."""
    if dm.spec["task"] not in ("detection", "instance_segmentation"):
        raise UserError(f"--static-outputs applies to detectors; a {dm.spec['task']} model's outputs have fixed shapes already")
    k = k or dm.spec.get("postprocess", {}).get("max_detections")
    if not k:
        raise UserError("--static-outputs: the model states no maximum number of detections to pad to")
    spec = copy.deepcopy(dm.spec)
    for o in spec["outputs"]:
        o["shape"] = [int(k)] + list(o.get("shape", ["N"]))[1:]
    spec["outputs"].append({"name": COUNT_OUTPUT, "shape": [1], "dtype": "int64",
                            "meaning": "how many leading rows of the other outputs are detections (the rest are zeros)"})
    provenance = dict(dm.provenance, static_outputs=int(k))
    return DeployableModel(StaticDetections(dm.module, int(k)).eval(), spec, provenance, dm.batchable, dm.input_size)
