"""Tiny models of the synthetic shapes (vdeploy.eval.synthetic), trained in a minute or
two on a CPU by scripts/train_tiny.py, so that evaluation parity is measured on models that
really detect, segment and classify something.

- `shapes_det`: an instance-segmentation model in the CenterNet style (class heatmaps, box
  size and centre offset, one foreground-mask map). It was chosen over a small Mask R-CNN
  because a dense, anchor-free head converges on a CPU within the training budget, and its
  decoding (peak picking, top-k, RoIAlign of the mask map) exports to ONNX and OpenVINO as
  plain operators. Outputs follow the `detection` postprocessing contract.
- `shapes_seg`: a fully convolutional segmenter (background + 3 shapes), any input size.
- `shapes_cls`: a small CNN classifier (3 shapes), 64x64 input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align  # imported here: its first import cannot happen while tracing

from ..errors import CheckpointError, UserError
from .base import DeployableModel

SHAPES = ["circle", "square", "triangle"]
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny"
NORM = {"mean": [127.5, 127.5, 127.5], "std": [64.0, 64.0, 64.0], "where": "graph"}
DET_SIZE, DET_STRIDE, DET_TOPK = 96, 4, 20
BGR_INPUT = {"name": "images", "dtype": "float32", "layout": "NCHW", "color": "BGR"}


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(NORM["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(NORM["std"]).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def _trunk(width: int) -> nn.Sequential:
    """Stride-4 features with a receptive field wide enough for a 48-pixel shape."""
    return nn.Sequential(_conv(3, 16, 2), _conv(16, width, 2), _conv(width, width), _conv(width, width, dilation=2),
                         _conv(width, width, dilation=4))


class ShapesDetector(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 48):
        super().__init__()
        self.norm = _Normalize()
        self.trunk = _trunk(width)
        self.heat = nn.Conv2d(width, num_classes, 1)
        self.box = nn.Conv2d(width, 4, 1)   # centre offset (2, in cells), log size (2, in pixels)
        self.mask = nn.Conv2d(width, 1, 1)  # foreground logits; instances never overlap here
        nn.init.constant_(self.heat.bias, -2.2)

    def heads(self, images: torch.Tensor):
        f = self.trunk(self.norm(images))
        return self.heat(f), self.box(f), self.mask(f)

    def forward(self, images: torch.Tensor):
        heat, box, mask = self.heads(images)
        c, h, w = heat.shape[1:]
        hm = torch.sigmoid(heat[0])
        peaks = hm * (F.max_pool2d(hm[None], 3, 1, 1)[0] == hm).float()
        scores, idx = peaks.reshape(-1).topk(DET_TOPK)
        classes = torch.div(idx, h * w, rounding_mode="floor")
        cell = idx - classes * (h * w)
        ys = torch.div(cell, w, rounding_mode="floor")
        xs = cell - ys * w
        b = box[0].reshape(4, -1)[:, cell]
        cx = (xs.float() + 0.5 + b[0]) * DET_STRIDE
        cy = (ys.float() + 0.5 + b[1]) * DET_STRIDE
        bw, bh = torch.exp(b[2].clamp(max=6.0)), torch.exp(b[3].clamp(max=6.0))
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        full = F.interpolate(mask, scale_factor=float(DET_STRIDE), mode="bilinear", align_corners=False)
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        mask_probs = torch.sigmoid(roi_align(full, rois, (28, 28), 1.0, 2, True))[:, 0]
        return boxes, scores, classes, mask_probs


class ShapesSegmenter(nn.Module):
    def __init__(self, num_classes: int = 4, width: int = 32):
        super().__init__()
        self.norm = _Normalize()
        self.trunk = _trunk(width)
        self.fine = _conv(3, 8)
        self.classifier = nn.Conv2d(width + 8, num_classes, 3, padding=1)

    def forward(self, images: torch.Tensor):
        x = self.norm(images)
        f = F.interpolate(self.trunk(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([f, self.fine(x)], dim=1))


class ShapesClassifier(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 32):
        super().__init__()
        self.norm = _Normalize()
        self.trunk = _trunk(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor):
        return self.fc(self.trunk(self.norm(images)).mean(dim=(2, 3)))


def _spec_det() -> dict:
    return {
        "task": "instance_segmentation", "classes": list(SHAPES),
        "inputs": [dict(BGR_INPUT, shape=[1, 3, DET_SIZE, DET_SIZE])],
        "preprocess": {"resize": {"type": "fixed", "height": DET_SIZE, "width": DET_SIZE, "interp": "cv2_linear"},
                       "pad": {}, "normalize": NORM},
        "postprocess": {"type": "detection", "paste": "detectron2", "mask_threshold": 0.5, "clip": True,
                        "drop_empty": True, "score_threshold": 0.05, "max_detections": DET_TOPK},
        "outputs": [{"name": "boxes", "shape": [DET_TOPK, 4], "meaning": "x1,y1,x2,y2 in resized-image pixels"},
                    {"name": "scores", "shape": [DET_TOPK]},
                    {"name": "classes", "shape": [DET_TOPK], "meaning": "0-based class index"},
                    {"name": "mask_probs", "shape": [DET_TOPK, 28, 28], "meaning": "mask probabilities in the box"}],
    }


def _spec_seg() -> dict:
    return {
        "task": "semantic_segmentation", "classes": ["background"] + SHAPES,
        "inputs": [dict(BGR_INPUT, shape=[1, 3, "height", "width"])],
        "preprocess": {"resize": {"type": "none"}, "pad": {"size_divisibility": 4}, "normalize": NORM},
        "postprocess": {"type": "semantic_segmentation", "align_corners": False},
        "outputs": [{"name": "logits", "shape": [1, 4, "height", "width"], "meaning": "class scores at input size"}],
    }


def _spec_cls() -> dict:
    return {
        "task": "classification", "classes": list(SHAPES),
        "inputs": [dict(BGR_INPUT, shape=["batch", 3, 64, 64])],
        "preprocess": {"resize": {"type": "fixed", "height": 64, "width": 64, "interp": "cv2_linear"},
                       "pad": {}, "normalize": NORM},
        "postprocess": {"type": "classification"},
        "outputs": [{"name": "logits", "shape": ["batch", 3]}],
    }


# name -> (module factory, spec factory, batchable, fixed input size)
TINY_MODELS = {
    "shapes_det": (ShapesDetector, _spec_det, False, (DET_SIZE, DET_SIZE)),
    "shapes_seg": (ShapesSegmenter, _spec_seg, False, None),
    "shapes_cls": (ShapesClassifier, _spec_cls, True, (64, 64)),
}


def default_weights(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_state(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("model", state) if isinstance(state, dict) else state
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such weights file") from None
    except Exception as e:  # a corrupt file of either kind
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None


def build_tiny(name: str, weights: Optional[str] = None, **_) -> DeployableModel:
    if name not in TINY_MODELS:
        raise UserError(f"no tiny model {name!r}; choose from: {', '.join(TINY_MODELS)}")
    make_module, make_spec, batchable, size = TINY_MODELS[name]
    path = Path(weights) if weights else default_weights(name)
    if not path.is_file() and not weights:
        raise UserError(f"{path}: the tiny model's weights are missing; regenerate them with "
                        f"`python scripts/train_tiny.py {name}`")
    module = make_module()
    try:
        module.load_state_dict(load_state(path))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit tiny:{name} ({str(e).splitlines()[0]})") from None
    prov = {"source": f"tiny:{name}", "framework": "tiny", "weights": str(weights) if weights else None}
    return DeployableModel(module.eval(), make_spec(), prov, batchable=batchable, input_size=size)
