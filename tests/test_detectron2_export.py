"""The native Mask R-CNN exports to ONNX with dynamic height/width and runs in onnxruntime.

The graph is traced on one image size and run on another: any shape arithmetic frozen by tracing
(anchor grids, top-k counts, clipping bounds) would show up as different detections. A small
MIN_SIZE_TEST (320) keeps the export and both runs fast.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")
ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

GOLDENS = Path(__file__).resolve().parents[1].parent / "shared" / "goldens"
CASE = GOLDENS / "detectron2" / "mask_rcnn_R_50_FPN_3x"

pytestmark = pytest.mark.skipif(not CASE.is_dir(), reason=f"detectron2 goldens not found at {CASE}")

OUTPUTS = ("boxes", "scores", "classes", "mask_probs")


def _feed(image: str, short: int, spec: dict):
    """Golden image resized to a short side of `short` and padded as the host does."""
    bgr = np.load(CASE / f"{image}.npz")["resized_bgr"]
    h, w = bgr.shape[:2]
    nh, nw = (short, int(w * short / h + 0.5)) if h <= w else (int(h * short / w + 0.5), short)
    bgr = np.asarray(Image.fromarray(bgr).resize((nw, nh), Image.BILINEAR))
    div = spec["preprocess"]["pad"]["size_divisibility"]
    hp, wp = -(-nh // div) * div, -(-nw // div) * div
    images = np.empty((1, 3, hp, wp), np.float32)
    images[:] = np.asarray(spec["preprocess"]["normalize"]["mean"], np.float32)[None, :, None, None]
    images[0, :, :nh, :nw] = bgr.transpose(2, 0, 1)
    return images, np.array([[nh, nw]], np.float32)


@pytest.fixture(scope="module")
def exported(module_tmp):
    from vdeploy.frameworks.detectron2.build import build_from_config

    tmp = module_tmp.mktemp("d2_export")
    ckpt = tmp / "model.pth"
    subprocess.run([sys.executable, str(GOLDENS.parent / "acceptance" / "make_ckpt.py"), str(CASE), str(ckpt)],
                   check=True, capture_output=True)
    cfg = yaml.safe_load((CASE / "config_dump.yaml").read_text())
    cfg["INPUT"]["MIN_SIZE_TEST"] = 320
    dm = build_from_config(cfg, str(ckpt))
    images, im_info = _feed("astronaut", 320, dm.spec)  # traced at 320 x 320
    onnx_path = tmp / "model.onnx"
    dynamic = {"images": {2: "height", 3: "width"}, **{name: {0: "N"} for name in OUTPUTS}}
    with torch.no_grad():
        torch.onnx.export(dm.module, (torch.from_numpy(images), torch.from_numpy(im_info)), str(onnx_path),
                          dynamo=False, opset_version=17, input_names=["images", "im_info"],
                          output_names=list(OUTPUTS), dynamic_axes=dynamic)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dm, session


def test_spec_follows_min_size_override(exported):
    dm, _ = exported
    assert dm.spec["preprocess"]["resize"]["min_size"] == 320
    assert [o["name"] for o in dm.spec["outputs"]] == list(OUTPUTS)
    assert dm.provenance["weights_sha256"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


@pytest.mark.parametrize("image,short", [("chelsea", 320), ("coffee", 352), ("astronaut", 416)])
def test_onnxruntime_matches_pytorch_on_other_sizes(exported, image, short):
    dm, session = exported
    images, im_info = _feed(image, short, dm.spec)
    assert images.shape[2:] != (320, 320)  # a different size than the trace
    with torch.no_grad():
        ref = [t.numpy() for t in dm.module(torch.from_numpy(images), torch.from_numpy(im_info))]
    got = session.run(list(OUTPUTS), {"images": images, "im_info": im_info})
    assert len(ref[0]) > 10, "the stand-in weights should detect objects"
    assert got[2].dtype == np.int64 and got[3].shape[1:] == (28, 28)
    assert abs(len(got[0]) - len(ref[0])) <= 2
    # Matched by IoU and class, not index: onnxruntime's convolutions differ from PyTorch's by ~1e-5
    # relative, enough to swap near-tied proposals at the RPN's top-1000 cut (seen once at 416 px:
    # one proposal near a corner, giving one different detection).
    iou = _iou(got[0], ref[0]) * (got[2][:, None] == ref[2][None, :])
    j, best = iou.argmax(axis=1), iou.max(axis=1)
    ok = best > 0.99
    assert ok.mean() >= 0.97, f"{(~ok).sum()} of {len(ok)} onnxruntime detections not found in PyTorch's"
    # Frozen trace-time shapes (anchor grid, clip bounds) would move boxes by whole strides; the
    # measured noise is < 5e-3 px on boxes, 1.1e-4 on scores, 8e-3 on masks (boxes move the samples).
    assert np.abs(got[0][ok] - ref[0][j[ok]]).max() < 2e-2
    assert np.abs(got[1][ok] - ref[1][j[ok]]).max() < 5e-4
    assert np.abs(got[3][ok] - ref[3][j[ok]]).max() < 3e-2
    assert ((got[3][ok] > 0.5) != (ref[3][j[ok]] > 0.5)).mean() < 1e-4
    # Boxes stay inside the valid (unpadded) image: clipping used this input's im_info, not the trace's.
    h, w = im_info[0]
    assert (got[0][:, [0, 2]] <= w).all() and (got[0][:, [1, 3]] <= h).all()
