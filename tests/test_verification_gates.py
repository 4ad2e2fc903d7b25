"""Verification gates judge what a task's users measure, in both directions: correct exports of
other weights pass, altered graphs fail. Figures on hand-made predictions first, then end to end
through `vdeploy export` / `vdeploy verify` on the tiny trained models."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vdeploy.errors import UserError
from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.tasks import get_task, parse_gate_options

TAMPER = Path(__file__).resolve().parents[2] / "shared" / "acceptance" / "tamper.py"


def _dets(boxes, scores, classes, hw=(200, 300), masks=None):
    return Prediction("instance_segmentation" if masks is not None else "detection", hw,
                      boxes=np.asarray(boxes, np.float32).reshape(-1, 4), scores=np.asarray(scores, np.float32),
                      classes=np.asarray(classes, np.int64), masks=masks)


def _random_dets(n, seed, hw=(200, 300)):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 150, (n, 2))
    wh = rng.uniform(20, 80, (n, 2))
    scores = np.sort(rng.uniform(0.05, 1.0, n))[::-1]
    return _dets(np.concatenate([xy, xy + wh], 1), scores, rng.integers(0, 5, n), hw)


def test_gate_options_parse_and_unknown_metrics_name_the_task_gates():
    assert parse_gate_options(["bbox_ap=0.995", "segm_ap=0.9"]) == {"bbox_ap": 0.995, "segm_ap": 0.9}
    for bad in ("bbox_ap", "=0.9", "bbox_ap=high", "bbox_ap=nan"):
        with pytest.raises(UserError, match="METRIC=VALUE"):
            parse_gate_options([bad])
    with pytest.raises(UserError, match="rel_l2 <= 0.001"):
        get_task("embedding").resolve_gates({"bbox_ap": 0.9})
    gates = {g.metric: g for g in get_task("embedding").resolve_gates({"rel_l2": 0})}
    assert gates["rel_l2"].passes(0.0) and not gates["rel_l2"].passes(1e-9)


def test_identical_detections_agree_fully():
    d = _random_dets(30, 0)
    m = get_task("detection").agreement([d], [d], {"postprocess": {"max_detections": 100}}).metrics
    assert m == {"bbox_ap": pytest.approx(1.0), "box_offset_px": 0.0}


def test_a_detection_that_ties_at_the_top_k_cut_is_not_a_mismatch():
    ref = _random_dets(10, 1)
    # the backend's 10th detection is another one, scoring within noise of the reference's last
    got = _dets(np.concatenate([ref.boxes[:9], [[250, 150, 290, 190]]]), np.concatenate([ref.scores[:9], [ref.scores[9] + 1e-4]]),
                np.concatenate([ref.classes[:9], [ref.classes[9]]]))
    a = get_task("detection").agreement([ref], [got], {"postprocess": {"max_detections": 10}})
    assert a.metrics["bbox_ap"] == pytest.approx(1.0) and a.per_input[0]["ties_at_cut"] == 2


def test_a_missing_confident_detection_fails_the_ap_gate():
    ref = _random_dets(10, 2)
    got = _dets(ref.boxes[1:], ref.scores[1:], ref.classes[1:])  # the top-scoring one is gone
    m = get_task("detection").agreement([ref], [got], {"postprocess": {"max_detections": 100}}).metrics
    gate = get_task("detection").resolve_gates()[0]
    assert not gate.passes(m["bbox_ap"])


def test_a_half_pixel_shift_of_large_boxes_fails_on_the_offset_gate():
    ref = _random_dets(20, 4)
    ref.boxes *= 3  # large boxes: a 0.4 px slip barely moves COCO AP
    got = _dets(ref.boxes + 0.4, ref.scores, ref.classes)
    task = get_task("detection")
    m = task.agreement([ref], [got], {"postprocess": {}}).metrics
    failed = [g.metric for g in task.resolve_gates() if not g.passes(m[g.metric])]
    assert failed == ["box_offset_px"] and m["box_offset_px"] == pytest.approx(0.4, abs=1e-4)
    # engines' noise is unbiased: a random 0.05 px jitter passes
    rng = np.random.default_rng(0)
    jitter = _dets(ref.boxes + rng.normal(0, 0.05, ref.boxes.shape), ref.scores, ref.classes)
    assert task.agreement([ref], [jitter], {"postprocess": {}}).metrics["box_offset_px"] < 0.05


def test_masks_are_judged_at_image_size():
    ref = _random_dets(5, 3)
    masks = np.zeros((5, 200, 300), bool)
    for i, (x1, y1, x2, y2) in enumerate(ref.boxes.astype(int)):
        masks[i, y1:y2, x1:x2] = True
    ref.masks = masks
    eroded = masks.copy()
    eroded[:, :, ::2] = False  # half the pixels of every mask lost
    got = _dets(ref.boxes, ref.scores, ref.classes, masks=eroded)
    task = get_task("instance_segmentation")
    ok = task.agreement([ref], [_dets(ref.boxes, ref.scores, ref.classes, masks=masks)], {"postprocess": {}}).metrics
    bad = task.agreement([ref], [got], {"postprocess": {}})
    assert ok["segm_ap"] == pytest.approx(1.0) and bad.metrics["bbox_ap"] == pytest.approx(1.0)
    assert bad.metrics["box_offset_px"] == 0.0
    assert bad.metrics["segm_ap"] < 0.5 and bad.per_input[0]["mask_iou_mean"] == pytest.approx(0.5, abs=0.02)


def _label_maps(seed, flip=0):
    rng = np.random.default_rng(seed)
    m = np.repeat(np.repeat(rng.integers(0, 4, (8, 8)), 25, 0), 25, 1).astype(np.int32)
    out = m.copy()
    out.flat[:flip] = (out.flat[:flip] + 1) % 4
    return Prediction("semantic_segmentation", m.shape, label_map=m), Prediction("semantic_segmentation", m.shape, label_map=out)


def test_semantic_gates_pixel_agreement_and_miou():
    task = get_task("semantic_segmentation")
    gates = task.resolve_gates()
    ref, got = _label_maps(0, flip=10)  # 10 of 40000 pixels: a boundary tie
    m = task.agreement([ref], [got], {"classes": ["a", "b", "c", "d"]}).metrics
    assert all(g.passes(m[g.metric]) for g in gates)
    ref, got = _label_maps(0, flip=2000)
    m = task.agreement([ref], [got], {"classes": ["a", "b", "c", "d"]}).metrics
    assert not any(g.passes(m[g.metric]) for g in gates)


def test_embedding_gates_are_relative_and_per_sample():
    rng = np.random.default_rng(0)
    f = rng.standard_normal(2048).astype(np.float32) * 30  # the scale does not matter
    task = get_task("embedding")
    emb = lambda v: Prediction("embedding", (256, 128), features=v.astype(np.float32))
    close = f * (1 + 1e-5 * rng.standard_normal(2048))
    far = f + 0.01 * np.abs(f).mean() * rng.standard_normal(2048) * 30
    m_close = task.agreement([emb(f), emb(f)], [emb(close), emb(f)], {}).metrics
    m_far = task.agreement([emb(f), emb(f)], [emb(f), emb(far)], {}).metrics
    gates = task.resolve_gates()
    assert all(g.passes(m_close[g.metric]) for g in gates)
    assert not any(g.passes(m_far[g.metric]) for g in gates)


def test_classification_flip_between_tied_classes_is_a_tie_but_a_real_flip_fails():
    task = get_task("classification")
    cls = lambda p: Prediction("classification", (8, 8), probs=np.asarray(p, np.float32))
    tied = task.agreement([cls([0.40000, 0.39995, 0.2])], [cls([0.39995, 0.40000, 0.2])], {})
    assert tied.metrics["top1_agreement"] == 1.0 and tied.notes
    flipped = task.agreement([cls([0.6, 0.3, 0.1])], [cls([0.3, 0.6, 0.1])], {})
    assert flipped.metrics["top1_agreement"] == 0.0


# ---- end to end on the tiny trained detector ------------------------------------------------------

torch = pytest.importorskip("torch")


def vd(*args):
    return subprocess.run([sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True, timeout=900)


def _perturbed_weights(name, out, seed):
    from safetensors.torch import load_file, save_file

    from vdeploy.models.tiny import default_weights

    sd = load_file(str(default_weights(name)))
    g = torch.Generator().manual_seed(seed)
    sd = {k: (v * (1 + 0.03 * torch.randn(v.shape, generator=g)) if v.is_floating_point() and "running" not in k else v)
          for k, v in sd.items()}
    save_file(sd, str(out))
    return out


def _need_tiny(name):
    from vdeploy.models.tiny import default_weights

    if not default_weights(name).is_file():
        pytest.skip(f"no trained weights for tiny:{name}; run scripts/train_tiny.py {name}")


@pytest.fixture(scope="module")
def tiny_det(module_tmp):
    _need_tiny("shapes_det")
    return module_tmp.mktemp("gates")


GATES = {"shapes_det": ["bbox_ap >= 0.99", "segm_ap >= 0.99", "box_offset_px <= 0.1"], "shapes_seg": ["pixel_agreement >= 0.999", "miou >= 0.99"],
         "shapes_cls": ["top1_agreement >= 1", "prob_abs <= 0.001"]}


@pytest.mark.parametrize("name", list(GATES))
@pytest.mark.parametrize("seed", [1, 2])
def test_exports_of_other_weights_pass_and_record_the_gates(tmp_path, name, seed):
    _need_tiny(name)
    w = _perturbed_weights(name, tmp_path / f"w{seed}.safetensors", seed)
    out = tmp_path / f"b{seed}"
    r = vd("export", f"tiny:{name}", "--weights", w, "--format", "onnx,openvino", "--out", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    v = json.loads((out / "deploy.json").read_text())["verification"]
    assert v["passed"] and v["gates"] == GATES[name]
    for b in ("onnxruntime", "openvino"):
        assert v["backends"][b]["passed"] and set(v["backends"][b]["metrics"]) == {g.split()[0] for g in GATES[name]}
    assert "onnxruntime: PASS" in r.stdout and "openvino: PASS" in r.stdout and "PyTorch against itself" in r.stdout


def test_an_impossible_gate_fails_and_an_unknown_gate_is_refused_before_exporting(tiny_det):
    r = vd("export", "tiny:shapes_det", "--format", "onnx", "--out", tiny_det / "x", "--gate", "rel_l2=0")
    assert r.returncode == 2 and "not a gate of the instance_segmentation task" in r.stderr
    assert "Traceback" not in r.stderr and not (tiny_det / "x").exists()


@pytest.mark.skipif(not TAMPER.is_file(), reason=f"{TAMPER} is absent (the acceptance helpers live outside the repository)")
@pytest.mark.parametrize("name, fault", [("shapes_det", "swap-rb"), ("shapes_det", "box-shift"),
                                         ("shapes_seg", "resize-corners"), ("shapes_seg", "swap-rb"),
                                         ("shapes_cls", "swap-rb")])
def test_altered_graphs_fail_verification(tmp_path_factory, name, fault, tmp_path):
    import shutil

    _need_tiny(name)
    src = tmp_path_factory.getbasetemp() / f"tamper-src-{name}"
    if not src.exists():
        r = vd("export", f"tiny:{name}", "--format", "onnx", "--out", src)
        assert r.returncode == 0, r.stderr[-2000:]
    b = tmp_path / "tampered"
    shutil.copytree(src, b)
    subprocess.run([sys.executable, str(TAMPER), str(b), fault], check=True, capture_output=True)
    r = vd("verify", str(b))
    assert r.returncode == 2, r.stdout[-2000:]
    assert "onnxruntime: FAIL" in r.stdout and "Traceback" not in r.stderr


class _OverflowsOnBusyImages(torch.nn.Module):
    """A classifier whose float32 arithmetic overflows on busy images (as non-local blocks with
    stand-in weights do on images unlike their data) and stays finite on flat ones."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        logits = self.fc(x.mean(dim=(2, 3)))
        return logits / (x.std() < 30).float()  # divides by zero, so +-inf, on a busy image


def _overflow_bundle(tmp_path):
    from vdeploy.export import export_bundle
    from vdeploy.models.base import DeployableModel

    spec = {"task": "classification", "classes": list("abcd"),
            "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": "BGR",
                        "shape": [1, 3, "height", "width"]}],
            "preprocess": {"resize": {"type": "none"}, "pad": {"size_divisibility": 0}},
            "postprocess": {"type": "classification"}, "outputs": [{"name": "logits", "shape": [1, 4]}]}
    torch.manual_seed(0)
    dm = DeployableModel(_OverflowsOnBusyImages(), spec, {"source": "test"})
    return dm, export_bundle(dm, tmp_path / "b", ["onnx"], verify=False, log=lambda *a: None)


def test_inputs_where_pytorch_itself_overflows_are_left_out_and_named(tmp_path):
    import cv2

    from vdeploy.errors import VerificationError
    from vdeploy.export.verify import run_verification

    dm, bundle = _overflow_bundle(tmp_path)
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((64, 48, 3), 120, np.uint8))
    lines = []
    record = run_verification(bundle, dm, images=[flat], log=lines.append)
    assert record["passed"] and record["inputs"] == [str(flat)] and len(record["inputs_without_reference"]) == 2
    assert any("PyTorch itself gives non-finite outputs on random" in line for line in lines)
    with pytest.raises(VerificationError, match="on every verification input .* --images"):
        run_verification(bundle, dm, images=[], log=lambda *a: None)


def test_a_backend_is_never_held_to_more_than_pytorch_agrees_with_itself():
    from vdeploy.export.verify import _at_noise_floor
    from vdeploy.runtime.tasks import Gate

    ap, rel = Gate("bbox_ap", 0.99, True), Gate("rel_l2", 1e-3, False)
    assert _at_noise_floor(ap, 0.999) is ap and _at_noise_floor(ap, None) is ap
    assert _at_noise_floor(ap, 0.946).threshold == 0.946  # PyTorch 1 vs 2 threads on a DCN model's noise images
    assert _at_noise_floor(rel, 5e-3).threshold == 5e-3 and _at_noise_floor(rel, 1e-5) is rel
