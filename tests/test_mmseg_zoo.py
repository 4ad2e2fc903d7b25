"""MMSegmentation zoo architectures without mmseg: SegFormer (MiT), UPerNet-Swin, the
attention heads on ResNet (DANet, CCNet, NonLocal, GCNet, ANN, EMANet, DNLNet, APCNet, DMNet,
ISANet, PSANet, EncNet, UPerNet), HRNet (FCN, OCRNet), OCRNet on ResNet, semantic FPN, UNet,
BiSeNetV1/V2, MobileNetV2, ICNet and FastFCN (JPU). Built from mmseg 1.2.2's own zoo configs; checked for

- the state-dict names and shapes of mmseg's own model (recorded from mmseg 1.2.2 in
  tests/data/references/mmseg_state_dict_keys.json.gz), so that its checkpoints load unchanged;
- the plain-PyTorch stand-ins of mmcv's compiled ops (criss-cross attention, PSA mask) against
  loop transcriptions of mmcv's kernels;
- export to stock ONNX that runs on onnxruntime and OpenVINO, at a size other than the
  export's, agreeing with PyTorch.
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from conftest import ROOT, SHARED

torch = pytest.importorskip("torch")

from vdeploy.frameworks.mmseg.build import build_segmentor, model_kwargs  # noqa: E402
from vdeploy.frameworks.mmseg.config import load_config  # noqa: E402
from vdeploy.models.mmseg.attention_heads import CrissCrossAttention  # noqa: E402
from vdeploy.models.mmseg.psa_head import bilinear, psa_mask  # noqa: E402

ZOO = SHARED / "zoo" / "mmseg"
KEYS = ROOT / "tests" / "data" / "references" / "mmseg_state_dict_keys.json.gz"
CONFIGS = {
    "segformer": "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
    "upernet_swin": "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py",
    "danet": "danet/danet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "ccnet": "ccnet/ccnet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "nonlocal": "nonlocal_net/nonlocal_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "gcnet": "gcnet/gcnet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "ann": "ann/ann_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "emanet": "emanet/emanet_r101-d8_4xb2-80k_cityscapes-512x1024.py",
    "dnlnet": "dnlnet/dnl_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "apcnet": "apcnet/apcnet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "dmnet": "dmnet/dmnet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "isanet": "isanet/isanet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "psanet": "psanet/psanet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "encnet": "encnet/encnet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "upernet_resnet": "upernet/upernet_r101_4xb2-40k_cityscapes-512x1024.py",
    "hrnet_fcn": "hrnet/fcn_hr18s_4xb4-80k_ade20k-512x512.py",
    "ocrnet_hrnet": "ocrnet/ocrnet_hr18s_4xb4-80k_ade20k-512x512.py",
    "ocrnet_resnet": "ocrnet/ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024.py",
    "sem_fpn": "sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py",
    "unet": "unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py",
    "bisenetv2": "bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py",
    "mobilenet_v2": "mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py",
    "bisenetv1": "bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py",
    "icnet": "icnet/icnet_r18-d8_4xb2-80k_cityscapes-832x832.py",
    "fastfcn_jpu": "fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py",
}


def zoo_or_skip():
    if not ZOO.is_dir():
        pytest.skip(f"{ZOO} is absent (the zoo configs live outside the repository)")


def build(name):
    zoo_or_skip()
    kw = model_kwargs(load_config(ZOO / CONFIGS[name]))
    return build_segmentor(kw)


def randomize(model, seed=0):
    """Weights away from their initialisation (mmseg initialises attention residual weights to
    0, which would hide the attention blocks) and BatchNorm statistics of a trained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 0:
                t.fill_(0.5)
            elif name.endswith("bases"):
                continue
            elif t.ndim >= 2 and "relative_position_bias" not in name:
                t.copy_(torch.randn(t.shape, generator=g) / max(1, t[0].numel()) ** 0.5)
            elif name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model


# --------------------------------------------------------------------------- checkpoint names

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_names_and_shapes_are_mmsegs(name):
    recorded = json.loads(gzip.open(KEYS, "rt").read())["keys"][CONFIGS[name]]
    want = {k: tuple(s) for k, s in recorded if not k.startswith("auxiliary_head.")}
    got = {k: tuple(v.shape) for k, v in build(name).state_dict().items()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}


# --------------------------------------------------------------------------- mmcv's compiled ops

def psamask_loops(x, psa_type, mask_h, mask_w):
    """mmcv's psamask_forward CPU kernel, transcribed loop by loop."""
    n, _, h, w = x.shape
    hh, hw = (mask_h - 1) // 2, (mask_w - 1) // 2
    out = torch.zeros(n, h * w, h, w)
    for y in range(h):
        for xx in range(w):
            for i in range(max(0, hh - y), min(mask_h, h + hh - y)):
                for j in range(max(0, hw - xx), min(mask_w, w + hw - xx)):
                    if psa_type == "collect":
                        out[:, (i + y - hh) * w + (j + xx - hw), y, xx] = x[:, i * mask_w + j, y, xx]
                    else:
                        out[:, y * w + xx, i + y - hh, j + xx - hw] = x[:, i * mask_w + j, y, xx]
    return out


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
@pytest.mark.parametrize("hw, mask", [((5, 7), (9, 9)), ((6, 4), (3, 5)), ((12, 13), (7, 7))])
def test_psa_mask_equals_mmcv_kernel(psa_type, hw, mask):
    x = torch.randn(2, mask[0] * mask[1], *hw)
    got = psa_mask(x, mask[0], mask[1], psa_type == "distribute")
    assert torch.equal(got, psamask_loops(x, psa_type, *mask))


def test_criss_cross_attention_equals_definition():
    """Each pixel attends to the pixels of its row and its column (itself once), one softmax."""
    torch.manual_seed(0)
    cca = CrissCrossAttention(16).eval()
    with torch.no_grad():
        cca.gamma.scale.fill_(0.7)
        x = torch.randn(1, 16, 5, 6)
        got = cca(x)
        q, k, v = cca.query_conv(x)[0], cca.key_conv(x)[0], cca.value_conv(x)[0]
        want = torch.empty_like(x[0])
        for i in range(5):
            for j in range(6):
                pos = [(r, j) for r in range(5) if r != i] + [(i, c) for c in range(6)]
                e = torch.stack([(q[:, i, j] * k[:, r, c]).sum() for r, c in pos]).softmax(0)
                want[:, i, j] = sum(e[t] * v[:, r, c] for t, (r, c) in enumerate(pos))
    assert torch.allclose(got[0], 0.7 * want + x[0], atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("src, dst", [((9, 13), (5, 7)), ((8, 12), (4, 6)), ((4, 6), (9, 13))])
def test_matrix_bilinear_equals_interpolate(src, dst, align_corners):
    x = torch.randn(1, 3, *src)
    want = torch.nn.functional.interpolate(x, size=dst, mode="bilinear", align_corners=align_corners)
    assert torch.allclose(bilinear(x, *dst, align_corners), want, atol=1e-5)


# --------------------------------------------------------------------------- stock ONNX / OpenVINO

def export(model, path, hw):
    with torch.no_grad():
        torch.onnx.export(model, (torch.rand(1, 3, *hw) * 255,), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}})


def agreement(a, b):
    """Relative max difference and argmax agreement of two logit maps."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)), float((a.argmax(1) == b.argmax(1)).mean())


# Each ResNet-101 export takes 10-30 s on CPU: the held-out names (DANet, CCNet, OCRNet-HRNet,
# BiSeNetV2), PSANet (its shrink logic) and the small UNet / HRNet-FCN always run, the others
# are marked slow (`-m "not slow"` leaves them out).
QUICK = ("segformer", "upernet_swin", "danet", "ccnet", "psanet", "ocrnet_hrnet", "hrnet_fcn", "bisenetv2", "unet")


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CONFIGS)])
def test_exports_run_on_onnxruntime_and_openvino(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    model = randomize(build(name)).eval()
    path = tmp_path / "m.onnx"
    export(model, path, (64, 96))
    import onnx

    graph = onnx.load(str(path))
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # a size other than the export's, with odd feature sizes (padding / shrink paths; UNet's
    # 64x64 sliding windows keep its multiple-of-16 input whatever the image size)
    for hw in ((72, 104), (64, 96)):
        img = (torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(1)) * 255)
        with torch.no_grad():
            want = model(img)[0].numpy()
        err, agree = agreement(sess.run(None, {"images": img.numpy()})[0], want)
        assert err < 1e-3 and agree > 0.999, (hw, err, agree)
    ov = pytest.importorskip("openvino")
    # f32 as vdeploy's OpenVINO backend asks (the CPU plugin's default may be bf16)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled([img.numpy()])[compiled.output(0)]
    err, agree = agreement(got, want)
    assert err < 1e-3 and agree > 0.999, (err, agree)


# --------------------------------------------------------------------------- config edge

def _with(name, edit):
    zoo_or_skip()
    cfg = load_config(ZOO / CONFIGS[name])
    edit(cfg["model"])
    return cfg


@pytest.mark.parametrize("name, edit, message", [
    # OCRHead refines a previous head's logits: alone it has nothing to refine
    ("ocrnet_hrnet", lambda m: m.update(type="EncoderDecoder", decode_head=m["decode_head"][1]),
     "needs a CascadeEncoderDecoder"),
    ("ocrnet_hrnet", lambda m: m["decode_head"].reverse(), "cannot refine logits"),
    ("hrnet_fcn", lambda m: m["backbone"]["extra"]["stage2"].update(num_blocks=(4,)), "num_branches entries"),
    ("unet", lambda m: m["backbone"].update(upsample_cfg={"type": "PixelShuffle"}), "upsample_cfg"),
    ("sem_fpn", lambda m: m["neck"].update(type="NASFPN"), "model.neck type 'NASFPN' is not supported"),
    ("mobilenet_v2", lambda m: m["backbone"].update(out_indices=(6,)), "at least two"),
])
def test_unsupported_settings_are_one_line_config_errors(name, edit, message):
    from vdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        model_kwargs(_with(name, edit))
    assert "\n" not in str(info.value)
