"""Keypoint R-CNN, panoptic / semantic FPN and RPN-only detectron2 models: the torch-free pieces
(keypoint decoding, PanopticFPN's combination, PQ, keypoint AP, serving tensors) on hand-made
cases, and the config edge on the zoo's own configs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vdeploy.runtime.metrics.panoptic import PQStat, id_to_rgb, pq_single, rgb_to_id
from vdeploy.runtime.postprocess.keypoints import heatmaps_to_keypoints
from vdeploy.runtime.postprocess.panoptic import combine_semantic_and_instances
from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.tasks import get_task

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo" / "detectron2"


# --------------------------------------------------------------------------- keypoint decoding

def _reference_decode(maps, rois):
    """detectron2's heatmaps_to_keypoints, transcribed with torch (bicubic F.interpolate per box)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    maps, rois = torch.from_numpy(maps), torch.from_numpy(rois)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    out = torch.zeros(len(rois), maps.shape[1], 3)
    k = torch.arange(maps.shape[1])
    for i in range(len(rois)):
        hc, wc = int(heights[i].ceil()), int(widths[i].ceil())
        roi = F.interpolate(maps[[i]], size=(hc, wc), mode="bicubic", align_corners=False)[0]
        top = roi.reshape(len(k), -1).max(1)[0].view(-1, 1, 1)
        scores = (roi - top).exp() / (maps[i] - top).exp().sum((1, 2), keepdim=True)
        pos = roi.reshape(len(k), -1).argmax(1)
        x, y = pos % wc, (pos - pos % wc) // wc
        out[i, :, 0] = (x.float() + 0.5) * (widths[i] / wc) + rois[i, 0]
        out[i, :, 1] = (y.float() + 0.5) * (heights[i] / hc) + rois[i, 1]
        out[i, :, 2] = scores[k, y, x]
    return out.numpy()


def test_heatmaps_to_keypoints_matches_detectron2_decoding():
    rng = np.random.default_rng(0)
    maps = (rng.normal(size=(12, 17, 56, 56)) * 3).astype(np.float32)
    x1, y1 = rng.uniform(0, 300, 12), rng.uniform(0, 200, 12)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0.3, 300, 12), y1 + rng.uniform(0.5, 250, 12)], 1).astype(np.float32)
    boxes[0] = [10, 10, 10.5, 80]  # narrower than a pixel: clamped to 1
    boxes[1] = [5, 5, 61, 61]      # exactly the heatmap's size: no resize
    ref = _reference_decode(maps, boxes)
    got = heatmaps_to_keypoints(maps, boxes)
    np.testing.assert_array_equal(got[..., :2], ref[..., :2])
    np.testing.assert_allclose(got[..., 2], ref[..., 2], rtol=1e-4)


def test_keypoint_lands_on_the_heatmap_peak():
    maps = np.full((1, 1, 56, 56), -10.0, np.float32)
    maps[0, 0, 14, 42] = 10.0  # a peak at row 14, column 42 of a 56 x 56 map over a 112 x 56 box
    kp = heatmaps_to_keypoints(maps, np.array([[100, 200, 212, 256]], np.float32))[0, 0]
    assert 100 + 2 * 42 <= kp[0] <= 100 + 2 * 43 and 200 + 14 <= kp[1] <= 200 + 15
    assert 0.0 < kp[2] <= 1.0


# --------------------------------------------------------------------------- panoptic combination

def test_combine_follows_detectron2_thresholds():
    h = w = 10
    masks = np.zeros((3, h, w), bool)
    masks[0, :5, :5] = True          # best instance: 25 px
    masks[1, :5, 2:7] = True         # overlaps the first by 15/25 = 0.6 > 0.5: dropped
    masks[2, 6:, 6:] = True          # score below the instance threshold: never considered
    scores = np.array([0.9, 0.8, 0.4], np.float32)
    classes = np.array([3, 4, 5])
    labels = np.zeros((h, w), np.int32)
    labels[:, 8:] = 2                # 20 px of stuff label 2
    labels[9, :2] = 1                # 2 px of stuff label 1: under the area threshold
    seg, info = combine_semantic_and_instances(masks, scores, classes, labels, overlap_threshold=0.5,
                                               stuff_area_threshold=10, instances_score_threshold=0.5)
    assert [(s["id"], s["isthing"], s["category_id"]) for s in info] == [(1, True, 3), (2, False, 2)]
    assert (seg == 1).sum() == 25 and (seg == 2).sum() == 20 and (seg == 0).sum() == 55


def test_combine_keeps_the_free_part_of_a_small_overlap():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True  # half of it is taken: 0.5 is not above the threshold, the rest is kept
    seg, info = combine_semantic_and_instances(masks, np.array([0.9, 0.8]), np.array([0, 1]), np.zeros((4, 4), int),
                                               overlap_threshold=0.5, stuff_area_threshold=0,
                                               instances_score_threshold=0.5)
    assert len(info) == 2 and (seg == 2).sum() == 4 and (seg[1] == 1).all()


# --------------------------------------------------------------------------- PQ

def test_pq_hand_computed():
    gt = np.zeros((4, 10), np.int64)
    gt[:, :5] = 1      # category 7, 20 px
    gt[:, 5:] = 2      # category 8, 20 px
    pred = np.zeros((4, 10), np.int64)
    pred[:, :4] = 1    # category 7, 16 px inside gt 1: IoU 16/20 = 0.8
    pred[:, 4:] = 2    # category 9, 24 px: no match (false positive), gt 2 is a false negative
    stat = pq_single(gt, [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 8}],
                     pred, [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 9}])
    avg, per = stat.average({7: True, 8: False, 9: False})
    assert per[7] == pytest.approx({"pq": 0.8, "sq": 0.8, "rq": 1.0})
    assert per[8] == {"pq": 0.0, "sq": 0.0, "rq": 0.0} and per[9] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert avg["pq"] == pytest.approx(0.8 / 3) and avg["n"] == 3
    assert stat.average({7: True, 8: False, 9: False}, isthing=True)[0]["pq"] == pytest.approx(0.8)


def test_pq_void_and_crowd_are_not_false_positives():
    gt = np.zeros((4, 4), np.int64)
    gt[:2] = 5                      # a crowd region of category 1
    pred = np.zeros((4, 4), np.int64)
    pred[:2] = 1                    # on the crowd region: ignored
    pred[2:, :2] = 2                # on void: ignored
    stat = pq_single(gt, [{"id": 5, "category_id": 1, "iscrowd": 1}], pred,
                     [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}])
    assert all(v[1] == v[2] == v[3] == 0 for v in stat.per_cat.values())


def test_pq_void_pixels_leave_the_union():
    gt = np.zeros((1, 10), np.int64)
    gt[0, :6] = 1
    pred = np.ones((1, 10), np.int64)  # 6 px on gt, 4 on void: IoU 6 / (10 + 6 - 6 - 4) = 1
    stat = pq_single(gt, [{"id": 1, "category_id": 3}], pred, [{"id": 1, "category_id": 3}])
    assert stat.per_cat[3] == [pytest.approx(1.0), 1, 0, 0]


def test_pq_refuses_inconsistent_predictions():
    with pytest.raises(ValueError, match="not in its segments_info"):
        pq_single(np.zeros((2, 2)), [], np.ones((2, 2)), [])


def test_panoptic_png_ids_round_trip():
    ids = np.array([[0, 1, 300], [70000, 5, 16777215]], np.int64)
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()


def test_pq_stat_accumulates():
    a, b = PQStat(), PQStat()
    a.per_cat[1] = [0.9, 1, 0, 0]
    b.per_cat[1] = [0.7, 1, 1, 0]
    a.add(b)
    assert a.per_cat[1] == [pytest.approx(1.6), 2, 1, 0]


# --------------------------------------------------------------------------- keypoint agreement

def _people(shift: float = 0.0, n: int = 6) -> Prediction:
    rng = np.random.default_rng(1)
    xy = rng.uniform(50, 300, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + 120], 1)
    kps = np.zeros((n, 17, 3), np.float32)
    kps[:, :, :2] = xy[:, None] + rng.uniform(10, 110, (n, 17, 2)) + shift
    kps[:, :, 2] = 0.5
    return Prediction("keypoints", (480, 640), boxes=boxes, scores=np.linspace(0.9, 0.4, n, dtype=np.float32),
                      classes=np.zeros(n, np.int64), keypoints=kps)


def test_keypoint_agreement_gates_on_oks():
    task = get_task("keypoints")
    spec = {"postprocess": {"max_detections": 100}, "keypoints": {"oks_sigmas": [0.05] * 17}}
    same = task.agreement([_people()], [_people()], spec)
    assert same.metrics["keypoint_ap"] == pytest.approx(1.0) and same.metrics["bbox_ap"] == pytest.approx(1.0)
    moved = task.agreement([_people()], [_people(shift=12.0)], spec)  # boxes agree, keypoints do not
    assert moved.metrics["bbox_ap"] == pytest.approx(1.0)
    assert moved.metrics["keypoint_ap"] < 0.5
    assert not [g for g in task.resolve_gates() if g.metric == "keypoint_ap"][0].passes(moved.metrics["keypoint_ap"])


def test_keypoint_results_are_coco_pixel_indices():
    from vdeploy.runtime.results import to_coco_results

    p = _people(n=1)
    r = to_coco_results(p, "a.png", ["person"])[0]
    assert len(r["keypoints"]) == 51
    assert r["keypoints"][0] == pytest.approx(float(p.keypoints[0, 0, 0]) - 0.5)
    assert r["keypoints"][2] == pytest.approx(0.5)


def test_coco_keypoint_ap_is_pycocotools():
    from vdeploy.runtime.metrics.coco import coco_ap

    p = _people(n=3)
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 120.0 * 120,
             "bbox": [float(p.boxes[i, 0]), float(p.boxes[i, 1]), 120.0, 120.0], "num_keypoints": 17,
             "keypoints": [float(v) for v in np.concatenate([p.keypoints[i, :, :2], np.full((17, 1), 2)], 1).reshape(-1)]}
            for i in range(3)]
    gt = {"images": [{"id": 1, "height": 480, "width": 640}], "annotations": anns, "categories": [{"id": 1}]}
    res = [{"image_id": 1, "category_id": 1, "score": 0.9 - 0.1 * i, "bbox": a["bbox"], "keypoints": a["keypoints"]}
           for i, a in enumerate(anns)]
    assert coco_ap(gt, res, ("keypoints",))["keypoints/AP"] == pytest.approx(1.0)
    res[0]["keypoints"] = [v + 40 if j % 3 != 2 else v for j, v in enumerate(res[0]["keypoints"])]
    assert coco_ap(gt, res, ("keypoints",))["keypoints/AP"] < 0.8


def test_serving_keypoints_tensor():
    from vdeploy.serve.contract import output_types, to_json, to_tensors

    preds = [_people(n=2), Prediction("keypoints", (10, 10), boxes=np.zeros((0, 4), np.float32),
                                      scores=np.zeros(0, np.float32), classes=np.zeros(0, np.int64),
                                      keypoints=np.zeros((0, 17, 3), np.float32))]
    tensors = {t.name: t for t in to_tensors("keypoints", preds)}
    assert [o["name"] for o in output_types("keypoints")] == list(tensors)
    assert tensors["keypoints"].data.shape == (2, 17, 3) and tensors["keypoints"].datatype == "FP32"
    assert len(to_json("keypoints", preds[0], ["person"])["detections"][0]["keypoints"]) == 17


# --------------------------------------------------------------------------- config edge

torch_needed = pytest.mark.skipif(not ZOO.is_dir(), reason="the detectron2 zoo configs (../shared/zoo) are absent")


@torch_needed
@pytest.mark.parametrize("config, task, outputs", [
    ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml", "keypoints", ["boxes", "scores", "classes", "keypoint_heatmaps"]),
    ("COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml", "panoptic_segmentation",
     ["boxes", "scores", "classes", "mask_probs", "sem_seg_logits"]),
    ("Misc/semantic_R_50_FPN_1x.yaml", "semantic_segmentation", ["sem_seg_logits"]),
    ("COCO-Detection/rpn_R_50_FPN_1x.yaml", "detection", ["boxes", "scores", "classes"]),
])
def test_zoo_configs_build_with_their_outputs(config, task, outputs):
    torch = pytest.importorskip("torch")
    from vdeploy.frameworks import build_model

    dm = build_model(str(ZOO / config))
    assert dm.spec["task"] == task and [o["name"] for o in dm.spec["outputs"]] == outputs
    with torch.no_grad():
        out = dm.module(torch.rand(1, 3, 128, 160) * 255, torch.tensor([[120.0, 150.0]]))
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(outputs)
    if task == "keypoints":
        assert dm.spec["classes"] == ["person"] and len(dm.spec["keypoints"]["oks_sigmas"]) == 17
        assert out[3].shape[1:] == (17, 56, 56)
    if "sem_seg_logits" in outputs:
        assert out[-1].shape == (1, 54, 128, 160)
    if config.startswith("COCO-Detection/rpn"):
        assert dm.spec["classes"] == ["object"] and dm.spec["postprocess"]["max_detections"] == 2000
        assert ((out[1] > 0) & (out[1] < 1)).all() and (out[2] == 0).all()


@torch_needed
def test_unknown_meta_architecture_is_refused_by_name(tmp_path):
    pytest.importorskip("torch")
    from vdeploy.errors import UserError
    from vdeploy.frameworks import build_model

    cfg = tmp_path / "densepose.yaml"
    cfg.write_text(f'_BASE_: "{ZOO / "Base-RCNN-FPN.yaml"}"\nMODEL:\n  META_ARCHITECTURE: "DensePoseRCNN"\n')
    with pytest.raises(UserError, match="MODEL.META_ARCHITECTURE 'DensePoseRCNN' is not supported"):
        build_model(str(cfg))


@torch_needed
@pytest.mark.parametrize("config", ["COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml",
                                    "quick_schedules/fast_rcnn_R_50_FPN_inference_acc_test.yaml",
                                    "quick_schedules/fast_rcnn_R_50_FPN_instant_test.yaml"])
def test_precomputed_proposals_are_refused_by_key_with_the_reason(config):
    pytest.importorskip("torch")
    from vdeploy.errors import ConfigError
    from vdeploy.frameworks import build_model

    with pytest.raises(ConfigError, match=r"^MODEL\.PROPOSAL_GENERATOR\.NAME: PrecomputedProposals .*not supported: "
                                          r"its boxes come from a proposal file") as e:
        build_model(str(ZOO / config))
    assert "\n" not in str(e.value)
