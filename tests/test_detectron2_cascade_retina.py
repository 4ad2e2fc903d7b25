"""Cascade Mask R-CNN and RetinaNet, native, against the real detectron2 (goldens), stage by stage,
and through ONNX.

Both models are built exactly as the CLI builds them: the real config file with its `_BASE_`
chain (RetinaNet's anchor sizes use the `!!python/object/apply:eval` tag) and a checkpoint saved
the way detectron2 saves it. Per image the backbone runs once (module-scoped cache) and every
stage the goldens record is compared.

Tolerances. The goldens README measured float32 CPU agreement of about 1e-4 relative; each
bound below is that figure times a small margin, stated where it is used, and far below what a
real bug produces (a wrong stage weight, a missing clip between stages or an anchor off by half a
stride moves boxes by pixels; a wrong prior or permutation scrambles the dense outputs by O(1)).
"""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT.parent / "shared" / "goldens"
D2 = GOLDENS / "detectron2"
IMAGES = ("astronaut", "chelsea", "coffee")
CASCADE = "cascade_mask_rcnn_R_50_FPN_3x"
RETINANET = "retinanet_R_50_FPN_3x"
CONFIGS = {CASCADE: "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
           RETINANET: "COCO-Detection/retinanet_R_50_FPN_3x.yaml"}

pytestmark = pytest.mark.skipif(not D2.is_dir(), reason=f"detectron2 goldens not found at {D2}")


# --------------------------------------------------------------------------- building and running

@pytest.fixture(scope="module")
def models(module_tmp):
    """Case -> DeployableModel, from the real config and a make_ckpt.py checkpoint (built once)."""
    from vdeploy.frameworks.detectron2.build import build

    folder = module_tmp.mktemp("d2_cascade_retina")
    built = {}

    def get(case: str):
        if case not in built:
            ckpt = folder / f"{case}.pth"
            subprocess.run([sys.executable, str(GOLDENS.parent / "acceptance" / "make_ckpt.py"), str(D2 / case),
                            str(ckpt)], check=True, capture_output=True)
            # build() loads strictly: a missing weight (a misnamed stage module) raises here.
            built[case] = build(str(D2 / "configs" / CONFIGS[case]), str(ckpt))
        return built[case]

    return get


def padded_input(resized_bgr: np.ndarray, spec: dict):
    """What the host feeds the graph: raw pixels padded bottom/right with the pixel mean."""
    h, w = resized_bgr.shape[:2]
    div = spec["preprocess"]["pad"]["size_divisibility"] or 1
    hp, wp = -(-h // div) * div, -(-w // div) * div
    mean = torch.tensor(spec["preprocess"]["normalize"]["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    images = mean.expand(1, 3, hp, wp).clone()
    images[0, :, :h, :w] = torch.from_numpy(resized_bgr).permute(2, 0, 1).float()
    return images, torch.tensor([[h, w]], dtype=torch.float32)


@pytest.fixture(scope="module")
def run(models):
    """(case, image) -> outputs of every stage the goldens record, computed once."""
    cache = {}

    def get(case: str, image: str) -> dict:
        if (case, image) in cache:
            return cache[(case, image)]
        m = models(case).module
        g = np.load(D2 / case / f"{image}.npz")
        images, im_info = padded_input(g["resized_bgr"], models(case).spec)
        image_hw = im_info[0]
        out = {"golden": g}
        with torch.no_grad():
            feats = out["features"] = m.features(images)
            if case == RETINANET:
                levels = [feats[f] for f in m.head_in_features]
                logits, deltas = out["dense"] = m.head(levels)
                out["det"] = m.detect(logits, deltas, m.anchors(levels))
            else:
                heads = m.roi_heads
                proposals, logits = out["proposals"] = m.proposal_generator(feats, image_hw)
                out["det"] = heads(feats, proposals, image_hw)
                for k in range(heads.num_stages):
                    boxes_in = torch.from_numpy(g[f"roi{k}/boxes_in"])
                    out[f"roi{k}"] = heads.box_outputs(feats, boxes_in, k)
                    deltas_in = torch.from_numpy(g[f"roi{k}/deltas"])
                    out[f"next{k}"] = heads.stage_inputs(deltas_in, boxes_in, k, image_hw)
        cache[(case, image)] = out
        return out

    return get


def rel_err(a, b) -> float:
    """Max abs difference relative to the reference's largest magnitude."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def to_original(boxes: np.ndarray, g) -> np.ndarray:
    """Our boxes (resized-image pixels) scaled and clipped as detectron2's `detector_postprocess`.

    The goldens' `det/boxes` are in original-image pixels (detectron2 scales and clips the
    Instances in place after the recording hook), with empty boxes still present (RetinaNet on
    astronaut has eight), so no box is dropped here.
    """
    (oh, ow), (rh, rw) = g["orig_hw"].tolist(), g["resized_hw"].tolist()
    scale = np.array([ow / rw, oh / rh, ow / rw, oh / rh], np.float32)
    return np.clip(boxes * scale, 0, np.array([ow, oh, ow, oh], np.float32))


def match(ref_boxes, ref_classes, boxes, classes, tol: float) -> np.ndarray:
    """For each reference detection, the index of ours with its class and the nearest box (L-inf
    distance < tol), else -1. Distance rather than IoU: clipped boxes may have zero area."""
    if len(boxes) == 0:
        return np.full(len(ref_boxes), -1)
    dist = np.abs(ref_boxes[:, None, :] - boxes[None, :, :]).max(-1)
    dist[ref_classes[:, None] != classes[None, :]] = np.inf
    idx = dist.argmin(1)
    return np.where(dist[np.arange(len(ref_boxes)), idx] < tol, idx, -1)


def above_tail(scores: np.ndarray, margin: float) -> np.ndarray:
    """Detections scoring clearly above the last kept one: only those at the top-k cut (ties or
    near-ties) may legitimately be exchanged for others."""
    return scores > scores[-1] + margin if len(scores) else np.zeros(0, bool)


def assert_masks_close(probs: np.ndarray, ref: np.ndarray) -> None:
    """Mask probabilities of matched detections.

    The stand-in mask logits reach ~350, so the probabilities are steep functions of the box:
    moving a box by 3e-3 px changes some by 0.03, and boxes that went through three cascade
    stages differ by ~5e-3 px between implementations. So the worst pixel is bounded by that
    sensitivity, and what gets pasted (the mask at 0.5) tightly; golden float16 adds 2.4e-4.
    """
    assert probs.shape == ref.shape
    assert np.abs(probs - ref).max() < 0.05
    assert np.abs(probs - ref).mean() < 2e-4
    assert ((probs > 0.5) == (ref > 0.5)).mean() > 0.9999


def params(*cases):
    return [pytest.param(c, im, id=f"{c.split('_')[0]}-{im}") for c in cases for im in IMAGES]


# --------------------------------------------------------------------------- stages

@pytest.mark.parametrize("case,image", params(CASCADE, RETINANET))
def test_features(run, case, image):
    r = run(case, image)
    g = r["golden"]
    levels = sorted(k.split("/")[1] for k in g.files if k.startswith("feat/") and k.endswith("/shape"))
    assert sorted(r["features"]) == levels  # RetinaNet: p3-p7 (P6 from res5); cascade: p2-p6
    for lvl in levels:
        f = r["features"][lvl][0]
        assert list(r["features"][lvl].shape) == g[f"feat/{lvl}/shape"].tolist()
        # Means of a float32 conv stack: README's ~1e-4 relative, x3 margin (measured <= 5e-5).
        assert rel_err(f.mean(dim=(1, 2)), g[f"feat/{lvl}/mean_c"]) < 3e-4, lvl
        assert rel_err(f.mean(dim=0), g[f"feat/{lvl}/mean_hw"]) < 3e-4, lvl


@pytest.mark.parametrize("case,image", params(CASCADE))
def test_cascade_proposals(run, case, image):
    r = run(case, image)
    boxes, logits = (t.numpy() for t in r["proposals"])
    g = r["golden"]
    gb, gl = g["proposals/proposal_boxes"], g["proposals/objectness_logits"]
    assert boxes.shape == gb.shape
    # Sorted logits compare value by value; they reach ~50, so 1e-5 relative noise is ~5e-4.
    assert np.abs(logits - gl).max() < 1e-3
    # Near-equal logits may swap, so boxes are matched (class-free, 0.01 px); only the last-ranked
    # ones may be exchanged with boxes just below the post-NMS cut.
    found = match(gb, np.zeros(len(gb)), boxes, np.zeros(len(boxes)), 0.01) >= 0
    assert found[:900].all() and found.mean() >= 0.995, f"{(~found).sum()} proposals unmatched"


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("case,image", params(CASCADE))
def test_cascade_stage_outputs(run, case, image, stage):
    """Each stage's box head + predictor on detectron2's own input boxes for that stage."""
    r = run(case, image)
    logits, deltas = (t.numpy() for t in r[f"roi{stage}"])
    g = r["golden"]
    # Same boxes in: ROIAlign level assignment + this stage's fc head. ~1e-4 relative, x3 margin.
    assert rel_err(logits, g[f"roi{stage}/cls_logits"]) < 3e-4
    assert rel_err(deltas, g[f"roi{stage}/deltas"]) < 3e-4


@pytest.mark.parametrize("stage", [0, 1])
@pytest.mark.parametrize("case,image", params(CASCADE))
def test_cascade_stage_handover(run, case, image, stage):
    """Stage k+1's input boxes = stage k's regression (its own weights) of its inputs, clipped."""
    r = run(case, image)
    g = r["golden"]
    # Same float32 arithmetic on identical inputs: only exp()/rounding differences, ~1e-5 px on
    # ~1000 px coordinates. A stage using another stage's weights is off by many pixels.
    assert np.abs(r[f"next{stage}"].numpy() - g[f"roi{stage + 1}/boxes_in"]).max() < 1e-3


@pytest.mark.parametrize("case,image", params(RETINANET))
def test_retinanet_head(run, case, image):
    r = run(case, image)
    g = r["golden"]
    logits, deltas = r["dense"]
    assert len(logits) == 5
    for j, (cls, box) in enumerate(zip(logits, deltas)):
        # Four 3x3 convs more than the features: the same ~1e-4 relative, x3 margin.
        assert rel_err(cls[0].max(dim=0).values, g[f"dense/{j}/cls_max_hw"]) < 3e-4, j
        assert rel_err(cls[0].mean(dim=(1, 2)), g[f"dense/{j}/cls_mean_c"]) < 3e-4, j
        assert rel_err(box[0].mean(dim=(1, 2)), g[f"dense/{j}/box_mean_c"]) < 3e-4, j


@pytest.mark.parametrize("case,image", params(CASCADE, RETINANET))
def test_detections(run, case, image):
    r = run(case, image)
    g = r["golden"]
    boxes, scores, classes = (t.numpy() for t in r["det"][:3])
    assert r["det"][2].dtype == torch.int64
    gb, gs, gc = g["det/boxes"], g["det/scores"], g["det/classes"]
    assert len(boxes) == len(gb)
    # Boxes: 1e-4 relative of ~1000 px is 0.1 px before the orig/resized scale; the README's AP
    # cliff is a 0.3 px offset. Measured <= 5e-3 px.
    idx = match(gb, gc, to_original(boxes, g), classes, 0.05)
    found = idx >= 0
    assert found[above_tail(gs, 1e-3)].all(), f"{(~found).sum()} golden detections unmatched"
    assert found.mean() >= 0.97
    # Scores: sigmoid / mean of three softmaxes of logits with ~1e-4 noise. Measured <= 2e-4.
    assert np.abs(scores[idx[found]] - gs[found]).max() < 1e-3
    if case == CASCADE:
        probs = r["det"][3].numpy()
        assert probs.shape == (len(boxes), 28, 28)
        # Measured: max 0.012, mean 3e-5, 1 of 78400 pixels flips at 0.5 (astronaut).
        assert_masks_close(probs[idx[found]], g["det/mask_probs"].astype(np.float32)[found])


# --------------------------------------------------------------------------- ONNX

def _small_input(case: str, image: str, short: int, spec: dict):
    """The golden image resized as if MIN_SIZE_TEST were `short` (keeps the export test fast)."""
    import cv2

    img = np.load(D2 / case / f"{image}.npz")["resized_bgr"]
    h, w = img.shape[:2]
    s = short / min(h, w)
    img = cv2.resize(img, (int(w * s + 0.5), int(h * s + 0.5)), interpolation=cv2.INTER_LINEAR)
    return padded_input(img, spec)


@pytest.mark.parametrize("case", [CASCADE, RETINANET])
def test_onnx_export_dynamic_size(models, case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    dm = models(case)
    m = dm.module
    input_names = [i["name"] for i in dm.spec["inputs"]]
    output_names = [o["name"] for o in dm.spec["outputs"]]
    if not getattr(m, "takes_im_info", True):
        input_names = ["images"]  # RetinaNet's graph has no im_info input (see RetinaNet.takes_im_info)
    trace_args = _small_input(case, "astronaut", 160, dm.spec)
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-derived values
        torch.onnx.export(m, trace_args[:len(input_names)], str(path), dynamo=False, opset_version=17,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes={"images": {2: "height", 3: "width"},
                                        **{n: {0: "N"} for n in output_names}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == input_names

    # Another image at another size and aspect ratio than the traced one.
    images, im_info = _small_input(case, "chelsea", 192, dm.spec)
    assert images.shape[-2:] != trace_args[0].shape[-2:]
    feed = {"images": images.numpy(), "im_info": im_info.numpy()}
    got = session.run(None, {n: feed[n] for n in input_names})
    with torch.no_grad():
        want = [t.numpy() for t in m(images, im_info)]
    assert len(got) == len(want) and len(want[0]) > 0
    assert len(got[0]) == len(want[0])
    assert got[2].dtype == np.int64
    # The stand-in weights saturate some stage probabilities, so many cascade scores tie at
    # exactly 1/3 at the end of the list: which tied box makes the top-100 cut is arbitrary.
    keep = above_tail(want[1], 1e-4)
    # onnxruntime's convolutions sum in another order: 1e-4 relative of the largest coordinate
    # (the stand-in weights regress some boxes far beyond a small image).
    tol = 1e-4 * np.abs(want[0]).max() + 1e-3
    idx = match(want[0][keep], want[2][keep], got[0], got[2], tol)
    assert (idx >= 0).all(), f"{(idx < 0).sum()} of {keep.sum()} PyTorch detections not found in onnxruntime's"
    assert np.abs(got[1][idx] - want[1][keep]).max() < 1e-4
    if len(want) > 3:
        assert_masks_close(got[3][idx], want[3][keep])
