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

    A canvas of any size works: when a side is not a multiple of the size divisibility (the
    2000x1125 letterbox of a TorchScript recipe), the canvas is first extended in the graph to the
    next multiple with `pad_value`, the pixel mean, which the detector's own normalisation turns
    into the zeros detectron2's ImageList pads with.
    """

    def __init__(self, detector: nn.Module, size_divisibility: int, canvas_hw=None, pad_value=None):
        super().__init__()
        self.detector = detector
        self.size_divisibility = d = max(int(size_divisibility), 1)
        h, w = canvas_hw or (0, 0)
        self.extra = (-(-h // d) * d - h, -(-w // d) * d - w) if canvas_hw else (0, 0)
        self.register_buffer("pad_value", torch.tensor(pad_value or [0.0, 0.0, 0.0], dtype=torch.float32).reshape(1, -1, 1, 1),
                             persistent=False)

    def _extend(self, images: torch.Tensor) -> torch.Tensor:
        eh, ew = self.extra
        n, c, h, w = images.shape
        if eh:
            images = torch.cat([images, self.pad_value.expand(n, c, eh, w)], dim=2)
        if ew:
            images = torch.cat([images, self.pad_value.expand(n, c, h + eh, ew)], dim=3)
        return images

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        images = self._extend(images)
        d = float(self.size_divisibility)
        padded = (torch.ceil(im_info[0] / d) * d).to(torch.int64)
        # index_select with a computed range stays dynamic in an exported graph (a Python slice
        # bound would be frozen to the example's size when traced)
        rows = torch.arange(padded[0], device=images.device)
        cols = torch.arange(padded[1], device=images.device)
        images = images.index_select(2, rows).index_select(3, cols)
        return self.detector(images, im_info)
