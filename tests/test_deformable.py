"""Deformable convolutions (detectron2 ResNet, centermask2 VoVNet) and CenterMask-Lite MobileNetV2.

The export form (GridSample + Conv, standard ONNX operators) is checked against torchvision's
`deform_conv2d`, which is what the PyTorch side runs and what detectron2 runs on CPU; whole models
are checked against the real frameworks' detections (tests/data/references, made by
scripts/references/make_d2_references.py; their checkpoints need ../shared, so they skip without).
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDENS, SHARED, goldens_or_skip

torch = pytest.importorskip("torch")
tv_ops = pytest.importorskip("torchvision.ops")

from vdeploy.models.detectron2.deform_conv import DeformConv, deform_conv2d_sampled  # noqa: E402

REFS = Path(__file__).parent / "data" / "references"
IMAGES = ("astronaut", "chelsea", "coffee")


@pytest.mark.parametrize("c, o, groups, dg, stride, pad, dil, modulated, hw", [
    (16, 16, 1, 1, 1, 1, 1, False, (13, 17)),
    (16, 8, 4, 2, 2, 1, 1, True, (15, 12)),   # ResNeXt groups, two offset groups, strided
    (8, 8, 1, 1, 1, 2, 2, True, (9, 11)),     # dilated (DC5)
])
def test_sampled_form_equals_torchvision(c, o, groups, dg, stride, pad, dil, modulated, hw):
    g = torch.Generator().manual_seed(0)
    h, w = hw
    x = torch.randn(2, c, h, w, generator=g)
    ho, wo = (h + 2 * pad - 2 * dil - 1) // stride + 1, (w + 2 * pad - 2 * dil - 1) // stride + 1
    # offsets of several pixels push samples across the border, where zeros must be mixed in
    offset = torch.randn(2, 2 * dg * 9, ho, wo, generator=g) * 3
    mask = torch.rand(2, dg * 9, ho, wo, generator=g) if modulated else None
    weight, bias = torch.randn(o, c // groups, 3, 3, generator=g), torch.randn(o, generator=g)
    want = tv_ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    got = deform_conv2d_sampled(x, offset, weight, bias, mask, stride=(stride,) * 2, padding=(pad,) * 2,
                                dilation=(dil,) * 2, groups=groups)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


class _Block(torch.nn.Module):
    def __init__(self, modulated: bool):
        super().__init__()
        from vdeploy.models.detectron2.deform_conv import split_offset_mask

        self.split = split_offset_mask
        self.modulated = modulated
        self.offset = torch.nn.Conv2d(8, 27 if modulated else 18, 3, 1, 1)
        torch.nn.init.normal_(self.offset.weight, std=0.3)
        self.conv = DeformConv(8, 8, 3, padding=1)

    def forward(self, x):
        offset, mask = self.split(self.offset(x), self.modulated)
        return self.conv(x, offset, mask)


@pytest.mark.parametrize("modulated", [False, True])
def test_export_uses_standard_operators_that_both_runtimes_run(tmp_path, modulated):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    torch.manual_seed(0)
    block = _Block(modulated).eval()
    x = torch.randn(1, 8, 12, 16)
    with torch.no_grad():
        want = block(x).numpy()
    path = tmp_path / "dcn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (torch.randn(1, 8, 20, 24),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GridSample" in ops and "DeformConv" not in ops
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # f32 as vdeploy's OpenVINO backend asks (a CPU with bf16 units would otherwise round to bf16)
    got = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_deformable_stages_follow_detectron2_config(tmp_path):
    from vdeploy.errors import ConfigError
    from vdeploy.frameworks.detectron2.build import resnet_from_cfg
    from vdeploy.frameworks.detectron2.config import load_config

    cfg = tmp_path / "dcn.yaml"
    cfg.write_text("MODEL:\n  RESNETS:\n    DEPTH: 50\n    OUT_FEATURES: [res3, res5]\n"
                   "    DEFORM_ON_PER_STAGE: [False, True, False, True]\n    DEFORM_MODULATED: True\n"
                   "    DEFORM_NUM_GROUPS: 2\n")
    keys = resnet_from_cfg(load_config(cfg), 3).state_dict()
    assert keys["res3.0.conv2_offset.weight"].shape == (27 * 2, 128, 3, 3)
    assert "res3.0.conv2_offset.bias" in keys and "res5.2.conv2.norm.running_var" in keys
    assert "res2.0.conv2_offset.weight" not in keys and "res4.0.conv2_offset.weight" not in keys
    cfg.write_text("MODEL:\n  RESNETS:\n    DEPTH: 18\n    RES2_OUT_CHANNELS: 64\n"
                   "    DEFORM_ON_PER_STAGE: [False, True, True, True]\n")
    with pytest.raises(ConfigError, match="DEFORM_ON_PER_STAGE is not supported for ResNet-18/34"):
        resnet_from_cfg(load_config(cfg), 3)


# ----------------------------------------------------------------------------- against the frameworks

def _ref_cases():
    return sorted(p for p in REFS.glob("*/*") if (p / "final.json").is_file() and p.parent.name != "fastreid")


@pytest.fixture(scope="module", params=[p.parent.name + "/" + p.name for p in _ref_cases()] or ["none"])
def reference_predictions(request, module_tmp):
    if request.param == "none":
        pytest.skip(f"no detection references under {REFS}")
    goldens_or_skip()
    from vdeploy.api import open_predictor
    from vdeploy.runtime.io import read_image
    from vdeploy.runtime.results import to_coco_results

    case = REFS / request.param
    family = request.param.split("/")[0]
    manifest = json.loads((case / "manifest.json").read_text())
    config = GOLDENS / family / "configs" / manifest["config"]
    if not config.is_file():
        config = SHARED / "zoo" / family / manifest["config"]
    ckpt = module_tmp.mktemp("ref") / "model_final.pth"
    subprocess.run([sys.executable, str(SHARED / "acceptance" / "make_ckpt.py"), str(case), str(ckpt)],
                   check=True, capture_output=True)
    scale = manifest.get("offset_scale")
    if scale:  # offset convs scaled to trained-like offsets (see make_d2_references.py)
        sd = torch.load(ckpt)["model"]
        for k in sd:
            if any(s in k for s in scale["keys_containing"]):
                sd[k] = sd[k] * scale["scale"]
        torch.save({"model": sd}, ckpt)
    predictor = open_predictor(str(config), str(ckpt))
    preds = []
    for name in IMAGES:
        preds += to_coco_results(predictor.predict(read_image(GOLDENS / "images" / f"{name}.png")), f"{name}.png")
    ref = [dict(r, file_name=r["image"], bbox=[r["bbox"][0], r["bbox"][1], r["bbox"][2] - r["bbox"][0],
                                                r["bbox"][3] - r["bbox"][1]])
           for r in json.loads((case / "final.json").read_text())]
    return request.param, ref, preds


@pytest.mark.parametrize("kind", ["bbox", "segm"])
def test_detections_match_the_framework(reference_predictions, kind):
    from coco_ap import ap_against

    name, ref, preds = reference_predictions
    assert ap_against(ref, preds, kind) >= 0.99, name
