"""to-bin -> a plain onnxruntime script over the .bin files -> from-bin gives exactly what
`predict` gives, and `eval --predictions` scores it like the live backend."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vdeploy.errors import UserError

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from vdeploy.runtime.binio import from_bin, read_output, to_bin  # noqa: E402
from vdeploy.bundle import load_bundle  # noqa: E402
from vdeploy.eval.datasets.semantic import read_label_png  # noqa: E402
from vdeploy.eval.records import read_predictions  # noqa: E402
from vdeploy.eval.synthetic import make_coco, make_semantic  # noqa: E402


def _export(name, out):
    from vdeploy.export import export_bundle
    from vdeploy.models.tiny import default_weights
    from vdeploy.frameworks import build_model

    if not default_weights(name).is_file():
        pytest.skip(f"no trained weights for tiny:{name}; run scripts/train_tiny.py {name}")
    return export_bundle(build_model(f"tiny:{name}"), out, ["onnx"], log=lambda *a: None)


def run_onnx_over_bins(bundle_dir: Path, bins: Path, outputs: Path, shape_files: bool, npu_dump: bool = False) -> None:
    """What a user's own tool does: read each sample's inputs, run, dump every output raw: into
    NNNNNN/<output>.bin, or (npu_dump) as an NPU benchmark tool does, every output in
    its own element type into one folder as <input file stem>_<k>.bin."""
    info = json.loads((bins / "preprocess.json").read_text())
    sess = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for s in info["samples"]:
        feed = {n: np.fromfile(bins / i["file"], dtype=i["dtype"]).reshape(i["shape"]) for n, i in s["inputs"].items()}
        stem = Path(next(iter(s["inputs"].values()))["file"]).stem
        folder = outputs if npu_dump else outputs / f"{s['index']:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, (o, v) in enumerate(zip(sess.get_outputs(), sess.run(None, feed))):
            if npu_dump:
                np.asarray(v).tofile(folder / f"{stem}_{k}.bin")
                continue
            np.asarray(v).tofile(folder / f"{o.name}.bin")  # each output in its own element type
            if shape_files:
                (folder / f"{o.name}.shape").write_text(" ".join(map(str, v.shape)))


def _predict(bundle, images: Path, out: Path):
    r = subprocess.run([sys.executable, "-m", "vdeploy", "predict", str(bundle.path), str(images), "--out", str(out),
                        "--backend", "onnxruntime"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name, make, shape_files", [("shapes_det", make_coco, False), ("shapes_seg", make_semantic, True)])
def test_round_trip_writes_what_predict_writes(tmp_path, name, make, shape_files):
    bundle = _export(name, tmp_path / "b")
    ds = make(tmp_path / "ds", 5)
    images = (ds.parent if ds.suffix == ".json" else ds) / "images"
    bins = tmp_path / "bins"
    assert to_bin(bundle, images, bins) == 5
    lines = (bins / "info.txt").read_text().splitlines()
    assert lines[0] == "0 0000.png 96 96" and len(lines) == 5
    # named after the image, so tools that name outputs after their input never collide
    assert (bins / "inputs" / "000004" / "000004_0004.bin").stat().st_size == 3 * 96 * 96 * 4
    run_onnx_over_bins(bundle.path, bins, bins / "outputs", shape_files)
    det = name == "shapes_det"
    results, want = tmp_path / ("res.json" if det else "res"), tmp_path / ("want.json" if det else "want")
    assert from_bin(load_bundle(bundle.path), bins / "outputs", results).images == 5
    _predict(bundle, images, want)
    if det:
        have, expected = json.loads(results.read_text()), json.loads(want.read_text())
        assert len(expected) > 0 and have == expected
        assert {r["image"] for r in read_predictions(results)} == {f"{i:04d}.png" for i in range(5)}
    else:
        for png in sorted(want.iterdir()):
            assert np.array_equal(read_label_png(results / png.name), read_label_png(png))


def test_npu_dump_folder_with_native_int64_classes_reads_right_without_flags(tmp_path):
    bundle = _export("shapes_det", tmp_path / "b")
    images = make_coco(tmp_path / "ds", 4).parent / "images"
    bins = tmp_path / "bins"
    to_bin(bundle, images, bins)
    run_onnx_over_bins(bundle.path, bins, tmp_path / "dump", False, npu_dump=True)
    results, want = tmp_path / "res.json", tmp_path / "want.json"
    from_bin(load_bundle(bundle.path), tmp_path / "dump", results, bins=bins, layout="{stem}_{index}.bin")
    _predict(bundle, images, want)
    assert json.loads(results.read_text()) == json.loads(want.read_text())


def test_from_bin_refuses_bad_outputs(tmp_path):
    spec = {"name": "boxes", "shape": ["N", 4]}
    (tmp_path / "boxes.bin").write_bytes(np.zeros(10, np.float32).tobytes())
    with pytest.raises(UserError, match="boxes.bin.*10 float32 values"):
        read_output(tmp_path / "boxes.bin", spec, {}, {})
    np.zeros((3, 4), np.float32).tofile(tmp_path / "boxes.bin")
    dims = {}
    assert read_output(tmp_path / "boxes.bin", spec, dims, {}).shape == (3, 4) and dims == {"N": 3}
    np.zeros(3, np.int64).tofile(tmp_path / "classes.bin")
    # int64 class ids read as float32 would be 6 values for 3 boxes: refused, with the type the size implies
    with pytest.raises(UserError, match=r"6 float32 values.*N=3.*holds 3.*24 bytes would be 3 values of int64"):
        read_output(tmp_path / "classes.bin", {"name": "classes", "shape": ["N"]}, dims, {})
    assert read_output(tmp_path / "classes.bin", {"name": "classes", "shape": ["N"]}, dims, {"classes": "int64"}).dtype == np.int64
    assert read_output(tmp_path / "classes.bin", {"name": "classes", "shape": ["N"], "dtype": "int64"}, dims, {}).shape == (3,)
    with pytest.raises(UserError, match="scores.bin: missing"):
        read_output(tmp_path / "scores.bin", {"name": "scores", "shape": ["N"]}, {}, {})
    with pytest.raises(UserError, match="several unknown dims"):
        read_output(tmp_path / "boxes.bin", {"name": "boxes", "shape": ["N", "M"]}, {}, {})


def test_layout_fields_are_checked(tmp_path):
    from vdeploy.runtime.binio import output_path

    sample = {"index": 3, "stem": "000003_cat"}
    assert output_path(tmp_path, "{stem}_{index}.bin", sample, 2, "scores") == tmp_path / "000003_cat_2.bin"
    assert output_path(tmp_path, "{sample}/{name}.bin", sample, 2, "scores") == tmp_path / "000003" / "scores.bin"
    for bad in ("{image}.bin", "../{name}.bin"):
        with pytest.raises(UserError, match="--layout"):
            output_path(tmp_path, bad, sample, 0, "x")


def test_a_tool_that_dumps_everything_as_float32_is_told_to_say_so(tmp_path):
    bundle = _export("shapes_det", tmp_path / "b")
    images = make_coco(tmp_path / "ds", 2).parent / "images"
    bins = tmp_path / "bins"
    to_bin(bundle, images, bins)
    run_onnx_over_bins(bundle.path, bins, bins / "outputs", False)
    for f in (bins / "outputs").rglob("classes.bin"):  # as many NPU tools do: every output as float32
        np.fromfile(f, np.int64).astype(np.float32).tofile(f)
    with pytest.raises(UserError, match="classes.bin: .* int64 values.*would be .* float32 or int32: give --dtype"):
        from_bin(load_bundle(bundle.path), bins / "outputs", tmp_path / "r.json")
    assert from_bin(load_bundle(bundle.path), bins / "outputs", tmp_path / "r.json", dtypes={"classes": "float32"}).images == 2
