"""The bundle contract (vdeploy/bundle/schema.py, docs/bundle.md): every field typed and validated
on load with a one-line error naming it; what export writes states every feeding number.

The bad-value probes edit a real bundle's deploy.json and re-seal it (file hashes and digest) the
way /work/shared/acceptance/tamper.py does, so that only field validation stands between the
value and the runtime."""
import copy
import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED, run_cli
from vdeploy.bundle import load_bundle, parse_contract
from vdeploy.errors import BundleError


def _tamper_reseal():
    """tamper.py's reseal when the shared acceptance folder is here, else the same steps."""
    path = SHARED / "acceptance" / "tamper.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("vdeploy_test_tamper", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.reseal

    def reseal(bundle: Path):  # docs/bundle.md: file hashes, then the digest over the rest
        dj = bundle / "deploy.json"
        meta = json.loads(dj.read_text())
        for fname, info in meta.get("files", {}).items():
            info["sha256"] = hashlib.sha256((bundle / fname).read_bytes()).hexdigest()
        body = {k: v for k, v in meta.items() if k != "digest"}
        meta["digest"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        dj.write_text(json.dumps(meta, indent=2))
    return reseal


reseal = _tamper_reseal()


@pytest.fixture(scope="module")
def det_bundle(module_tmp):
    """The tiny instance-segmentation model, ONNX only: every detection field, in seconds."""
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model
    from vdeploy.models.tiny import default_weights

    if not default_weights("shapes_det").is_file():
        pytest.skip("no trained weights for tiny:shapes_det; run scripts/train_tiny.py shapes_det")
    out = module_tmp.mktemp("contract") / "det"
    return export_bundle(build_model("tiny:shapes_det"), out, ["onnx"], log=lambda *a: None)


def _set(meta, path, value):
    keys = path.split(".")
    d = meta
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if value is _DELETE:
        del d[last]
    elif isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


_DELETE = object()


def _files_outside(meta, d):
    """files: a name that climbs out of the folder (the file exists there, so only the name is wrong)."""
    shutil.copy(d / "model.onnx", d.parent / "model.onnx")
    meta["files"] = {"../model.onnx": dict(meta["files"]["model.onnx"])}


def _files_absolute(meta, d):
    meta["files"] = {str((d / "model.onnx").resolve()): dict(meta["files"]["model.onnx"])}


def _files_symlink_out(meta, d):
    outside = d.parent / "elsewhere.onnx"
    shutil.copy(d / "model.onnx", outside)
    (d / "link.onnx").symlink_to(outside)
    meta["files"] = {"link.onnx": dict(meta["files"]["model.onnx"])}


def _files_lists_itself(meta, d):
    meta["files"]["deploy.json"] = {"format": "onnx", "role": "weights"}


# (probe, edit: dotted path + value or a function(meta, folder), what the error must name)
BAD = [
    ("task unknown", ("task", "car_detection"), "task"),
    ("task a number", ("task", 3), "task"),
    ("classes a string", ("classes", "circle,square"), "classes"),
    ("classes numbers", ("classes", [1, 2, 3]), "classes[0]"),
    ("classes missing", ("classes", _DELETE), "classes"),
    ("no inputs", ("inputs", []), "inputs"),
    ("input not an object", ("inputs", ["images"]), "inputs[0]"),
    ("input name empty", ("inputs.0.name", ""), "inputs[0].name"),
    ("input dtype unknown", ("inputs.0.dtype", "float33"), "inputs[0].dtype"),
    ("image input integer dtype", ("inputs.0.dtype", "int64"), "inputs[0].dtype"),
    ("input dim negative", ("inputs.0.shape", [1, 3, -96, 96]), "inputs[0].shape[2]"),
    ("input 3-D", ("inputs.0.shape", [3, 96, 96]), "inputs[0].shape"),
    ("input 4 channels", ("inputs.0.shape", [1, 4, 96, 96]), "inputs[0].shape"),
    ("colour unknown", ("inputs.0.color", "XYZ"), "inputs[0].color"),
    ("layout unknown", ("inputs.0.layout", "CHWN"), "inputs[0].layout"),
    ("scale zero", ("inputs.0.scale", 0), "inputs[0].scale"),
    ("output dtype unknown", ("outputs.2.dtype", "int65"), "outputs[2].dtype"),
    ("output shape a string", ("outputs.0.shape", "N,4"), "outputs[0].shape"),
    ("output names twice", ("outputs.1.name", "boxes"), "outputs[1].name"),
    ("detection without boxes", ("outputs.0.name", "rects"), "outputs"),
    ("input_size zero", ("input_size", [0, 96]), "input_size[0]"),
    ("input_size huge", ("input_size", [96, 10 ** 9]), "input_size[1]"),
    ("input_size a string", ("input_size", "96x96"), "input_size"),
    ("input_size not the graph's", ("input_size", [128, 128]), "input_size"),
    ("batchable a string", ("batchable", "yes"), "batchable"),
    ("resize type unknown", ("preprocess.resize.type", "stretch"), "preprocess.resize.type"),
    ("interp unknown", ("preprocess.resize.interp", "lanczos9"), "preprocess.resize.interp"),
    ("resize height negative", ("preprocess.resize.height", -1), "preprocess.resize.height"),
    ("resize width float", ("preprocess.resize.width", 96.5), "preprocess.resize.width"),
    ("resize width huge", ("preprocess.resize.width", 10 ** 7), "preprocess.resize.width"),
    ("resize height missing", ("preprocess.resize.height", _DELETE), "preprocess.resize.height"),
    ("letterbox unknown", ("preprocess.resize.letterbox", "stretch"), "preprocess.resize.letterbox"),
    ("std zero", ("preprocess.normalize.std", [64.0, 0, 64.0]), "preprocess.normalize.std[1]"),
    ("std negative", ("preprocess.normalize.std", [64.0, 64.0, -1]), "preprocess.normalize.std[2]"),
    ("std NaN", ("preprocess.normalize.std", [float("nan"), 64.0, 64.0]), "preprocess.normalize.std[0]"),
    ("mean two values", ("preprocess.normalize.mean", [1.0, 2.0]), "preprocess.normalize.mean"),
    ("mean a string", ("preprocess.normalize.mean", ["a", 0, 0]), "preprocess.normalize.mean[0]"),
    ("mean infinite", ("preprocess.normalize.mean", [float("inf"), 0, 0]), "preprocess.normalize.mean[0]"),
    ("normalise where unknown", ("preprocess.normalize.where", "gpu"), "preprocess.normalize.where"),
    ("divisibility negative", ("preprocess.pad.size_divisibility", -4), "preprocess.pad.size_divisibility"),
    ("pad value two channels", ("preprocess.pad.value", [0, 0]), "preprocess.pad.value"),
    ("preprocess a list", ("preprocess", []), "preprocess"),
    ("postprocess type unknown", ("postprocess.type", "magic"), "postprocess.type"),
    ("postprocess of another task", ("postprocess.type", "classification"), "postprocess.type"),
    ("mask threshold above 1", ("postprocess.mask_threshold", 1.5), "postprocess.mask_threshold"),
    ("score threshold negative", ("postprocess.score_threshold", -0.1), "postprocess.score_threshold"),
    ("max detections zero", ("postprocess.max_detections", 0), "postprocess.max_detections"),
    ("max detections a string", ("postprocess.max_detections", "20"), "postprocess.max_detections"),
    ("paste unknown", ("postprocess.paste", "opencv"), "postprocess.paste"),
    ("clip a string", ("postprocess.clip", "no"), "postprocess.clip"),
    ("file outside the bundle", _files_outside, "files key '../model.onnx'"),
    ("file absolute", _files_absolute, "files key"),
    ("file a link leading out", _files_symlink_out, "link.onnx: leads outside the bundle"),
    ("deploy.json lists itself", _files_lists_itself, "files key 'deploy.json'"),
    ("file format unknown", ("files.model.onnx.format", "tensorrt"), "files['model.onnx'].format"),
    ("file role unknown", ("files.model.onnx.role", "owner"), "files['model.onnx'].role"),
    ("file precision unknown", ("files.model.onnx.precisions", ["fp3"]), "files['model.onnx'].precisions[0]"),
    ("no model file", ("files", {}), "files"),
    ("schema_version a string", ("schema_version", "1"), "schema_version"),
    ("verification a string", ("verification", "passed"), "verification"),
    ("verification passed a string", ("verification.passed", "yes"), "verification.passed"),
    ("provenance a list", ("provenance", []), "provenance"),
    ("stuff_classes a number", ("stuff_classes", 5), "stuff_classes"),
    # an explicit null where the runtime reads `get(key, default)` would bypass the default
    ("score threshold null", ("postprocess.score_threshold", None), "postprocess.score_threshold"),
    ("pad null", ("preprocess.pad", None), "preprocess.pad"),
    ("output dtype null", ("outputs.0.dtype", None), "outputs[0].dtype"),
    ("provenance null", ("provenance", None), "provenance"),
    ("keypoint skeleton out of range", ("keypoints", {"names": ["a", "b"], "skeleton": [[0, 7]]}), "keypoints.skeleton[0][1]"),
]


def _set_file(meta, path, value):
    # file names hold dots: "files.model.onnx.format" -> files["model.onnx"]["format"]
    _, rest = path.split(".", 1)
    name, key = rest.rsplit(".", 1)
    meta["files"][name][key] = value


def _bad_copy(bundle, tmp_path, edit) -> Path:
    d = tmp_path / "bundle"
    shutil.copytree(bundle.path, d)
    meta = json.loads((d / "deploy.json").read_text())
    if callable(edit):
        edit(meta, d)
    elif edit[0].startswith("files."):
        _set_file(meta, *edit)
    else:
        _set(meta, *edit)
    (d / "deploy.json").write_text(json.dumps(meta))
    reseal(d)
    return d


def test_probes_are_many_and_distinct():
    assert len(BAD) >= 40 and len({name for name, _, _ in BAD}) == len(BAD)


@pytest.mark.parametrize("name,edit,field", BAD, ids=[b[0] for b in BAD])
def test_bad_value_refused_naming_the_field(det_bundle, tmp_path, name, edit, field):
    d = _bad_copy(det_bundle, tmp_path, edit)
    with pytest.raises(BundleError) as e:
        load_bundle(d)
    msg = str(e.value)
    assert field in msg, msg
    assert "\n" not in msg and len(msg) < 400, msg
    assert "digest" not in msg or field == "digest", f"re-sealed, so the digest must match: {msg}"


def test_predict_on_every_bad_value_exits_2_with_one_line(det_bundle, tmp_path, capsys):
    """The CLI end of the probes: exit 2, one line naming the field, never a traceback. In process
    for all of them (an uncaught exception fails the test), by subprocess for a few."""
    import cv2

    from vdeploy.cli import main

    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.full((40, 50, 3), 128, np.uint8))
    for i, (name, edit, field) in enumerate(BAD):
        d = _bad_copy(det_bundle, tmp_path / f"p{i}", edit)
        rc = main(["predict", str(d), str(img), "--out", str(tmp_path / f"p{i}" / "out.json")])
        err = capsys.readouterr().err.strip()
        assert rc == 2, (name, rc, err)
        assert len(err.splitlines()) == 1 and field in err, (name, err)
        assert not (tmp_path / f"p{i}" / "out.json").exists(), name
    names = [b[0] for b in BAD]
    for i in (names.index("task unknown"), names.index("std zero"), names.index("file outside the bundle")):
        d = tmp_path / f"p{i}" / "bundle"
        r = run_cli("predict", d, img, "--out", tmp_path / "sub.json")
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_duplicate_keys_nan_and_deep_nesting_refused(det_bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(det_bundle.path, d)
    text = (d / "deploy.json").read_text()
    # a second "task" would be sealed unseen by a digest computed over the parsed object
    (d / "deploy.json").write_text(text.replace('"task":', '"task": "classification", "task":', 1))
    with pytest.raises(BundleError, match="'task' appears twice"):
        load_bundle(d)
    (d / "deploy.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(BundleError, match="nested too deeply|expected a JSON object|not valid JSON"):
        load_bundle(d)


def test_fresh_export_states_dtypes_and_feeding_numbers(det_bundle):
    import onnx
    from onnx import helper

    c = load_bundle(det_bundle.path).contract
    assert all(t.dtype for t in c.inputs + c.outputs)
    graph = onnx.load(str(det_bundle.path / "model.onnx")).graph
    onnx_dtypes = {v.name: np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name
                   for v in list(graph.input) + list(graph.output)}
    assert {t.name: t.dtype for t in c.inputs + c.outputs} == onnx_dtypes
    assert c.output("classes").dtype == "int64"  # what from-bin misread as float32
    img = c.image_input
    assert (img.color, img.layout, img.scale, img.dtype) == ("BGR", "NCHW", 1.0, "float32")
    assert c.preprocess.normalize.where == "graph"
    # normalisation in the graph: padding is the pixel mean, which the graph normalises to zero
    assert c.preprocess.pad.value == c.preprocess.normalize.mean == (127.5, 127.5, 127.5)
    raw = json.loads((det_bundle.path / "deploy.json").read_text())
    assert raw["preprocess"]["pad"]["value"] == [127.5, 127.5, 127.5]


def test_detectron2_spec_states_im_info_and_pad_mean():
    """The letterbox feeding numbers of a detectron2 export, from the spec alone (no export)."""
    from conftest import goldens_or_skip
    from vdeploy.export.spec import bundle_meta
    from vdeploy.frameworks import build_model

    cfg = goldens_or_skip() / "detectron2/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    if not cfg.is_file():
        pytest.skip(f"{cfg} is absent")
    meta = bundle_meta(build_model(str(cfg), None), (1344, 1344))
    c = parse_contract(meta, sealed=False)
    assert c.input("im_info").meaning.startswith("valid (height, width)")
    assert c.image_input.shape == (1, 3, 1344, 1344) and c.input_size == (1344, 1344)
    assert c.preprocess.pad.value == c.preprocess.normalize.mean == (103.53, 116.28, 123.675)
    assert c.preprocess.pad.size_divisibility == 32 and c.image_input.color == "BGR"


def test_v1_bundle_without_the_new_fields_still_loads(det_bundle, tmp_path):
    """schema_version stays 1: dtypes, pad value and scale are additions, absent in older bundles,
    and their values are then the runtime's defaults."""
    d = tmp_path / "old"
    shutil.copytree(det_bundle.path, d)
    meta = json.loads((d / "deploy.json").read_text())
    for t in meta["inputs"] + meta["outputs"]:
        for k in ("dtype", "scale", "layout", "color", "meaning"):
            t.pop(k, None)
    meta["preprocess"]["pad"] = {}
    del meta["batchable"], meta["input_size"], meta["provenance"], meta["verification"]
    (d / "deploy.json").write_text(json.dumps(meta))
    reseal(d)
    c = load_bundle(d).contract
    assert c.schema_version == 1 and c.outputs[2].dtype is None and c.outputs[2].numpy_dtype == "float32"
    assert c.preprocess.pad.value is None and c.preprocess.pad_value == (127.5, 127.5, 127.5)
    assert c.image_input.color is None and c.verification is None and not c.batchable


def test_writer_never_writes_what_the_reader_refuses(det_bundle, tmp_path):
    from vdeploy.bundle import write_deploy_json

    d = tmp_path / "w"
    shutil.copytree(det_bundle.path, d)
    before = (d / "deploy.json").read_bytes()
    meta = copy.deepcopy(det_bundle.meta)
    meta["preprocess"]["normalize"]["std"] = [64.0, 0.0, 64.0]
    with pytest.raises(BundleError, match=r"preprocess\.normalize\.std\[1\] must be > 0, got 0"):
        write_deploy_json(d, meta)
    assert (d / "deploy.json").read_bytes() == before


def _documented_example() -> dict:
    text = (ROOT / "docs" / "bundle.md").read_text()
    block = re.search(r"```jsonc\n(.*?)```", text, re.S).group(1)
    # jsonc: drop // comments (none of the example's strings holds '//')
    return json.loads("\n".join(line.split("//")[0] for line in block.splitlines()))


def test_documented_example_parses_and_validates():
    meta = _documented_example()
    c = parse_contract(meta, where="docs/bundle.md")
    assert c.schema_version == 1 and c.task == "instance_segmentation"
    assert [t.dtype for t in c.outputs] == ["float32", "float32", "int64", "float32"]
    assert c.preprocess.pad.value == c.preprocess.normalize.mean
    assert c.input("im_info") is not None and c.files["model.onnx"].format == "onnx"
    bad = copy.deepcopy(meta)
    bad["preprocess"]["normalize"]["std"][1] = 0
    with pytest.raises(BundleError, match=r"^docs/bundle.md: preprocess\.normalize\.std\[1\] must be > 0, got 0$"):
        parse_contract(bad, where="docs/bundle.md")
