"""MMSegmentation's plain-ViT family without mmseg: the VisionTransformer, BEiT and MAE backbones,
UPerHead on MultiLevelNeck / Feature2Pyramid, SETR (up, MLA), Segmenter and DPT, built from
mmseg 1.2.2's own zoo configs. Checked for

- the state-dict names and shapes of mmseg's model for every config of vit/, setr/, segmenter/,
  beit/, mae/ and dpt/ (recorded from mmseg 1.2.2 in mmseg_state_dict_keys.json.gz);
- the label maps of the real mmseg 1.2.2 (tests/data/references/mmseg/<case>, made by
  scripts/references/make_mmseg_references.py with the shared stand-in weights and the config
  overrides each manifest lists): pixel agreement >= 0.999 and mIoU >= 0.99;
- export to stock ONNX running on onnxruntime and OpenVINO at sizes other than the export's.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import json
import sys

import numpy as np
import pytest

from conftest import GOLDENS, ROOT, SHARED
from mmseg_label_maps import check_label_map  # noqa: E402

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from vdeploy.errors import ConfigError  # noqa: E402
from vdeploy.frameworks.mmseg.build import build_segmentor, load_weights, model_kwargs, spec_for  # noqa: E402
from vdeploy.frameworks.mmseg.config import load_config  # noqa: E402
from vdeploy.models.mmseg.beit import relative_position_index  # noqa: E402

ZOO = SHARED / "zoo" / "mmseg"
REFS = ROOT / "tests" / "data" / "references" / "mmseg"
KEYS = ROOT / "tests" / "data" / "references" / "mmseg_state_dict_keys.json.gz"
FAMILIES = ("vit/", "setr/", "segmenter/", "beit/", "mae/", "dpt/")
# this family's cases in tests/data/references/mmseg (other families keep theirs there too)
CASES = ["beit_upernet", "dpt", "mae_upernet", "segmenter_mask", "setr_mla", "setr_pup", "vit_upernet_mln"]


def zoo_or_skip():
    if not ZOO.is_dir():
        pytest.skip(f"{ZOO} is absent (the zoo configs live outside the repository)")


def recorded_keys():
    return {k: v for k, v in json.loads(gzip.open(KEYS, "rt").read())["keys"].items() if k.startswith(FAMILIES)}


# --------------------------------------------------------------------------- checkpoint names

@pytest.mark.parametrize("config", sorted(recorded_keys()))
def test_state_dict_names_and_shapes_are_mmsegs(config):
    zoo_or_skip()
    want = {k: tuple(s) for k, s in recorded_keys()[config] if not k.startswith("auxiliary_head.")}
    with torch.device("meta"):  # names and shapes only: no memory for ViT-L's weights
        model = build_segmentor(model_kwargs(load_config(ZOO / config)))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}


def test_every_family_config_was_recorded():
    zoo_or_skip()
    configs = {str(p.relative_to(ZOO)) for f in FAMILIES for p in (ZOO / f).glob("*.py")}
    assert configs and configs <= set(recorded_keys())


def test_beit_relative_position_index_is_offset_arithmetic():
    """Patch pairs share a table entry exactly when their (dy, dx) offsets are equal; the class
    token's three kinds of pairs get the last three entries."""
    gh, gw = 3, 4
    index = relative_position_index(gh, gw)
    pos = [(y, x) for y in range(gh) for x in range(gw)]
    seen = {}
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            seen.setdefault((yi - yj, xi - xj), set()).add(int(index[i + 1, j + 1]))
    assert all(len(v) == 1 for v in seen.values()) and len({min(v) for v in seen.values()}) == len(seen)
    n = (2 * gh - 1) * (2 * gw - 1)
    assert {int(index[0, 1]), int(index[1, 0]), int(index[0, 0])} == {n, n + 1, n + 2}


# --------------------------------------------------------------------------- references

def with_overrides(cfg: dict, overrides: dict) -> dict:
    """The manifest's overrides, as the reference script applied them to mmseg's Config."""
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        if key == "test_resize":
            pipes = [cfg.get("test_pipeline") or [], cfg["test_dataloader"]["dataset"]["pipeline"]]
            for step in (s for p in pipes for s in p if isinstance(s, dict) and s.get("type") == "Resize"):
                step["scale"] = tuple(value)
            continue
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[last] = copy.deepcopy(value)
    return cfg


def checkpoint(case_dir, path):
    """The stand-in checkpoint of a case (what ../shared/acceptance/make_ckpt.py writes)."""
    sys.path.insert(0, str(GOLDENS))
    try:
        from weights import golden_state_dict
    finally:
        sys.path.remove(str(GOLDENS))
    manifest = json.loads((case_dir / "manifest.json").read_text())
    sd = golden_state_dict(manifest["keys"])
    h = hashlib.sha256()
    for k, _ in manifest["keys"]:
        h.update(k.encode())
        h.update(np.ascontiguousarray(sd[k]).tobytes())
    assert h.hexdigest() == manifest["weights_sha256"], "stand-in weights differ from the references' (numpy?)"
    sd.update(np.load(case_dir / "bn_stats.npz"))
    torch.save({"state_dict": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()},
                "meta": {"dataset_meta": {"classes": manifest["classes"]}}}, path)
    return manifest


@pytest.fixture(scope="module")
def reference_models(module_tmp):
    if not (ZOO.is_dir() and GOLDENS.is_dir()):
        pytest.skip("the zoo configs or the shared goldens are absent")
    out, models = module_tmp.mktemp("vit_ckpt"), {}

    def get(case):
        if case not in models:
            manifest = checkpoint(REFS / case, out / f"{case}.pth")
            kw = model_kwargs(with_overrides(load_config(ZOO / manifest["config"]), manifest["overrides"]))
            model = build_segmentor(kw)
            load_weights(model, str(out / f"{case}.pth"))
            models[case] = (model.eval(), spec_for(kw, manifest["classes"]))
        return models[case]
    return get


@pytest.mark.parametrize("image", [pytest.param(i, marks=() if i == "chelsea" else pytest.mark.slow)
                                   for i in ("astronaut", "chelsea", "coffee")])
@pytest.mark.parametrize("case", CASES)
def test_label_map_matches_mmseg(reference_models, case, image):
    """Runtime preprocessing -> native graph -> mmseg's host postprocess, against mmseg's map."""
    model, spec = reference_models(case)
    check_label_map(model, spec, GOLDENS / "images" / f"{image}.png", REFS / case / f"{image}.npz")


@pytest.mark.parametrize("case", CASES)
def test_references_are_a_fair_bar(case):
    """Several classes per image, few near-ties, and mmseg's own map stable under 1e-4 noise."""
    fairness = json.loads((REFS / case / "manifest.json").read_text())["fairness"]
    for image, f in fairness.items():
        # (Segmenter's stand-ins give fewer large regions: at least 3 classes, 2 of them over 1%)
        assert f["classes"] >= 3 and f["classes_over_1pct"] >= 2 and f["margin_under_1e-3"] < 0.01, (image, f)
        assert f["agreement_under_1e-4_backbone_noise"] >= 0.999, (image, f)


# --------------------------------------------------------------------------- stock ONNX / OpenVINO

def export(model, path, hw):
    with torch.no_grad():
        torch.onnx.export(model, (torch.rand(1, 3, *hw) * 255,), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}})


def narrow(depth=4, dims=64, heads=4, out=(0, 1, 2, 3)):
    return {"model.backbone.embed_dims": dims, "model.backbone.num_heads": heads,
            "model.backbone.num_layers": depth, "model.backbone.out_indices": list(out)}


# Narrowed zoo configs (config, overrides, export size, other sizes). Segmenter's and SETR's
# windows are smaller than their crops here, so the position embedding is resized (bicubic,
# bilinear) to each size; BEiT's fixed 64 windows slide 1, 2 and 6 times; DPT and UPerNet-ViT run
# whole images with odd token grids.
EXPORTS = {
    "segmenter": ("segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py",
                  {"model.backbone.num_layers": 2}, (96, 128), [(80, 144), (112, 112)]),
    "setr_mla": ("setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py",
                 dict(narrow(), **{"model.neck.in_channels": [64] * 4, "model.neck.out_channels": 32,
                                   "model.decode_head.in_channels": [32] * 4, "model.decode_head.mla_channels": 16,
                                   "model.decode_head.channels": 64}), (96, 128), [(80, 144)]),
    "beit": ("beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py",
             dict(narrow(), **{"model.backbone.img_size": [64, 64], "model.neck.embed_dim": 64,
                               "model.decode_head.in_channels": [64] * 4, "model.decode_head.channels": 32,
                               "model.test_cfg.crop_size": [64, 64], "model.test_cfg.stride": [43, 43]}),
             (64, 96), [(64, 64), (100, 130)]),
    "dpt": ("dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py",
            dict(narrow(), **{"model.decode_head.in_channels": [64] * 4, "model.decode_head.embed_dims": 64,
                              "model.decode_head.post_process_channels": [16, 32, 64, 64],
                              "model.decode_head.channels": 32}), (64, 64), [(112, 144)]),
    "vit_upernet": ("vit/vit_deit-s16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py",
                    dict(narrow(), **{"model.neck.in_channels": [64] * 4, "model.neck.out_channels": 64,
                                      "model.decode_head.in_channels": [64] * 4, "model.decode_head.channels": 32}),
                    (64, 96), [(80, 144)]),
}


def randomize(model, seed=0):
    """Weights away from their initialisation (zeros for the position embeddings and layer
    scales would hide them) and plausible BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / max(1, t[0].numel()) ** 0.5)
            elif name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_exports_run_on_onnxruntime_and_openvino(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    import onnx
    import warnings

    zoo_or_skip()
    config, overrides, export_hw, sizes = EXPORTS[name]
    model = randomize(build_segmentor(model_kwargs(with_overrides(load_config(ZOO / config), overrides))))
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model, path, export_hw)
    assert {n.domain for n in onnx.load(str(path)).graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for hw in sizes:
        img = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(1)) * 255
        with torch.no_grad():
            want = model(img)[0].numpy()
        for got in (sess.run(None, {"images": img.numpy()})[0], compiled([img.numpy()])[compiled.output(0)]):
            err = float(np.abs(got - want).max() / np.abs(want).max())
            agree = float((got.argmax(1) == want.argmax(1)).mean())
            assert got.shape == want.shape and err < 1e-3 and agree > 0.999, (hw, err, agree)


# --------------------------------------------------------------------------- config edge

@pytest.mark.parametrize("config, edit, message", [
    ("vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py", lambda m: m["backbone"].update(num_fcs=3), "num_fcs"),
    ("vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py",
     lambda m: m["backbone"].update(interpolate_mode="area"), "interpolate_mode"),
    ("vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py", lambda m: m["backbone"].update(out_indices=(3, 12)),
     "out_indices"),
    ("beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py", lambda m: m["neck"].update(rescales=(4, 2, 1, 1)),
     "rescales"),
    ("setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py", lambda m: m["decode_head"].update(channels=500),
     "mla_channels"),
    ("segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py",
     lambda m: m["decode_head"].update(norm_cfg={"type": "BN"}), "LayerNorm"),
])
def test_unsupported_settings_are_one_line_config_errors(config, edit, message):
    zoo_or_skip()
    cfg = load_config(ZOO / config)
    edit(cfg["model"])
    with pytest.raises(ConfigError, match=message) as info:
        with torch.device("meta"):
            build_segmentor(model_kwargs(cfg))
    assert "\n" not in str(info.value)
