"""to-bin -> a plain onnxruntime script over the .bin files -> from-bin gives exactly what
`predict` gives, and `eval --predictions` scores it like the live backend."""
import json
from pathlib import Path

import numpy as np
import pytest

from vdeploy.errors import UserError

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from vdeploy.runtime.binio import from_bin, read_output, to_bin  # noqa: E402
from vdeploy.bundle import load_bundle  # noqa: E402
from vdeploy.eval.records import read_predictions, to_record  # noqa: E402
from vdeploy.eval.synthetic import make_coco, make_semantic  # noqa: E402
from vdeploy.runtime.io import read_image  # noqa: E402
from vdeploy.runtime.predictor import Predictor  # noqa: E402


def _export(name, out):
    from vdeploy.export import export_bundle
    from vdeploy.models.tiny import default_weights
    from vdeploy.frameworks import build_model

    if not default_weights(name).is_file():
        pytest.skip(f"no trained weights for tiny:{name}; run scripts/train_tiny.py {name}")
    return export_bundle(build_model(f"tiny:{name}"), out, ["onnx"], log=lambda *a: None)


def run_onnx_over_bins(bundle_dir: Path, bins: Path, outputs: Path, shape_files: bool) -> None:
    """What a user's own tool does: read each sample's inputs, run, dump every output raw."""
    info = json.loads((bins / "preprocess.json").read_text())
    sess = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for s in info["samples"]:
        feed = {n: np.fromfile(bins / i["file"], dtype=i["dtype"]).reshape(i["shape"]) for n, i in s["inputs"].items()}
        folder = outputs / f"{s['index']:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for o, v in zip(sess.get_outputs(), sess.run(None, feed)):
            np.asarray(v, np.float32).tofile(folder / f"{o.name}.bin")
            if shape_files:
                (folder / f"{o.name}.shape").write_text(" ".join(map(str, v.shape)))


@pytest.mark.parametrize("name, make, shape_files", [("shapes_det", make_coco, False), ("shapes_seg", make_semantic, True)])
def test_round_trip_equals_predict(tmp_path, name, make, shape_files):
    bundle = _export(name, tmp_path / "b")
    ds = make(tmp_path / "ds", 5)
    images = (ds.parent if ds.suffix == ".json" else ds) / "images"
    bins = tmp_path / "bins"
    assert to_bin(bundle, images, bins) == 5
    lines = (bins / "info.txt").read_text().splitlines()
    assert lines[0] == "0 0000.png 96 96" and len(lines) == 5
    assert (bins / "inputs" / "000004" / "images.bin").stat().st_size == 3 * 96 * 96 * 4
    run_onnx_over_bins(bundle.path, bins, bins / "outputs", shape_files)
    results = tmp_path / "res" / "results.json"
    assert from_bin(load_bundle(bundle.path), bins / "outputs", results) == 5
    got = {r["image"]: r for r in read_predictions(results)}
    pred = Predictor(bundle.path, "onnxruntime")
    for img in sorted(images.iterdir()):
        want = to_record(pred.predict(read_image(img)), img.name, bundle.classes, tmp_path / "want")
        have = got[img.name]
        if "detections" in want:
            assert len(want["detections"]) > 0
            assert have["detections"] == want["detections"]
        else:
            a = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(have["label_map"]))
            b = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "want" / want["label_map"]))
            assert np.array_equal(a, b) and a.shape == (96, 96)


def test_from_bin_refuses_bad_outputs(tmp_path):
    spec = {"name": "boxes", "shape": ["N", 4]}
    (tmp_path / "boxes.bin").write_bytes(np.zeros(10, np.float32).tobytes())
    with pytest.raises(UserError, match="boxes.bin.*10 values"):
        read_output(tmp_path, spec, {}, {})
    np.zeros((3, 4), np.float32).tofile(tmp_path / "boxes.bin")
    assert read_output(tmp_path, spec, {}, {}).shape == (3, 4)
    np.zeros(3, np.int64).tofile(tmp_path / "classes.bin")
    assert read_output(tmp_path, {"name": "classes", "shape": ["N"]}, {}, {"classes": "int64"}).dtype == np.int64
    with pytest.raises(UserError, match="no scores.bin or scores.npy"):
        read_output(tmp_path, {"name": "scores", "shape": ["N"]}, {}, {})
    with pytest.raises(UserError, match="several unknown dims"):
        read_output(tmp_path, {"name": "boxes", "shape": ["N", "M"]}, {}, {})
