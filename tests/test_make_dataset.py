"""`vdeploy make-dataset`: synthetic sets, and photos labelled by a bundle, ready for `vdeploy eval`."""
import json

import pytest

from conftest import GOLDENS, run_cli


@pytest.mark.parametrize("kind", ["coco", "semantic", "imagefolder", "market1501"])
def test_synthetic_datasets_are_detected_by_eval(tmp_path, kind):
    from vdeploy.eval import detect_format

    r = run_cli("make-dataset", tmp_path / "ds", "--synthetic", kind, "--n", "3")
    assert r.returncode == 0, r.stderr
    spec = r.stdout.split("--dataset ")[-1].strip()
    assert detect_format(__import__("pathlib").Path(spec)) == kind


def test_existing_outputs_are_never_overwritten(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    r = run_cli("make-dataset", tmp_path / "ds", "--synthetic", "coco")
    assert r.returncode == 2 and "not empty" in r.stderr and (tmp_path / "ds" / "keep.txt").read_text() == "mine"


def test_photos_labelled_by_a_classifier_score_full_agreement_with_it(small_classifier_bundle, tmp_path):
    photos = GOLDENS / "images"
    if not photos.is_dir():
        pytest.skip(f"{photos} is absent")
    r = run_cli("make-dataset", tmp_path / "ds", "--photos", photos, "--bundle", small_classifier_bundle.path)
    assert r.returncode == 0, r.stderr
    assert "not accuracy" in r.stdout
    r = run_cli("eval", small_classifier_bundle.path, "--dataset", tmp_path / "ds", "--backends", "onnxruntime",
                "--out", tmp_path / "ev", "--no-progress")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rep["backends"]["onnxruntime"]["top-1"] == pytest.approx(1.0)
