"""Host-side processing against detectron2's own numbers (goldens) and torchvision's code."""
import json

import numpy as np
import pytest

from vdeploy.runtime.io import read_image
from vdeploy.runtime.postprocess import postprocess
from vdeploy.runtime.postprocess.masks import paste_masks_torchvision
from vdeploy.runtime.preprocess import preprocess, shortest_edge_size

D2_CASES = ["mask_rcnn_R_50_FPN_3x", "cascade_mask_rcnn_R_50_FPN_3x"]
IMAGES = ["astronaut", "chelsea", "coffee"]
D2_SPEC = {"inputs": [{"name": "images", "color": "BGR"}, {"name": "im_info"}],
           "preprocess": {"resize": {"type": "shortest_edge", "min_size": 800, "max_size": 1333, "interp": "pil_bilinear"},
                          "pad": {"size_divisibility": 32},
                          "normalize": {"mean": [103.53, 116.28, 123.675], "std": [1.0, 1.0, 1.0], "where": "graph"}}}


@pytest.mark.parametrize("image", IMAGES)
def test_resize_is_detectron2s_to_the_pixel(goldens, image):
    g = np.load(goldens / "detectron2/mask_rcnn_R_50_FPN_3x" / f"{image}.npz")
    img = read_image(goldens / "images" / f"{image}.png")
    prep = preprocess(img, D2_SPEC)
    vh, vw = prep.meta["resized_hw"]
    assert (vh, vw) == tuple(g["resized_hw"])
    x = prep.inputs["images"][0].transpose(1, 2, 0)
    # PIL bilinear on uint8, as detectron2 does: identical bytes
    np.testing.assert_array_equal(x[:vh, :vw].astype(np.uint8), g["resized_bgr"])
    # padding normalises to exactly zero in the graph
    assert x.shape[0] % 32 == 0 and x.shape[1] % 32 == 0
    if x.shape[0] > vh:
        np.testing.assert_array_equal(x[vh:, :, :], np.broadcast_to(D2_SPEC["preprocess"]["normalize"]["mean"], x[vh:].shape))
    np.testing.assert_array_equal(prep.inputs["im_info"], [[vh, vw]])


def test_shortest_edge_rounding_and_max_size():
    assert shortest_edge_size(300, 451, 800, 1333) == (800, 1203)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)


def test_letterbox_fits_a_fixed_canvas():
    img = np.zeros((400, 600, 3), np.uint8)
    prep = preprocess(img, D2_SPEC, input_size=(1344, 1344))
    assert prep.inputs["images"].shape == (1, 3, 1344, 1344)
    assert prep.meta["resized_hw"] == (800, 1200)
    assert prep.meta["scale_xy"] == (0.5, 0.5)


@pytest.mark.parametrize("case", D2_CASES)
def test_detector_postprocess_and_mask_pasting_match_detectron2(goldens, case):
    from pycocotools import mask as mask_util

    ref = json.load(open(goldens / "detectron2" / case / "final.json"))
    spec = {"task": "instance_segmentation", "postprocess": {"type": "detection", "paste": "detectron2", "mask_threshold": 0.5}}
    for image in IMAGES:
        g = np.load(goldens / "detectron2" / case / f"{image}.npz")
        # The goldens' det/boxes were captured after detectron2 scaled them in place (Boxes.scale),
        # so they are already in original-image pixels: map them with scale 1.
        raw = {"boxes": g["det/boxes"], "scores": g["det/scores"], "classes": g["det/classes"],
               "mask_probs": g["det/mask_probs"].astype(np.float32)}
        pred = postprocess(raw, {"orig_hw": tuple(g["orig_hw"]), "resized_hw": tuple(g["resized_hw"]), "scale_xy": (1.0, 1.0)}, spec)
        want = [r for r in ref if r["image"] == f"{image}.png"]
        assert len(pred) == len(want)
        np.testing.assert_allclose(pred.boxes, [r["bbox"] for r in want], atol=1e-3)
        masks = mask_util.decode([r["segmentation"] for r in want]).transpose(2, 0, 1).astype(bool)
        # the goldens store mask probabilities as float16: a probability within 1e-3 of 0.5 may flip
        assert (masks != pred.masks).sum() <= 1e-4 * masks.sum() + 5


def test_torchvision_paste_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, (12, 28, 28)).astype(np.float32)
    # torchvision's boxes are clipped to the image before pasting
    xy = rng.uniform(0, 150, (12, 2))
    wh = rng.uniform(3, 160, (12, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [319, 239])], 1).astype(np.float32)
    want = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (240, 320), padding=1)[:, 0].numpy()
    got = paste_masks_torchvision(masks, boxes, 240, 320, threshold=0.5)
    assert ((want > 0.5) != got).sum() <= 3  # float summation order differs; thresholding at 0.5 may flip a pixel


@pytest.mark.parametrize("align_corners", [False, True])
def test_logit_resize_matches_torch_interpolate(align_corners):
    torch = pytest.importorskip("torch")
    from vdeploy.runtime.postprocess import resize_bilinear_chw

    x = np.random.default_rng(0).normal(0, 5, (150, 33, 47)).astype(np.float32)  # more channels than OpenCV takes at once
    want = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(70, 101), mode="bilinear",
                                           align_corners=align_corners)[0].numpy()
    # OpenCV computes its interpolation weights in lower precision: ~1e-5 relative
    np.testing.assert_allclose(resize_bilinear_chw(x, 70, 101, align_corners), want, rtol=1e-4, atol=1e-4)


def test_an_empty_result_stays_empty_when_an_engine_pads_it_with_a_zero_score_row():
    from vdeploy.runtime.compare import compare_detections

    spec = {"task": "instance_segmentation", "postprocess": {"type": "detection", "paste": "detectron2"}}
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "classes": np.zeros(0, np.int64), "mask_probs": np.zeros((0, 28, 28), np.float32)}
    padded = {"boxes": np.array([[-8e35, 0, -2e27, 0]], np.float32), "scores": np.zeros(1, np.float32),
              "classes": np.zeros(1, np.int64), "mask_probs": np.full((1, 28, 28), 0.5, np.float32)}
    meta = {"orig_hw": (40, 50), "resized_hw": (40, 50), "scale_xy": (1.0, 1.0)}
    assert len(postprocess(padded, meta, spec)) == 0
    assert all(r.passed for r in compare_detections(empty, padded, {}))


def test_letterbox_fill_scales_the_image_to_fill_the_canvas():
    from vdeploy.runtime.preprocess import preprocess

    spec = {"inputs": [{"name": "images", "shape": [1, 3, 2000, 1125]}],
            "preprocess": {"resize": {"type": "shortest_edge", "min_size": 800, "max_size": 1333, "letterbox": "fill"},
                           "pad": {"size_divisibility": 32}, "normalize": {"mean": [1.0, 2.0, 3.0], "std": [1, 1, 1]}}}
    img = np.full((100, 50, 3), 200, np.uint8)
    prep = preprocess(img, spec, (2000, 1125))
    assert prep.meta["resized_hw"] == (2000, 1000) and prep.meta["padded_hw"] == (2000, 1125)
    x = prep.inputs["images"]
    assert x.shape == (1, 3, 2000, 1125) and x[0, 0, 10, 1010] == 1.0 and x[0, 0, 10, 10] == 200.0
    # without fill: the framework's own resize (800 short side, 1333 long at most), shrunk only to fit
    assert preprocess(img, dict(spec, preprocess=dict(spec["preprocess"], resize={"type": "shortest_edge", "min_size": 800,
                                                                                  "max_size": 1333})),
                      (2000, 1125)).meta["resized_hw"] == (1333, 667)
