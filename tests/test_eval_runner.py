"""The evaluation pipeline with a stand-in predictor: ordering, overlap, resume without
duplicates after an interruption or a half-written line, report files."""
import hashlib
import json

import numpy as np
import pytest

from vdeploy.errors import UserError
from vdeploy.eval import build_report, evaluate, open_dataset, write_report
from vdeploy.eval.synthetic import SHAPES, make_coco
from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.preprocess import Prepared


class OraclePredictor:
    """Looks each image up by content: perfect boxes, or boxes shifted by `shift` pixels."""

    classes = list(SHAPES)
    task = "detection"

    def __init__(self, ds, shift=0.0, fail_at=None):
        self.truth = {}
        for im in ds.gt["images"]:
            path = next(s.path for s in ds.samples if s.key == im["file_name"])
            import cv2

            digest = hashlib.sha1(cv2.imread(str(path)).tobytes()).hexdigest()
            anns = [a for a in ds.gt["annotations"] if a["image_id"] == im["id"]]
            self.truth[digest] = ((im["height"], im["width"]), anns)
        self.shift, self.fail_at, self.calls = shift, fail_at, 0

    def preprocess(self, image):
        return Prepared({"digest": hashlib.sha1(image.tobytes()).hexdigest()}, {})

    def infer(self, inputs):
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise KeyboardInterrupt
        return inputs

    def postprocess(self, raw, meta):
        hw, anns = self.truth[raw["digest"]]
        boxes = np.array([[x + self.shift, y, x + w + self.shift, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                         np.float32).reshape(-1, 4)
        return Prediction("detection", hw, boxes=boxes, scores=np.full(len(anns), 0.9, np.float32),
                          classes=np.array([a["category_id"] // 10 - 1 for a in anns]))


@pytest.fixture(scope="module")
def coco(module_tmp):
    return open_dataset(make_coco(module_tmp.mktemp("coco"), n=12))


def _run(ds, out, predictors, **kw):
    return evaluate(ds, list(predictors), predictors.__getitem__, model_id="m", classes=list(SHAPES), out=out,
                    progress=False, **kw)


def test_two_backends_side_by_side(coco, tmp_path):
    res = _run(coco, tmp_path / "ev", {"good": OraclePredictor(coco), "shifted": OraclePredictor(coco, shift=3.0)})
    rep = build_report(res, "m", coco.describe(), None)
    assert rep["backends"]["good"]["bbox/AP"] == pytest.approx(1.0)
    assert rep["backends"]["shifted"]["bbox/AP"] < 0.9
    assert rep["difference_to_first"]["shifted"]["bbox/AP"] == pytest.approx(rep["backends"]["shifted"]["bbox/AP"] - 1.0)
    write_report(rep, tmp_path / "ev")
    on_disk = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(on_disk["backends"]) == {"good", "shifted"}
    assert all(isinstance(v, (float, type(None))) for m in on_disk["backends"].values() for v in m.values())
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "bbox/AP" in md and "Δ shifted" in md


def test_interrupted_run_resumes_to_the_same_numbers(coco, tmp_path):
    full = _run(coco, None, {"ort": OraclePredictor(coco, shift=1.5)})[0].scores.metrics
    out = tmp_path / "ev"
    with pytest.raises(KeyboardInterrupt):
        _run(coco, out, {"ort": OraclePredictor(coco, shift=1.5, fail_at=5)})
    lines = (out / "predictions" / "ort" / "predictions.jsonl").read_text().splitlines()
    assert 0 < len(lines) <= 5
    # a kill in the middle of a write leaves half a line behind
    with open(out / "predictions" / "ort" / "predictions.jsonl", "a") as f:
        f.write('{"image": "0007.png", "detec')
    again = OraclePredictor(coco, shift=1.5)
    res = _run(coco, out, {"ort": again})[0]
    assert res.new_images == 12 - len(lines) and again.calls == 12 - len(lines)
    assert res.scores.metrics == full
    keys = [json.loads(l)["image"] for l in (out / "predictions" / "ort" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(s.key for s in coco.samples)  # each image exactly once
    # a third run has nothing left to predict
    assert _run(coco, out, {"ort": OraclePredictor(coco, fail_at=0)})[0].new_images == 0


def test_limit_and_other_dataset_refused(coco, tmp_path):
    res = _run(coco, tmp_path / "ev", {"a": OraclePredictor(coco)}, limit=4)[0]
    assert res.images == 4 and res.scores.metrics["bbox/AP"] == pytest.approx(1.0)
    other = open_dataset(make_coco(tmp_path / "other", n=3, seed=9))
    with pytest.raises(UserError, match="another model or dataset"):
        _run(other, tmp_path / "ev", {"a": OraclePredictor(other)})


def test_reader_errors_surface(coco, tmp_path):
    class Broken(OraclePredictor):
        def preprocess(self, image):
            raise UserError("cannot preprocess")

    with pytest.raises(UserError, match="cannot preprocess"):
        _run(coco, None, {"x": Broken(coco)})


def test_saved_predictions_score_like_the_live_backend(coco, tmp_path):
    from vdeploy.runtime.io import read_image
    from vdeploy.runtime.results import to_coco_results

    oracle = OraclePredictor(coco, shift=2.0)
    live = _run(coco, None, {"live": oracle})[0].scores.metrics
    flat = []  # what `vdeploy predict` writes: one dict per detection, keyed by file_name
    for s in coco.samples:
        prep = oracle.preprocess(read_image(s.path))
        flat += to_coco_results(oracle.postprocess(oracle.infer(prep.inputs), prep.meta), s.path.name, list(SHAPES))
    saved = tmp_path / "predict.json"
    saved.write_text(json.dumps(flat))
    res = evaluate(coco, [], None, model_id="m", classes=list(SHAPES), predictions=[saved], progress=False)[0]
    assert res.name == "predict" and res.scores.metrics == live
