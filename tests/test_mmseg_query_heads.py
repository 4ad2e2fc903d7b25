"""MaskFormer and Mask2Former (mmseg's MaskFormerHead / Mask2FormerHead on mmdet's pixel decoders
and DETR-style decoders): every zoo config builds, and label maps match the real mmseg 1.2.2's
(tests/data/references/mmseg/<case>, made by scripts/references/make_mmseg_references_query.py:
stand-in weights with the decoder's residual branches and class layer scaled, listed under
`scaled_keys`, so that the queries stay distinct as in a trained model) through the runtime's
preprocessing, the torch graph, onnxruntime and OpenVINO.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import GOLDENS, ROOT, SHARED
from mmseg_label_maps import check_label_map  # noqa: E402

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from test_mmseg_families_b import reference_model  # noqa: E402
from vdeploy.errors import ConfigError  # noqa: E402
from vdeploy.frameworks.mmseg.build import build_segmentor, model_kwargs  # noqa: E402
from vdeploy.frameworks.mmseg.config import load_config  # noqa: E402

REFS = ROOT / "tests" / "data" / "references" / "mmseg"
ZOO = SHARED / "zoo" / "mmseg"
CASES = ("mask2former_r50", "mask2former_swin_t", "maskformer_r50")
IMAGES = ("astronaut", "chelsea", "coffee")


def fairness(case):
    return json.loads((REFS / case / "manifest.json").read_text())["fairness"]


def is_fair(fig):
    """A photo is a bar when it has two classes over 1% of its pixels, under 1.5% of its pixels have
    a top-two margin within 1e-3 of the top score, and mmseg's own map agrees >= 0.995 with itself
    under 1e-4 relative noise on the backbone's output. (Mask2Former's decoder thresholds its masks
    into attention masks at every layer, so its map reacts more to noise than a CNN head's; the
    float differences the comparison meets are about 1e-6 relative, a hundred times smaller.)"""
    return (fig["classes_over_1pct"] >= 2 and fig["relative_margin_under_1e-3"] < 0.015
            and fig["agreement_under_1e-4_backbone_noise"] >= 0.995)


def fair_images(case):
    return [i for i in IMAGES if is_fair(fairness(case)[i])]


@pytest.mark.parametrize("case, image", [
    pytest.param(c, i, marks=() if i == "astronaut" else pytest.mark.slow) for c in CASES for i in fair_images(c)])
def test_label_map_matches_mmseg(case, image):
    model, spec = reference_model(case)
    check_label_map(model, spec, GOLDENS / "images" / f"{image}.png", REFS / case / f"{image}.npz")


@pytest.mark.parametrize("case", CASES)
def test_references_are_a_fair_bar(case):
    """Astronaut a bar with five classes or more; at least two of the three photos a bar."""
    figs = fairness(case)
    assert is_fair(figs["astronaut"]) and figs["astronaut"]["classes_over_1pct"] >= 5, figs["astronaut"]
    assert len(fair_images(case)) >= 2, figs


class _HeadOnly(torch.nn.Module):
    """The decode head as a graph of its own: backbone features and the input image in."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, f0, f1, f2, f3, images):
        return self.head([f0, f1, f2, f3], images.shape[-2:])


def _confident_agreement(got, want):
    """Label agreement on the pixels whose top-two margin in `want` exceeds 1e-3 of the scores'
    spread. The stand-in references leave near-ties (MaskFormer's scores are flat), where any float
    rounding decides the label; those pixels say nothing about the graph."""
    top2 = np.sort(want, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > 1e-3 * (want.max() - want.min())
    return (got.argmax(1) == want.argmax(1))[confident].mean(), confident.mean()


@pytest.mark.parametrize("case", ["mask2former_r50", pytest.param("maskformer_r50", marks=pytest.mark.slow)])
def test_exports_run_on_onnxruntime_and_openvino(tmp_path, case):
    """The head exported on features of a 256 x 320 image and run on those of 224 x 288: scores
    within 1e-4 of the largest and the same labels on the confident pixels (>= 0.999) on both
    engines (a quarter of the pixels confident at least). The whole model is judged on the head alone because the stand-in weights make it
    chaotic: the engines' ResNet features differ from torch's by 6e-5 relative, and Mask2Former's
    thresholded attention masks turn that into 1-2% of flipped labels, as 1e-4 noise on the
    backbone does in mmseg itself (the references' fairness figures)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    model, _ = reference_model(case)
    bgr = cv2.imread(str(GOLDENS / "images" / "chelsea.png"))

    def inputs(h, w):
        img = torch.from_numpy(cv2.resize(bgr, (w, h))[:, :, ::-1].transpose(2, 0, 1).astype(np.float32).copy())[None]
        with torch.no_grad():
            return [*model.backbone((img - model.mean) / model.std), img]

    names = ["f0", "f1", "f2", "f3", "images"]
    path = tmp_path / "head.onnx"
    head = _HeadOnly(model.decode_head).eval()
    with torch.no_grad():
        torch.onnx.export(head, tuple(inputs(256, 320)), str(path), dynamo=False, opset_version=17, input_names=names,
                          output_names=["logits"], dynamic_axes={n: {2: f"h_{n}", 3: f"w_{n}"} for n in names})
    assert {n.domain for n in onnx.load(str(path)).graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    feed = inputs(224, 288)
    with torch.no_grad():
        want = head(*feed).numpy()
    arrays = [t.numpy() for t in feed]
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for got in (sess.run(None, dict(zip(names, arrays)))[0], compiled(arrays)[compiled.output(0)]):
        assert got.shape == want.shape == (1, 150, 224, 288)
        assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
        agreement, share = _confident_agreement(got, want)
        assert agreement >= 0.999 and share > 0.25, (agreement, share)  # MaskFormer: 43% confident


# --------------------------------------------------------------------------- zoo and config edge

def zoo_configs():
    if not ZOO.is_dir():
        return []
    return sorted(p.relative_to(ZOO).as_posix() for d in ("mask2former", "maskformer") for p in (ZOO / d).glob("*.py"))


@pytest.mark.parametrize("config", zoo_configs())
def test_every_zoo_config_builds(config):
    model = build_segmentor(model_kwargs(load_config(ZOO / config)))
    names = {k.split(".")[1] for k in model.state_dict() if k.startswith("decode_head.")}
    assert {"pixel_decoder", "transformer_decoder", "cls_embed", "mask_embed", "query_embed"} <= names


def _config(**head_changes):
    if not ZOO.is_dir():
        pytest.skip("../shared/zoo not present")
    cfg = load_config(ZOO / "mask2former" / "mask2former_r50_8xb2-160k_ade20k-512x512.py")
    head = cfg["model"]["decode_head"]
    for dotted, value in head_changes.items():
        *parents, last = dotted.split("__")
        node = head
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


@pytest.mark.parametrize("change, message", [
    ({"pixel_decoder__type": "mmdet.TransformerEncoderPixelDecoder"}, "pixel_decoder type"),
    ({"pixel_decoder__encoder__layer_cfg__self_attn_cfg__value_proj_ratio": 0.5}, "value_proj_ratio"),
    ({"transformer_decoder__layer_cfg__ffn_cfg__num_fcs": 3}, "two-layer FFNs"),
    ({"transformer_decoder__layer_cfg__cross_attn_cfg__num_heads": 4}, "same embed_dims and num_heads"),
    ({"num_queries": 0}, "num_queries must be a positive int"),
    ({"pixel_decoder__num_outs": 2}, "num_outs must equal"),
])
def test_unsupported_settings_are_refused_in_one_line(change, message):
    with pytest.raises(ConfigError, match=message) as err:
        model_kwargs(_config(**change))
    assert "\n" not in str(err.value)
