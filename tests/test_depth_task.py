"""The depth_estimation task on hand-made depth maps: the host postprocessing (crop, bilinear
resize to the photo), the gates in both directions (a backend within float32 rounding passes, a
biased or blurred one fails), the 16-bit millimetre PNGs it writes and serves, the drawing, and
deploy.json's checks of the task's postprocess block."""
import copy

import cv2
import numpy as np
import pytest

from vdeploy.bundle.parse import parse_contract
from vdeploy.errors import BundleError
from vdeploy.runtime.postprocess import postprocess
from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.tasks import get_task
from vdeploy.runtime.tasks.depth_estimation import depth_png_array, encode_depth_png

TASK = get_task("depth_estimation")
SPEC = {"task": "depth_estimation", "classes": [],
        "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": "RGB",
                    "shape": [1, 3, "height", "width"]}],
        "preprocess": {"resize": {"type": "none"}, "pad": {},
                       "normalize": {"mean": [127.5] * 3, "std": [127.5] * 3, "where": "graph"}},
        "postprocess": {"type": "depth_estimation", "align_corners": False, "max_depth": 10.0, "unit": "m"},
        "outputs": [{"name": "depth", "shape": [1, 1, "height", "width"]}]}


def _scene(h=60, w=80, seed=0):
    """A plausible depth map: a floor receding to a wall, with a box in front (0.5 to 8 m)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(8.0, 1.0, h)[:, None] * np.ones((1, w))
    rows[h // 3: h // 2, w // 4: w // 2] = 0.5 + rng.uniform(0, 0.1)
    return rows.astype(np.float32)


def _pred(depth):
    return Prediction("depth_estimation", depth.shape, depth_map=np.asarray(depth, np.float32))


def test_postprocess_resizes_the_fed_depth_bilinearly_to_the_photo():
    fed = _scene(30, 40)
    meta = {"orig_hw": (60, 80), "resized_hw": (30, 40)}
    pred = postprocess({"depth": fed[None, None]}, meta, SPEC)
    want = cv2.resize(fed, (80, 60), interpolation=cv2.INTER_LINEAR)
    assert pred.depth_map.shape == (60, 80) and pred.depth_map.dtype == np.float32
    np.testing.assert_allclose(pred.depth_map, want, rtol=1e-6)


def test_postprocess_drops_the_padding_before_resizing():
    fed = np.zeros((1, 1, 32, 48), np.float32)
    fed[..., :30, :40] = _scene(30, 40)
    fed[..., 30:, :] = 99.0   # padding rows and columns must not leak into the photo
    fed[..., :, 40:] = 99.0
    meta = {"orig_hw": (30, 40), "resized_hw": (30, 40), "padded_hw": (32, 48)}
    pred = postprocess({"depth": fed}, meta, SPEC)
    np.testing.assert_array_equal(pred.depth_map, _scene(30, 40))


def test_identical_and_float_rounding_depths_pass_the_gates():
    ref = [_pred(_scene(seed=s)) for s in range(3)]
    rng = np.random.default_rng(1)
    noisy = [_pred(r.depth_map * (1 + 1e-5 * rng.standard_normal(r.depth_map.shape))) for r in ref]
    for got in (ref, noisy):
        a = TASK.agreement(ref, got, SPEC)
        assert all(g.passes(a.metrics[g.metric]) for g in TASK.resolve_gates()), a.metrics
    assert TASK.agreement(ref, ref, SPEC).metrics == {"abs_rel": 0.0, "within_1pct": 1.0}


@pytest.mark.parametrize("alter", ["bias_2pct", "blur", "one_image_flipped"])
def test_altered_depths_fail_a_gate(alter):
    ref = [_pred(_scene(seed=s)) for s in range(3)]
    got = [_pred(r.depth_map.copy()) for r in ref]
    if alter == "bias_2pct":
        got = [_pred(g.depth_map * 1.02) for g in got]
    elif alter == "blur":
        got = [_pred(cv2.GaussianBlur(g.depth_map, (9, 9), 3)) for g in got]
    else:
        got[1] = _pred(got[1].depth_map[::-1].copy())
    a = TASK.agreement(ref, got, SPEC)
    failed = [g.metric for g in TASK.resolve_gates() if not g.passes(a.metrics[g.metric])]
    assert failed, a.metrics


def test_a_wrong_size_depth_map_fails_and_says_so():
    ref = [_pred(_scene())]
    a = TASK.agreement(ref, [_pred(_scene(30, 40))], SPEC)
    assert a.metrics["abs_rel"] == float("inf") and "shape" in a.per_input[0]["note"]
    assert not TASK.resolve_gates()[0].passes(a.metrics["abs_rel"])


def test_reduced_precision_gates_are_looser_and_named():
    fp32 = {g.metric: g.threshold for g in TASK.resolve_gates()}
    bf16 = {g.metric: g.threshold for g in TASK.resolve_gates(precision="bf16")}
    assert bf16["abs_rel"] > fp32["abs_rel"] and bf16["within_1pct"] < fp32["within_1pct"]


def test_depth_png_is_millimetres_16_bit_and_round_trips():
    d = np.array([[0.0, 0.0004, 0.0006, 1.2344], [9.999, 65.535, 70.0, np.nan]], np.float32)
    png = depth_png_array(d)
    assert png.dtype == np.uint16
    assert png.tolist() == [[0, 0, 1, 1234], [9999, 65535, 65535, 0]]  # rounded; clipped; NaN = no depth
    back = cv2.imdecode(np.frombuffer(encode_depth_png(d), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, png)


def test_write_output_and_record_write_the_png(tmp_path):
    pred = _pred(_scene())
    TASK.write_output(tmp_path, "room", pred)
    got = cv2.imread(str(tmp_path / "room.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(got / 1000.0, pred.depth_map, atol=5e-4 + 1e-7)
    rec = TASK.record(pred, "scenes/room 1", [], tmp_path)
    assert rec["depth_scale"] == 1e-3 and rec["depth_map"].startswith("depth/")
    assert cv2.imread(str(tmp_path / rec["depth_map"]), cv2.IMREAD_UNCHANGED).shape == (60, 80)


def test_serving_gives_one_png_per_image():
    preds = [_pred(_scene(seed=0)), _pred(_scene(30, 40, seed=1))]
    (t,) = TASK.serve_tensors(preds)
    assert t.name == "depth_map" and t.datatype == "BYTES" and t.data.shape == (2,)
    shapes = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED).shape for b in t.data]
    assert shapes == [(60, 80), (30, 40)]
    assert TASK.serve_outputs() == [{"name": "depth_map", "datatype": "BYTES", "shape": [-1]}]


def test_draw_shows_photo_and_depth_side_by_side():
    photo = np.full((60, 80, 3), 128, np.uint8)
    out = TASK.draw(photo, _pred(_scene()), [], None)
    assert out.shape == (60, 160, 3)
    right = out[35:, 80:].astype(int)  # below the caption: near (bottom rows) brighter than far (top)
    assert right[-5:].mean() > out[:30, 80:].astype(int)[25:].mean()


def _meta(**pp):
    m = copy.deepcopy(SPEC)
    m["postprocess"].update(pp)
    return m


def test_deploy_json_reads_the_depth_postprocess_and_refuses_bad_values():
    c = parse_contract(_meta(), sealed=False)
    assert c.task == "depth_estimation" and c.postprocess.max_depth == 10.0 and c.postprocess.unit == "m"
    for bad, where in (({"max_depth": 0}, "max_depth"), ({"max_depth": float("nan")}, "max_depth"),
                       ({"unit": "ft"}, "unit"), ({"type": "semantic_segmentation"}, "type")):
        with pytest.raises(BundleError, match=where):
            parse_contract(_meta(**bad), sealed=False)
    no_depth = _meta()
    no_depth["outputs"] = [{"name": "logits"}]
    with pytest.raises(BundleError, match="'depth'"):
        parse_contract(no_depth, sealed=False)
