"""The served tensor contract (docs/serving.md): Predictions -> named output tensors and JSON.
What each task serves lives in its module (vdeploy.runtime.tasks); this is the one entry point.

Every served bundle takes one input, `image`: BYTES [B], each element an encoded image file.
Outputs by task (N: detections over the whole request, B: images in the request):

  detection              boxes FP32 [N,4] (x1,y1,x2,y2, original-image pixels), scores FP32 [N],
                         classes INT32 [N] (0-based), image_index INT32 [N] (which input image)
  instance_segmentation  the above + masks BYTES [N] (COCO RLE as JSON)
  keypoints              detection's + keypoints FP32 [N,K,3] (x, y, score in original-image pixels)
  semantic_segmentation  label_map BYTES [B] (PNG, 8- or 16-bit class indices)
  panoptic_segmentation  panoptic_seg INT32 [B,H,W] (segment ids), segments_info BYTES [B] (JSON lists)
  embedding              embedding FP32 [B,D]
  classification         probs FP32 [B,K]
  depth_estimation       depth_map BYTES [B] (16-bit PNG, millimetres)
"""
from __future__ import annotations

import numpy as np

from ..runtime.prediction import Prediction
from ..runtime.results import encode_label_map
from ..runtime.tasks import TASKS, Tensor, get_task
from ..runtime.tasks.detection import DetectionTask

INPUT_NAME = "image"
# Tasks whose answer concatenates the detections of every image of a request (image_index).
DETECTION_TASKS = tuple(name for name, task in TASKS.items() if isinstance(task, DetectionTask))


def output_types(task: str) -> list[dict]:
    """Model metadata outputs (-1: a dimension that varies per request)."""
    return get_task(task).serve_outputs()


def input_types() -> list[dict]:
    return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]


def to_tensors(task: str, preds: list[Prediction]) -> list[Tensor]:
    """The output tensors of one request, in `output_types(task)` order."""
    return get_task(task).serve_tensors(preds)


def to_json(task: str, pred: Prediction, classes: list[str]) -> dict:
    """The TorchServe-style JSON answer of /predictions/{model} for one image."""
    return get_task(task).serve_json(pred, classes)


def encode_label_map_palette(label_map: np.ndarray, num_classes: int = 0) -> bytes:
    """A label map as a palette PNG: each pixel's index is its class (what PIL's `np.array(Image.open(f))`
    gives back), its colour the class colour of vdeploy's drawings, so the file shows the classes
    when opened. Past 256 classes a palette cannot hold them: 16-bit greyscale, as encode_label_map."""
    import io

    from PIL import Image

    from ..runtime.vis import palette

    top = int(label_map.max(initial=0))
    if top > 255 or int(label_map.min(initial=0)) < 0:
        return encode_label_map(label_map)
    colors = palette(max(num_classes, top + 1))[:256, ::-1]  # vdeploy's colours are BGR, a PNG palette RGB
    im = Image.fromarray(np.ascontiguousarray(label_map, dtype=np.uint8))
    im.putpalette(colors.astype(np.uint8).tobytes())  # an "L" image with a palette becomes "P"
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
