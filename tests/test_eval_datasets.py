"""Dataset formats: detection from the SPEC, loading, clear errors naming the file, scoring of
records built from known-perfect predictions."""
import json
import shutil

import numpy as np
import pytest

from vdeploy.errors import UserError
from vdeploy.eval import DatasetOptions, detect_format, open_dataset
from vdeploy.eval.datasets.semantic import transform_labels
from vdeploy.eval.records import to_record
from vdeploy.eval.synthetic import SHAPES, make_coco, make_imagefolder, make_market1501, make_semantic
from vdeploy.runtime.prediction import Prediction


@pytest.fixture(scope="module")
def data(module_tmp):
    root = module_tmp.mktemp("ds")
    return {"coco": make_coco(root / "coco", n=6), "semantic": make_semantic(root / "sem", n=4),
            "imagefolder": make_imagefolder(root / "cls", per_class=3), "market1501": make_market1501(root / "reid")}


def test_format_detection(data):
    for fmt, spec in data.items():
        assert detect_format(spec) == fmt
    with pytest.raises(UserError, match="cannot tell"):
        detect_format(data["coco"].parent / "images")  # a plain folder of images


def _coco_gt_predictions(ds):
    from pycocotools import mask as mask_util

    out = {}
    for im in ds.gt["images"]:
        anns = [a for a in ds.gt["annotations"] if a["image_id"] == im["id"]]
        masks = np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in anns])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
        classes = np.array([a["category_id"] // 10 - 1 for a in anns])  # synthetic ids are 10, 20, 30
        out[im["file_name"]] = Prediction("instance_segmentation", (im["height"], im["width"]), boxes=boxes,
                                          scores=np.linspace(0.9, 0.5, len(anns)).astype(np.float32),
                                          classes=classes, masks=masks)
    return out


def test_coco_perfect_records_and_name_mapping(data, tmp_path):
    ds = open_dataset(data["coco"])
    assert len(ds.samples) == 6 and ds.samples[0].path.is_file()
    preds = _coco_gt_predictions(ds)
    recs = {k: to_record(p, k, list(SHAPES), tmp_path) for k, p in preds.items()}
    s = ds.score(recs, list(SHAPES))
    assert s.metrics["bbox/AP"] == pytest.approx(1.0) and s.metrics["segm/AP"] == pytest.approx(1.0)
    # the model's classes in another order: mapping by name keeps the score perfect
    rev = list(reversed(SHAPES))
    recs = {k: to_record(Prediction(p.task, p.image_hw, boxes=p.boxes, scores=p.scores, classes=2 - p.classes,
                                    masks=p.masks), k, rev, tmp_path) for k, p in preds.items()}
    assert ds.score(recs, rev).metrics["bbox/AP"] == pytest.approx(1.0)
    # an explicit class map that swaps two classes must hurt
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"circle": "square", "square": "circle", "triangle": 30}))
    ds2 = open_dataset(data["coco"], options=DatasetOptions(class_map=cmap))
    recs = {k: to_record(p, k, list(SHAPES), tmp_path) for k, p in preds.items()}
    assert ds2.score(recs, list(SHAPES)).metrics["bbox/AP"] < 0.9


def test_coco_images_beside_the_json(data, tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    for p in (data["coco"].parent / "images").iterdir():
        shutil.copy(p, d / p.name)
    shutil.copy(data["coco"], d / "ann.json")
    ds = open_dataset(d / "ann.json")
    assert all(s.path.parent == d for s in ds.samples)


def test_coco_errors_name_the_file(data, tmp_path):
    gt = json.loads(data["coco"].read_text())
    bad = data["coco"].parent / "missing.json"
    bad.write_text(json.dumps(dict(gt, images=gt["images"] + [{"id": 99, "file_name": "nope.png"}])))
    with pytest.raises(UserError, match="nope.png"):
        open_dataset(bad)
    bad = data["coco"].parent / "badcat.json"
    gt2 = json.loads(data["coco"].read_text())
    gt2["annotations"][0]["category_id"] = 77
    bad.write_text(json.dumps(gt2))
    with pytest.raises(UserError, match=r"badcat.json.*category_id 77"):
        open_dataset(bad)
    empty = data["coco"].parent / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": gt["categories"]}))
    with pytest.raises(UserError, match="no images"):
        open_dataset(empty)
    with pytest.raises(UserError, match="not valid JSON"):
        (tmp_path / "x.json").write_text("{")
        open_dataset(tmp_path / "x.json")


def test_coco_unmatched_classes_need_a_map(data, tmp_path):
    ds = open_dataset(data["coco"])
    with pytest.raises(UserError, match="class-map"):
        ds.score({}, ["cat", "dog"])


def test_semantic_perfect_and_wrong_size(data, tmp_path):
    from PIL import Image

    ds = open_dataset(data["semantic"])
    classes = ["background"] + list(SHAPES)
    recs = {}
    for s in ds.samples:
        label = np.asarray(Image.open(ds.labels[s.key])).astype(np.int32)
        recs[s.key] = to_record(Prediction("semantic_segmentation", label.shape, label_map=label), s.key, classes, tmp_path)
        recs[s.key]["label_map"] = str(tmp_path / recs[s.key]["label_map"])
    sc = ds.score(recs, classes)
    assert sc.metrics == {"mIoU": 1.0, "mAcc": 1.0, "aAcc": 1.0}
    assert set(sc.tables["per-class"]) == set(classes)
    bad = tmp_path / "bad"
    shutil.copytree(data["semantic"], bad)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(bad / "labels" / "0002.png")
    with pytest.raises(UserError, match=r"0002.png.*12x10"):
        open_dataset(bad)
    (bad / "labels" / "0002.png").unlink()
    with pytest.raises(UserError, match="0002.png"):
        open_dataset(bad)


def test_label_transforms():
    lab = np.array([[7, 26, 0, 33], [255, 1, 24, 4]])
    assert transform_labels(lab, "cityscapes", 255).tolist() == [[0, 13, 255, 18], [255, 255, 11, 255]]
    assert transform_labels(np.array([0, 1, 5, 255]), "reduce_zero_label", 255).tolist() == [255, 0, 4, 255]


def test_imagefolder_topk(data, tmp_path):
    ds = open_dataset(data["imagefolder"])
    assert len(ds.samples) == 9
    recs = {}
    for s in ds.samples:
        k = SHAPES.index(s.key.split("/")[0])
        probs = np.full(3, 0.1, np.float32)
        probs[(k + 1) % 3] = 0.8 if s.key.startswith("circle") else 0.0  # circles ranked second
        probs[k] = 0.5
        recs[s.key] = to_record(Prediction("classification", (64, 64), probs=probs), s.key, list(SHAPES), None)
    m = ds.score(recs, list(SHAPES)).metrics
    assert m["top-1"] == pytest.approx(6 / 9) and m["top-5"] == 1.0


def test_market1501_ids_junk_and_scoring(data):
    ds = open_dataset(data["market1501"])
    keys = [s.key for s in ds.samples]
    assert not any("/-1_" in k for k in keys)                      # junk skipped
    assert sum(k.startswith("bounding_box_test/0000_") for k in keys) == 3  # distractors kept
    # features = one-hot of the person id: every query finds its cross-camera matches first
    recs = {}
    for k in keys:
        pid, _ = ds.ids[k]
        f = np.zeros(16, np.float32)
        f[pid] = 1.0
        if pid == 0:
            f[15] = 1.0
        recs[k] = to_record(Prediction("embedding", (64, 32), features=f), k, [], None)
    m = ds.score(recs, []).metrics
    assert m["mAP"] == pytest.approx(1.0) and m["rank-1"] == 1.0
    with pytest.raises(UserError, match="not a Market-1501 file name"):
        (data["market1501"] / "query" / "person.jpg").write_bytes(b"")
        open_dataset(data["market1501"])
    (data["market1501"] / "query" / "person.jpg").unlink()


@pytest.mark.parametrize("images,labels,split", [("img_dir", "ann_dir", "val"), ("images", "annotations", "validation"),
                                                  ("img_dir", "ann_dir", None)])
def test_mmsegmentation_layouts_are_read(tmp_path, images, labels, split):
    import cv2

    sub = split or ""
    for stem in ("a", "b"):
        (tmp_path / images / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / labels / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / images / sub / f"{stem}.jpg"), np.zeros((20, 30, 3), np.uint8))
        cv2.imwrite(str(tmp_path / labels / sub / f"{stem}.png"), np.ones((20, 30), np.uint8))
    ds = open_dataset(tmp_path, None, DatasetOptions())
    assert ds.format == "semantic" and [s.key for s in ds.samples] == ["a", "b"]
    assert ds.load_label("a", (20, 30)).max() == 1


def test_mmsegmentation_layout_with_an_unknown_split_names_the_splits(tmp_path):
    (tmp_path / "img_dir" / "train").mkdir(parents=True)
    (tmp_path / "ann_dir" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="give --split .*train"):
        open_dataset(tmp_path, None, DatasetOptions())
