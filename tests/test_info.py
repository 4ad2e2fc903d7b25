"""`vdeploy info`: the feeding numbers, and a snippet that really feeds the graph as vdeploy does."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import GOLDENS, run_cli

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def det_bundle(module_tmp):
    from vdeploy.models.tiny import default_weights

    if not default_weights("shapes_det").is_file():
        pytest.skip("no trained weights for tiny:shapes_det")
    out = module_tmp.mktemp("info") / "b"
    r = run_cli("export", "tiny:shapes_det", "--format", "onnx,torchscript", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("engine", ["onnxruntime", "torchscript"])
def test_the_printed_snippet_feeds_the_graph_exactly_as_vdeploy(det_bundle, tmp_path, engine):
    from vdeploy.runtime.io import read_image
    from vdeploy.runtime.predictor import Predictor

    photo = GOLDENS / "images" / "coffee.png"
    if not photo.is_file():
        pytest.skip(f"{photo} is absent")
    r = run_cli("info", det_bundle, "--snippet", engine)
    assert r.returncode == 0, r.stderr
    assert "padding" in r.stdout and "normalisation" in r.stdout and "output boxes" in r.stdout
    code = r.stdout.split("what vdeploy does):\n", 1)[1].replace("photo.jpg", str(photo))
    code += "\nnp.save(r'%s', boxes)\n" % (tmp_path / "boxes.npy")
    (tmp_path / "feed.py").write_text(code)
    subprocess.run([sys.executable, str(tmp_path / "feed.py")], check=True, capture_output=True)
    p = Predictor(str(det_bundle), "onnxruntime")
    prep = p.preprocess(read_image(photo))
    raw = p.infer(prep.inputs)
    sx, sy = prep.meta["scale_xy"]
    np.testing.assert_allclose(np.load(tmp_path / "boxes.npy"), raw["boxes"] * np.array([sx, sy, sx, sy]), rtol=1e-4, atol=1e-3)
