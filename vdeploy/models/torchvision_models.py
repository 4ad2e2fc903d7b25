"""torchvision models by name, wrapped into export-friendly DeployableModels.

Detection graphs keep torchvision's own resize, RoIAlign and NMS inside; Mask R-CNN stops at the
28x28 mask probabilities so that masks are pasted on the host, not in the graph.
"""
from __future__ import annotations

from typing import Optional

import torch
import torchvision
from torch import nn

from ..errors import UserError
from .base import DeployableModel

IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
GRAPH_NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "where": "graph"}


class Normalized(nn.Module):
    """(x - mean) / std in the graph, then the wrapped model; returns a tuple."""

    def __init__(self, model: nn.Module, mean, std, key: Optional[str] = None):
        super().__init__()
        self.model = model
        self.key = key
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        out = self.model((images - self.mean) / self.std)
        return (out[self.key],) if self.key is not None else (out,)


class TorchvisionDetector(nn.Module):
    """One RGB image, 0-255, [1, 3, H, W] -> boxes (original pixels), scores, 0-based classes,
    and for Mask R-CNN the per-detection 28x28 mask probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.has_masks = getattr(getattr(model, "roi_heads", None), "mask_roi_pool", None) is not None

    def forward(self, images: torch.Tensor):
        from torchvision.models.detection.transform import resize_boxes

        x = images[0] / 255.0
        original = (x.shape[-2], x.shape[-1])
        if not hasattr(self.model, "roi_heads"):  # single-stage: torchvision's own forward
            d = self.model([x])[0]
            return d["boxes"], d["scores"], d["labels"] - 1
        image_list, _ = self.model.transform([x])
        features = self.model.backbone(image_list.tensors)
        proposals, _ = self.model.rpn(image_list, features)
        dets, _ = self.model.roi_heads(features, proposals, image_list.image_sizes)
        d = dets[0]
        boxes = resize_boxes(d["boxes"], image_list.image_sizes[0], original)
        if self.has_masks:
            return boxes, d["scores"], d["labels"] - 1, d["masks"][:, 0]
        return boxes, d["scores"], d["labels"] - 1


def _categories(name: str) -> list[str]:
    try:
        return list(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])
    except (ValueError, KeyError, AttributeError):
        return []


def _load_weights(model: nn.Module, weights: Optional[str]) -> dict:
    if not weights:
        return {"weights": None, "note": "random initialisation"}
    from ..frameworks.checkpoint import load_checkpoint, load_into_module

    ckpt = load_checkpoint(weights)
    report = load_into_module(model, ckpt.state_dict)
    if report.missing:
        raise UserError(f"{weights}: {len(report.missing)} weights of the model are missing, e.g. {report.missing[0]}")
    return {"weights": str(weights), "weights_sha256": ckpt.sha256}


def build_torchvision(name: str, weights: Optional[str] = None, *, input_size=None, num_classes=None, **_) -> DeployableModel:
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise UserError(f"torchvision has no model {name!r}") from None
    detection = set(torchvision.models.list_models(module=torchvision.models.detection))
    segmentation = set(torchvision.models.list_models(module=torchvision.models.segmentation))
    kwargs = {"weights": None}
    if name in detection or name in segmentation:
        kwargs["weights_backbone"] = None
    if num_classes:
        kwargs["num_classes"] = num_classes
    torch.manual_seed(0)
    model = builder(**kwargs).eval()
    prov = {"source": f"torchvision:{name}", "framework": "torchvision", **_load_weights(model, weights)}
    categories = _categories(name)
    rgb = {"name": "images", "dtype": "float32", "layout": "NCHW", "color": "RGB"}
    if name in detection:
        classes = categories[1:] if categories else [f"class_{i}" for i in range((num_classes or 91) - 1)]
        module = TorchvisionDetector(model)
        outputs = [{"name": "boxes", "shape": ["N", 4], "meaning": "x1,y1,x2,y2 in pixels of the image fed to the graph"},
                   {"name": "scores", "shape": ["N"]},
                   {"name": "classes", "shape": ["N"], "meaning": "0-based class index"}]
        if module.has_masks:
            outputs.append({"name": "mask_probs", "shape": ["N", 28, 28], "meaning": "mask probabilities inside the box"})
        spec = {
            "task": "instance_segmentation" if module.has_masks else "detection",
            "classes": classes,
            "inputs": [dict(rgb, shape=[1, 3, "height", "width"])],
            # torchvision resizes inside the graph (GeneralizedRCNNTransform) and maps boxes back.
            "preprocess": {"resize": {"type": "none"}, "pad": {}, "normalize": GRAPH_NORM},
            "postprocess": {"type": "detection", "paste": "torchvision", "mask_threshold": 0.5, "clip": True,
                            "drop_empty": True, "score_threshold": 0.0, "max_detections": 100},
            "outputs": outputs,
        }
        return DeployableModel(module, spec, prov, batchable=False)
    if name in segmentation:
        module = Normalized(model, IMAGENET_MEAN, IMAGENET_STD, key="out")
        spec = {
            "task": "semantic_segmentation",
            "classes": categories or [f"class_{i}" for i in range(num_classes or 21)],
            "inputs": [dict(rgb, shape=[1, 3, "height", "width"])],
            "preprocess": {"resize": {"type": "shortest_edge", "min_size": 520, "max_size": 100000, "interp": "pil_bilinear"},
                           "pad": {}, "normalize": GRAPH_NORM},
            "postprocess": {"type": "semantic_segmentation", "align_corners": False},
            "outputs": [{"name": "logits", "shape": [1, "C", "height", "width"], "meaning": "class scores at input size"}],
        }
        return DeployableModel(module, spec, prov, batchable=False)
    size = list(input_size) if input_size else [224, 224]
    module = Normalized(model, IMAGENET_MEAN, IMAGENET_STD)
    spec = {
        "task": "classification",
        "classes": categories or [f"class_{i}" for i in range(num_classes or 1000)],
        "inputs": [dict(rgb, shape=["batch", 3, size[0], size[1]])],
        "preprocess": {"resize": {"type": "shorter_center_crop", "size": int(size[0] * 256 / 224), "crop": size[0],
                                  "interp": "pil_bilinear"} if size[0] == size[1] else
                       {"type": "fixed", "height": size[0], "width": size[1], "interp": "pil_bilinear"},
                       "pad": {}, "normalize": GRAPH_NORM},
        "postprocess": {"type": "classification"},
        "outputs": [{"name": "logits", "shape": ["batch", "K"]}],
    }
    return DeployableModel(module, spec, prov, batchable=True, input_size=tuple(size))
