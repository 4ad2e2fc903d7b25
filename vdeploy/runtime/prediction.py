"""The result of one image, whatever the task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Prediction:
    task: str
    image_hw: tuple[int, int]
    # detection / instance segmentation, in original-image pixels
    boxes: Optional[np.ndarray] = None      # N x 4 float32, x1 y1 x2 y2
    scores: Optional[np.ndarray] = None     # N float32
    classes: Optional[np.ndarray] = None    # N int64, 0-based contiguous
    masks: Optional[np.ndarray] = None      # N x H x W bool
    keypoints: Optional[np.ndarray] = None  # N x K x 3 float32 (x, y, score), keypoint detection
    # semantic segmentation
    label_map: Optional[np.ndarray] = None  # H x W int32 class indices
    # panoptic segmentation (with the detections and the semantic label map above)
    panoptic_seg: Optional[np.ndarray] = None  # H x W int32 segment ids, 0 = unlabelled
    segments_info: Optional[list] = None       # per segment: id, isthing, category_id, area[, score]
    # embedding
    features: Optional[np.ndarray] = None   # D float32
    # classification
    probs: Optional[np.ndarray] = None      # K float32
    # depth estimation
    depth_map: Optional[np.ndarray] = None  # H x W float32, metres (the bundle's postprocess.unit)

    def __len__(self) -> int:
        return 0 if self.boxes is None else int(self.boxes.shape[0])
