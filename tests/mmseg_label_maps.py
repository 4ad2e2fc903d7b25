"""The label-map comparison the mmseg reference tests share: runtime preprocessing -> the native
torch graph -> mmseg's host postprocess (bilinear to the original size, argmax), against the
label map of the real mmseg's `inference_model` stored with the reference case."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def label_map_agreement(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(pixel agreement, mIoU over the reference's classes) of two label maps."""
    ious = [((got == c) & (ref == c)).sum() / ((got == c) | (ref == c)).sum() for c in np.unique(ref)]
    return float((got == ref).mean()), float(np.mean(ious))


def check_label_map(model, spec: dict, image: Path, reference: Path) -> None:
    """Pixel agreement >= 0.999, mIoU >= 0.99 and per-class mean logits within 1e-3 of mmseg's."""
    import torch

    from vdeploy.runtime.preprocess import preprocess

    im = cv2.imread(str(image))
    prep = preprocess(im, spec)
    with torch.no_grad():
        logits, = model(torch.from_numpy(prep.inputs["images"]))
        full = torch.nn.functional.interpolate(logits, size=im.shape[:2], mode="bilinear",
                                               align_corners=spec["postprocess"]["align_corners"])[0]
    ref = np.load(reference)
    agree, miou = label_map_agreement(full.argmax(0).numpy(), ref["label_map"])
    assert agree >= 0.999 and miou >= 0.99, (agree, miou)
    np.testing.assert_allclose(full.mean(dim=(1, 2)).numpy(), ref["seg_logits_mean_c"], rtol=1e-3, atol=1e-3)
