"""Metric families on hand-made inputs with answers worked out by hand."""
import numpy as np
import pytest

from vdeploy.errors import UserError
from vdeploy.runtime.metrics.classification import topk_accuracy
from vdeploy.runtime.metrics.coco import coco_ap
from vdeploy.runtime.metrics.reid import cosine_distance, rank_metrics
from vdeploy.runtime.metrics.segmentation import confusion, segmentation_metrics


def _rle(mask):
    from pycocotools import mask as mask_util

    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _coco_gt(n_images=6, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
        for _ in range(3):
            x, y = rng.integers(0, 40, 2)
            w, h = rng.integers(8, 24, 2)
            m = np.zeros((64, 80), bool)
            m[y:y + h, x:x + w] = True
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.choice([3, 7])),
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0,
                         "segmentation": _rle(m)})
    return {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}


@pytest.mark.parametrize("fast", [True, False])
def test_coco_perfect_predictions_score_one(fast):
    gt = _coco_gt()
    dts = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
            "segmentation": a["segmentation"]} for a in gt["annotations"]]
    m = coco_ap(gt, dts, prefer_fast=fast)
    assert m["bbox/AP"] == pytest.approx(1.0) and m["segm/AP"] == pytest.approx(1.0)
    assert m["bbox/AP50"] == pytest.approx(1.0)


def test_coco_half_missed_and_engines_agree():
    gt = _coco_gt(seed=1)
    rng = np.random.default_rng(5)
    dts = []
    for a in gt["annotations"]:
        if a["id"] % 2:
            continue  # every other object missed
        x, y, w, h = a["bbox"]
        dts.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                    "bbox": [x + rng.normal(0, 1.5), y + rng.normal(0, 1.5), w, h], "segmentation": a["segmentation"]})
    slow, fast = coco_ap(gt, dts, prefer_fast=False), coco_ap(gt, dts, prefer_fast=True)
    # a recall of about one half caps AP near 0.5
    assert 0.2 < slow["bbox/AP"] < 0.55
    for k in slow:
        assert (slow[k] is None and fast[k] is None) or abs(slow[k] - fast[k]) < 1e-6, k


def test_coco_restricted_to_evaluated_images_and_empty_results():
    gt = _coco_gt()
    first = [a for a in gt["annotations"] if a["image_id"] == 1]
    dts = [{"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in first]
    assert coco_ap(gt, dts, ("bbox",), image_ids=[1])["bbox/AP"] == pytest.approx(1.0)
    assert coco_ap(gt, [], ("bbox",), image_ids=[1])["bbox/AP"] == 0.0


def test_segmentation_hand_computed():
    label = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    for n in (3, 4):  # a 4th class absent from label and prediction is left out of the means
        summary, per_class = segmentation_metrics(confusion(pred, label, n), ["a", "b", "c", "d"][:n])
        assert summary["mIoU"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
        assert summary["mAcc"] == pytest.approx((0.5 + 1 + 1) / 3)
        assert summary["aAcc"] == pytest.approx(0.8)
        assert per_class["b"] == {"IoU": pytest.approx(2 / 3), "Acc": 1.0}
    assert per_class["d"] == {"IoU": None, "Acc": None}


def test_segmentation_perfect_and_out_of_range_prediction():
    label = np.random.default_rng(0).integers(0, 5, (20, 30))
    summary, _ = segmentation_metrics(confusion(label, label, 5))
    assert summary == {"mIoU": 1.0, "mAcc": 1.0, "aAcc": 1.0}
    pred = label.copy()
    pred[0, 0] = 99  # never right, still counted
    summary, _ = segmentation_metrics(confusion(pred, label, 5))
    assert summary["aAcc"] == pytest.approx(1 - 1 / 600)


def test_rank_metrics_hand_computed():
    dist = np.array([[0.1, 0.5, 0.2, 0.3, 0.9],
                     [0.4, 0.6, 0.05, 0.7, 0.8]])
    m = rank_metrics(dist, [1, 2], [1, 1, 2, 3, 1], [0, 0], [0, 1, 1, 1, 1])
    # query 0: gallery 0 (same id, same camera) removed; matches at ranks 3 and 4
    assert m["mAP"] == pytest.approx(((1 / 3 + 2 / 4) / 2 + 1.0) / 2)
    assert m["rank-1"] == pytest.approx(0.5)
    assert m["rank-5"] == pytest.approx(1.0) and m["rank-10"] == pytest.approx(1.0)
    assert m["mINP"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["queries"] == 2


def test_rank_metrics_skips_queries_without_match():
    dist = np.array([[0.1, 0.2], [0.3, 0.1]])
    m = rank_metrics(dist, [1, 5], [1, 2], [0, 0], [1, 1])
    assert m["queries"] == 1 and m["mAP"] == 1.0
    with pytest.raises(UserError):
        rank_metrics(dist, [7, 8], [1, 2], [0, 0], [1, 1])


def test_cosine_distance_is_scale_free():
    q = np.array([[1.0, 0.0], [0.0, 3.0]])
    g = np.array([[2.0, 0.0], [1.0, 1.0]])
    d = cosine_distance(q, g)
    assert d[0, 0] == pytest.approx(0.0) and d[1, 0] == pytest.approx(1.0)
    assert d[0, 1] == pytest.approx(1 - np.sqrt(0.5))


def test_topk():
    ranked = [[2, 0, 1], [0, 1, 2], [1, 2, 0]]
    m = topk_accuracy(ranked, [2, 1, 0], ks=(1, 2, 3))
    assert m == {"top-1": pytest.approx(1 / 3), "top-2": pytest.approx(2 / 3), "top-3": 1.0}


@pytest.mark.parametrize("fast", [True, False])
def test_coco_per_category_ap_scores_each_category_alone(fast):
    from vdeploy.runtime.metrics.coco import coco_eval

    gt = _coco_gt()
    # category 3 found perfectly, category 7 not at all
    dts = [{"image_id": a["image_id"], "category_id": 3, "bbox": a["bbox"], "score": 0.9}
           for a in gt["annotations"] if a["category_id"] == 3]
    summary, per_category = coco_eval(gt, dts, ("bbox",), prefer_fast=fast)
    assert per_category["bbox"] == {3: pytest.approx(1.0), 7: pytest.approx(0.0)}
    assert summary["bbox/AP"] == pytest.approx(0.5)


def test_eval_report_shows_per_category_ap_in_detectron2_layout():
    from vdeploy.eval.report import to_markdown

    report = {"model": "m", "dataset": {"format": "coco"}, "limit": None, "backends": {"onnxruntime": {"bbox/AP": 0.5}},
              "difference_to_first": {}, "speed": {}, "notes": {},
              "tables": {"onnxruntime": {"per-category bbox AP (%)": {n: {"AP": v} for n, v in
                                                                      [("person", 50.0), ("car", 12.5), ("dog", None), ("cat", 1.0)]}}}}
    md = to_markdown(report)
    assert "| category | AP | category | AP | category | AP |" in md
    assert "| person | 50.000 | car | 12.500 | dog | nan |" in md and "| cat | 1.000 |  |  |  |  |" in md
