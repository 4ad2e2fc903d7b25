"""Depth evaluation: MMSegmentation's DepthMetric figures against hand-computed values, the
evaluation mask (bounds, nyu crop), the dataset layouts and their one-line errors, records that
round-trip through a resumable store, and a folder of prediction PNGs scored."""
import hashlib
import json
import math

import cv2
import numpy as np
import pytest

from conftest import run_cli
from vdeploy.errors import UserError
from vdeploy.eval import DatasetOptions, build_report, check_task, detect_format, evaluate, open_dataset
from vdeploy.eval.records import read_predictions, to_record
from vdeploy.eval.report import to_markdown
from vdeploy.eval.store import JsonlStore
from vdeploy.runtime.metrics.depth import METRICS, eval_mask, mean_metrics, score_image
from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.preprocess import Prepared

f32 = np.float32


def _expected(gt, pred):
    """The nine figures straight from their definitions, in plain Python (ratios as float32 sees them)."""
    gt = [float(f32(g)) for g in gt]
    pred = [float(f32(p)) for p in pred]
    n = len(gt)
    ratio = [float(max(f32(g) / f32(p), f32(p) / f32(g))) for g, p in zip(gt, pred)]
    d = [math.log(p) - math.log(g) for g, p in zip(gt, pred)]
    msq = sum(x * x for x in d) / n
    return {
        "d1": sum(r < 1.25 for r in ratio) / n,
        "d2": sum(r < 1.5625 for r in ratio) / n,
        "d3": sum(r < 1.953125 for r in ratio) / n,
        "abs_rel": sum(abs(p - g) / g for g, p in zip(gt, pred)) / n,
        "sq_rel": sum((p - g) ** 2 / g for g, p in zip(gt, pred)) / n,
        "rmse": math.sqrt(sum((p - g) ** 2 for g, p in zip(gt, pred)) / n),
        "rmse_log": math.sqrt(msq),
        "log10": sum(abs(math.log10(p) - math.log10(g)) for g, p in zip(gt, pred)) / n,
        "silog": math.sqrt(msq - 0.5 * (sum(d) / n) ** 2),
    }


def _approx(got, want):
    assert set(got) == set(METRICS)
    for k in METRICS:
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k


# ---------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    gt = np.array([[1.0, 2.0, 4.0]], f32)
    pred = np.array([[1.1, 2.5, 2.0]], f32)   # ratios 1.1, 1.25 (not < 1.25), 2.0
    s = score_image(gt, pred, 0.0, 10.0)
    assert s.pixels == 3 and s.floored == 0
    _approx(s.metrics, _expected([1, 2, 4], [1.1, 2.5, 2.0]))
    assert (s.metrics["d1"], s.metrics["d2"], s.metrics["d3"]) == (1 / 3, 2 / 3, 2 / 3)
    assert s.metrics["abs_rel"] == pytest.approx((0.1 + 0.25 + 0.5) / 3, rel=1e-6)
    # twice the depth everywhere: every ratio is 2, every log error ln 2
    g = np.array([[0.5, 1.0], [3.0, 7.0]], f32)
    m = score_image(g, 2 * g, 0.0, 10.0).metrics
    assert (m["d1"], m["d2"], m["d3"]) == (0.0, 0.0, 0.0)
    assert m["abs_rel"] == pytest.approx(1.0) and m["log10"] == pytest.approx(math.log10(2))
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 9 + 49) / 4))
    assert m["rmse_log"] == pytest.approx(math.log(2)) and m["silog"] == pytest.approx(math.log(2) / math.sqrt(2))


def test_thresholds_are_float32_ratios_as_mmseg():
    # 800 mm vs 1000 mm: 1 / 0.8 is 1.2499999... in float64 but exactly 1.25 in float32 (not a hit)
    m = score_image(np.array([0.8], f32), np.array([1.0], f32), 0.0, 10.0).metrics
    assert m["d1"] == 0.0 and m["d2"] == 1.0


def test_mask_bounds_are_open_and_zero_is_no_depth():
    gt = np.array([[0.0, 0.001, 0.002, 5.0, 9.999, 10.0, 12.0]], f32)
    assert eval_mask(gt, 1e-3, 10.0).tolist() == [[False, False, True, True, True, False, False]]
    s = score_image(gt, np.ones_like(gt), 1e-3, 10.0)
    assert s.pixels == 3
    _approx(s.metrics, _expected([0.002, 5.0, 9.999], [1.0, 1.0, 1.0]))


def test_nyu_crop():
    gt = np.ones((480, 640), f32)
    mask = eval_mask(gt, 1e-3, 10.0, "nyu")
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[45, 40]
    assert not mask[471, 600] and not mask[470, 601]
    # an error outside the crop does not count, one inside does
    pred = gt.copy()
    pred[:45] = 5.0
    assert score_image(gt, pred, 1e-3, 10.0, "nyu").metrics["abs_rel"] == 0.0
    assert score_image(gt, pred, 1e-3, 10.0, "none").metrics["abs_rel"] == pytest.approx(45 * 4 / 480)
    with pytest.raises(ValueError, match="crop"):
        eval_mask(gt, 1e-3, 10.0, "kitti")


def test_missing_predictions_are_floored_and_counted():
    gt = np.array([1.0, 2.0, 0.0], f32)          # the third pixel has no ground truth
    pred = np.array([0.0, 2.0, 0.0], f32)        # the first has no prediction
    s = score_image(gt, pred, 0.5, 10.0)
    assert s.floored == 1 and s.pixels == 2
    _approx(s.metrics, _expected([1.0, 2.0], [0.5, 2.0]))   # scored as min_depth
    s = score_image(gt, np.array([-1.0, np.nan, 3.0], f32), 0.0, 10.0)
    assert s.floored == 2
    _approx(s.metrics, _expected([1.0, 2.0], [1e-3, 1e-3]))  # min_depth 0: 1 mm
    assert all(math.isfinite(v) for v in s.metrics.values())


def test_dataset_figure_is_the_mean_of_the_images_and_skips_empty_ones():
    a = score_image(np.array([1.0], f32), np.array([2.0], f32), 0.0, 10.0).metrics      # abs_rel 1
    b = score_image(np.full(9, 1.0, f32), np.full(9, 1.0, f32), 0.0, 10.0).metrics      # abs_rel 0
    empty = score_image(np.zeros(4, f32), np.ones(4, f32), 1e-3, 10.0)
    assert empty.metrics is None and empty.pixels == 0
    m = mean_metrics([a, b, empty.metrics])
    assert m["abs_rel"] == pytest.approx(0.5) and m["d1"] == pytest.approx(0.5)     # not pixel-weighted (0.1)
    assert mean_metrics([None]) == {k: None for k in METRICS}


# ---------------------------------------------------------------- datasets


def _write_u16(path, mm):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(mm, np.uint16))


def _make(root, images="images", depth="depth", split="", n=3, hw=(12, 16), seed=0):
    """n photos with random 16-bit depth in millimetres (a few zeros = no depth)."""
    rng = np.random.default_rng(seed)
    gts = {}
    for i in range(n):
        stem = f"{i:04d}"
        (root / images / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / images / split / f"{stem}.jpg"), rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
        mm = rng.integers(300, 5000, hw).astype(np.uint16)
        mm[0, :3] = 0
        _write_u16(root / depth / split / f"{stem}.png", mm)
        gts[stem] = mm
    return gts


@pytest.fixture(scope="module")
def simple(module_tmp):
    root = module_tmp.mktemp("depth")
    return root, _make(root)


def test_layouts_are_detected_and_only_offered_to_depth_models(tmp_path, simple):
    root, _ = simple
    assert detect_format(root) == "depth"
    ds = open_dataset(root)
    assert ds.format == "depth" and [s.key for s in ds.samples] == ["0000", "0001", "0002"]
    assert ds.crop == "none" and ds.describe()["layout"] == "images/depth"
    check_task("depth", "depth_estimation")
    with pytest.raises(UserError, match="cannot be scored on a depth dataset"):
        check_task("depth", "semantic_segmentation")
    with pytest.raises(UserError, match="cannot be scored on a semantic dataset"):
        check_task("semantic", "depth_estimation")
    # MMSegmentation's NYU layout: 16-bit annotations/ are depth, ADE20K's 8-bit ones stay semantic
    nyu = tmp_path / "nyu"
    _make(nyu, "images", "annotations", "train", n=1, hw=(480, 640))
    _make(nyu, "images", "annotations", "test", n=2, hw=(480, 640), seed=1)
    assert detect_format(nyu) == "depth"
    ds = open_dataset(nyu)
    assert ds.crop == "nyu" and len(ds.samples) == 2 and ds.samples[0].path.parent.name == "test"
    assert len(open_dataset(nyu, options=DatasetOptions(split="train")).samples) == 1
    assert open_dataset(nyu, options=DatasetOptions(depth_crop="none")).crop == "none"
    ade = tmp_path / "ade"
    (ade / "images" / "validation").mkdir(parents=True)
    (ade / "annotations" / "validation").mkdir(parents=True)
    cv2.imwrite(str(ade / "images" / "validation" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(ade / "annotations" / "validation" / "a.png"), np.ones((8, 8), np.uint8))
    assert detect_format(ade) == "semantic"


def _broken(tmp_path, simple, name):
    import shutil

    root = tmp_path / name
    shutil.copytree(simple[0], root)
    return root


def test_dataset_errors_name_the_file(tmp_path, simple):
    root = _broken(tmp_path, simple, "wrong-size")
    _write_u16(root / "depth" / "0001.png", np.ones((5, 7)))
    with pytest.raises(UserError, match=r"0001.png: ground-truth depth is 7x5 but its image 0001.jpg is 16x12"):
        open_dataset(root)
    (root / "depth" / "0001.png").unlink()
    with pytest.raises(UserError, match=r"0001.jpg: has no ground-truth depth map .*0001.png"):
        open_dataset(root)
    root = _broken(tmp_path, simple, "8bit")
    cv2.imwrite(str(root / "depth" / "0002.png"), np.ones((12, 16), np.uint8))
    with pytest.raises(UserError, match=r"0002.png: a ground-truth depth map must be a 16-bit single-channel PNG, "
                                        r"this one is 8-bit grey"):
        open_dataset(root, "depth")
    cv2.imwrite(str(root / "depth" / "0002.png"), np.ones((12, 16, 3), np.uint16))
    with pytest.raises(UserError, match=r"0002.png: .*16-bit single-channel PNG, this one is"):
        open_dataset(root, "depth")
    cv2.imwrite(str(root / "depth" / "0002.png"), np.ones((12, 16, 3), np.uint8))  # an RGB picture
    with pytest.raises(UserError, match=r"0002.png: .*this one is RGB"):
        open_dataset(root, "depth")
    (root / "depth" / "0002.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"0002.png: not a readable"):
        open_dataset(root, "depth")
    small_nyu = tmp_path / "small-nyu"
    _make(small_nyu, "images", "annotations", "test", n=1)
    with pytest.raises(UserError, match=r"smaller than the nyu crop.*--depth-crop none"):
        open_dataset(small_nyu)
    assert open_dataset(small_nyu, options=DatasetOptions(depth_crop="none")).crop == "none"
    with pytest.raises(UserError, match=r"no split 'val'"):
        open_dataset(small_nyu, options=DatasetOptions(split="val"))


@pytest.mark.parametrize("options,message", [
    (dict(min_depth=-1.0), "--min-depth must be"), (dict(min_depth=float("nan")), "--min-depth must be"),
    (dict(min_depth=2.0, max_depth=2.0), r"--max-depth must be .* above --min-depth \(2.0\)"),
    (dict(depth_scale=0.0), "--depth-scale must be"), (dict(depth_scale=float("inf")), "--depth-scale must be"),
    (dict(depth_crop="kitti"), "unknown depth crop 'kitti'")])
def test_bad_options(simple, options, message):
    with pytest.raises(UserError, match=message):
        open_dataset(simple[0], options=DatasetOptions(**options))


def test_bad_values_exit_2_on_one_line_through_the_cli(simple, tmp_path):
    root, _ = simple
    for extra, message in ((["--max-depth", "0.0001"], "--max-depth must be"),
                           (["--depth-scale", "-1"], "--depth-scale must be"),
                           (["--format", "depth", "--dataset", tmp_path / "none"], "no such dataset")):
        args = ["eval", "any-bundle", "--dataset", root, *extra, "--no-progress"]
        r = run_cli(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    from vdeploy.eval.synthetic import make_semantic

    sem = make_semantic(tmp_path / "sem", n=1)
    r = run_cli("eval", "any-bundle", "--dataset", sem, "--min-depth", "0.5", "--no-progress")
    assert r.returncode == 2 and "--min-depth: only for a depth dataset" in r.stderr


# ---------------------------------------------------------------- records, scoring


def _pred(mm, factor=1.0):
    return Prediction("depth_estimation", mm.shape, depth_map=(mm.astype(np.float32) * f32(1e-3) * f32(factor)))


def test_records_round_trip_through_a_resumable_store(tmp_path, simple):
    root, gts = simple
    ds = open_dataset(root)
    store = JsonlStore(tmp_path / "pred")
    for k, mm in gts.items():
        store.add(to_record(_pred(mm), k, [], store.side_dir))
    store.close()
    line = json.loads((tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()[0])
    assert line["depth_scale"] == 0.001 and line["depth_map"].startswith("depth/")      # relative to the file
    back = JsonlStore(tmp_path / "pred")
    recs = back.records(list(gts))
    back.close()
    assert all(rec["depth_map"].startswith(str(tmp_path)) for rec in recs.values())
    sc = ds.score(recs, [])
    assert sc.metrics["d1"] == 1.0 and sc.metrics["abs_rel"] == 0.0 and sc.metrics["rmse"] == 0.0 and not sc.notes
    # the same records read back as a saved predictions file (`eval --predictions DIR/.../predictions.jsonl`)
    recs = {r["image"]: r for r in read_predictions(tmp_path / "pred" / "predictions.jsonl")}
    assert ds.score(recs, []).metrics["silog"] == 0.0
    # a record of another task, or a prediction of the wrong size: one clear line
    with pytest.raises(UserError, match="not a depth record .* depth_estimation model"):
        ds.score({"0000": {"image": "0000", "label_map": str(tmp_path / "x.png")}}, [])
    bad = tmp_path / "small.png"
    _write_u16(bad, np.ones((3, 4)))
    with pytest.raises(UserError, match=r"ground-truth depth is 16x12 but the predicted depth map is 4x3"):
        ds.score({"0000": {"image": "0000", "depth_map": str(bad), "depth_scale": 0.001}}, [])
    with pytest.raises(UserError, match=r"depth_scale -1"):
        ds.score({"0000": {"image": "0000", "depth_map": str(bad), "depth_scale": -1}}, [])


def test_a_folder_of_prediction_pngs_is_scored(tmp_path, simple):
    root, gts = simple
    ds = open_dataset(root)
    exact, doubled = tmp_path / "exact", tmp_path / "doubled"
    for k, mm in gts.items():
        _write_u16(exact / f"{k}.png", mm)
        if k != "0002":
            _write_u16(doubled / f"{k}.png", mm.astype(np.int64) * 2)
    res = evaluate(ds, [], None, model_id="m", classes=[], predictions=[exact, doubled], progress=False)
    assert [r.name for r in res] == ["exact", "doubled"] and [r.images for r in res] == [3, 2]
    assert res[0].scores.metrics["d1"] == 1.0 and res[0].scores.metrics["abs_rel"] == 0.0
    m = res[1].scores.metrics
    assert m["d3"] == 0.0 and m["abs_rel"] == pytest.approx(1.0) and m["rmse_log"] == pytest.approx(math.log(2))
    rmse = [math.sqrt(np.mean((gts[k][gts[k] > 1].astype(np.float64) * 1e-3) ** 2)) for k in ("0000", "0001")]
    assert m["rmse"] == pytest.approx(np.mean(rmse), rel=1e-6)
    assert any("1 of 3 images have no prediction" in n for n in res[1].scores.notes)
    report = build_report(res, "m", ds.describe(), None)
    assert report["backends"]["doubled"]["log10"] == pytest.approx(math.log10(2))
    assert "| abs_rel |" in to_markdown(report)
    # zeros in a prediction (no depth) inside the mask are floored and reported
    holes = tmp_path / "holes"
    for k, mm in gts.items():
        _write_u16(holes / f"{k}.png", np.where(np.arange(mm.shape[1]) < 4, 0, mm))
    sc = evaluate(ds, [], None, model_id="m", classes=[], predictions=[holes], progress=False)[0].scores
    assert sc.metrics["d1"] < 1.0 and any("have no predicted depth" in n and "0.001 m" in n for n in sc.notes)


class DepthOracle:
    """A stand-in backend: looks each photo up by content and answers its ground truth times `factor`."""

    task, classes = "depth_estimation", []

    def __init__(self, gts, photos, factor=1.0):
        self.by_digest = {hashlib.sha1(cv2.imread(str(photos[k])).tobytes()).hexdigest(): mm for k, mm in gts.items()}
        self.factor = factor

    def preprocess(self, image):
        return Prepared({"digest": hashlib.sha1(image.tobytes()).hexdigest()}, {})

    def infer(self, inputs):
        return inputs

    def postprocess(self, raw, meta):
        return _pred(self.by_digest[raw["digest"]], self.factor)

    def predict(self, image):
        return self.postprocess(self.infer(self.preprocess(image).inputs), {})


def test_live_backends_resume_and_score(tmp_path, simple):
    root, gts = simple
    ds = open_dataset(root)
    photos = {s.key: s.path for s in ds.samples}
    backends = {"a": DepthOracle(gts, photos), "b": DepthOracle(gts, photos, 1.1)}
    res = evaluate(ds, list(backends), backends.__getitem__, model_id="m", classes=[], out=tmp_path / "ev",
                   progress=False)
    assert res[0].scores.metrics["abs_rel"] == 0.0
    assert res[1].scores.metrics["abs_rel"] == pytest.approx(0.1, abs=2e-3)   # 1 mm steps
    again = evaluate(ds, list(backends), backends.__getitem__, model_id="m", classes=[], out=tmp_path / "ev",
                     progress=False)
    assert [r.new_images for r in again] == [0, 0] and again[1].scores.metrics == res[1].scores.metrics
    assert sorted(p.parent.name for p in (tmp_path / "ev" / "predictions" / "b").rglob("*.png")) == ["depth"] * 3


def test_make_dataset_writes_millimetre_ground_truth(tmp_path, simple):
    from vdeploy.eval.make_dataset import make_from_predictions

    root, gts = simple
    ds = open_dataset(root)
    photos = {s.key: s.path for s in ds.samples}
    oracle = DepthOracle(gts, photos)
    spec = make_from_predictions(tmp_path / "made", list(photos.values()), oracle, 0.5)
    assert detect_format(spec) == "depth"
    made = open_dataset(spec)
    for k, mm in gts.items():
        assert np.array_equal(cv2.imread(str(made.depths[k]), cv2.IMREAD_UNCHANGED), mm)
    res = evaluate(made, ["a"], {"a": oracle}.__getitem__, model_id="m", classes=[], progress=False)
    assert res[0].scores.metrics["d1"] == 1.0 and res[0].scores.metrics["rmse"] == 0.0
