"""Label maps of the MMSegmentation families vdeploy built first — SegFormer (MiT), UPerNet on
Swin, OCRNet on HRNet, BiSeNetV2, the ResNet-50 attention and context heads (DANet, ISANet,
EMANet, DNLNet, GCNet, ANN, APCNet, DMNet, EncNet, CCNet, PSANet), UNet, ICNet, BiSeNetV1,
MobileNetV2 — against the real mmseg 1.2.2 (tests/data/references/mmseg/<case>, made by
scripts/references/make_mmseg_references_classic.py with the shared stand-in weights, BatchNorm
statistics calibrated on the first image and a small test size): pixel agreement >= 0.999 and
mIoU >= 0.99 through the runtime's preprocessing, the torch graph and mmseg's host
postprocessing. Their state-dict names and their exports are checked in test_mmseg_zoo.py.
PSANet's reference runs mmcv 2.1.0's own C++ PSA mask op, built for CPU in the scratch venv
(mmcv-lite has no compiled ops; how, in the script's docstring).
"""
from __future__ import annotations

import json

import pytest

from conftest import GOLDENS, ROOT
from mmseg_label_maps import check_label_map  # noqa: E402

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from test_mmseg_families_b import reference_model  # noqa: E402

REFS = ROOT / "tests" / "data" / "references" / "mmseg"
# priority order: the families users deploy most first
CASES = ("segformer_b0", "upernet_swin_t", "ocrnet_hr18s", "bisenetv2", "danet_r50", "isanet_r50", "emanet_r50",
         "dnlnet_r50", "gcnet_r50", "ann_r50", "apcnet_r50", "dmnet_r50", "encnet_r50", "unet_s5_d16_fcn",
         "icnet_r50", "bisenetv1_r18", "mobilenet_v2_deeplabv3plus", "ccnet_r50",
         "psanet_r50")
IMAGES = ("astronaut", "chelsea", "coffee")


def fairness(case):
    return json.loads((REFS / case / "manifest.json").read_text())["fairness"]


def fair_images(case):
    """The images on which the case's reference is a bar at all (two classes over 1% of the
    pixels): with stand-in weights one class can take a whole photo (OCRNet on coffee)."""
    return [i for i in IMAGES if fairness(case)[i]["classes_over_1pct"] >= 2]


# astronaut for every case by default; the other photos marked slow
@pytest.mark.parametrize("case, image", [
    pytest.param(c, i, marks=() if i == "astronaut" else pytest.mark.slow) for c in CASES for i in fair_images(c)])
def test_label_map_matches_mmseg(case, image):
    """Runtime preprocess -> torch graph -> mmseg's host postprocess against mmseg's label map."""
    model, spec = reference_model(case)
    check_label_map(model, spec, GOLDENS / "images" / f"{image}.png", REFS / case / f"{image}.npz")


@pytest.mark.parametrize("case", CASES)
def test_references_are_a_fair_bar(case):
    """Several classes on astronaut, top-two margins that do not vanish, and mmseg's own map
    stable under 1e-4 relative noise on its backbone's output."""
    fair = fairness(case)["astronaut"]
    assert fair["classes_over_1pct"] >= 5 and fair["margin_under_1e-3"] < 0.002, fair
    assert fair["agreement_under_1e-4_backbone_noise"] >= 0.999, fair
