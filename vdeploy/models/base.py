"""What the torch side hands to the exporter: a module plus the runtime half of deploy.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

TASKS = ("detection", "instance_segmentation", "keypoints", "panoptic_segmentation", "semantic_segmentation",
         "embedding", "classification", "depth_estimation")


@dataclass
class DeployableModel:
    """A torch module ready for export, with everything the runtime needs to feed and read it.

    `module.forward(*inputs)` takes the tensors named in `spec["inputs"]` (in that order) and
    returns a tuple of tensors in the order of `spec["outputs"]`. It runs in eval mode, float32,
    and must be traceable by the TorchScript-based ONNX exporter.

    `spec` is the model part of deploy.json (see docs/bundle.md): `task`, `classes`, `inputs`,
    `preprocess`, `postprocess`, `outputs`. The runtime does the host-side pre/post-processing
    from it, so the same numbers come out of PyTorch and of every exported backend.
    """

    module: torch.nn.Module
    spec: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    # Some graphs (two-stage detectors) handle one image per call; others take any batch.
    batchable: bool = False
    # A graph that only works at one size (classification, re-ID) names it; None = any size.
    input_size: Optional[tuple[int, int]] = None
    # Why a graph traced at one size would be wrong at others (sizes fixed at trace time in the
    # model's code); export then needs a fixed input size. None: any size exports.
    dynamic_export_refused: Optional[str] = None
    # Work an export does before tracing: constants the graph holds that the module computes on
    # first use (SAN's text embeddings), so that the trace records the values, not how they are made.
    before_trace: Optional[Callable[[], Any]] = None

    def __post_init__(self):
        task = self.spec.get("task")
        if task not in TASKS:
            raise ValueError(f"spec task {task!r} is not one of {TASKS}")
        self.module.eval()
