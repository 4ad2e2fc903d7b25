"""Fixed-size (letterbox) inputs that still give detectron2's detections."""
from __future__ import annotations

import torch
from torch import nn


class LetterboxCrop(nn.Module):
    """Run a detector on a fixed H x W canvas as detectron2 would run it on the image alone.

    The host pastes the resized image top-left into the canvas (docs/bundle.md, letterbox). The
    extra padding would otherwise produce features, anchors and proposals that detectron2 never
    sees, and those crowd real proposals out of the RPN's top-k. So the canvas is first cut down
    to the resized image padded to the backbone's size divisibility, which is exactly the tensor
    detectron2's ImageList builds; the cut is computed from `im_info`, in the graph.
    """

    def __init__(self, detector: nn.Module, size_divisibility: int):
        super().__init__()
        self.detector = detector
        self.size_divisibility = max(int(size_divisibility), 1)

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        d = float(self.size_divisibility)
        padded = (torch.ceil(im_info[0] / d) * d).to(torch.int64)
        # index_select with a computed range stays dynamic in an exported graph (a Python slice
        # bound would be frozen to the example's size when traced)
        rows = torch.arange(padded[0], device=images.device)
        cols = torch.arange(padded[1], device=images.device)
        images = images.index_select(2, rows).index_select(3, cols)
        return self.detector(images, im_info)
