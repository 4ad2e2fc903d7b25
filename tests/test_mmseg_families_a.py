"""MMSegmentation's Twins (PCPVT, SVT), ConvNeXt, PoolFormer and SegNeXt (MSCAN + LightHamHead)
without mmseg, from mmseg 1.2.2's own zoo configs:

- every config of these families builds with the state-dict names and shapes of mmseg's own model
  (recorded from mmseg 1.2.2 + mmpretrain in tests/data/references/mmseg_state_dict_keys.json.gz);
- label maps equal the real mmseg's (tests/data/references/mmseg/<case>/, made by
  scripts/references/make_mmseg_references_cnn.py with the shared stand-in weights, at a small
  test size): pixel agreement >= 0.999 and mIoU >= 0.99 through the deployed pre-processing, the
  graph and mmseg's host post-processing;
- exports to stock ONNX run on onnxruntime and OpenVINO at a size other than the export's,
  agreeing with PyTorch.
"""
from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pytest

from conftest import GOLDENS, ROOT, SHARED
from mmseg_label_maps import label_map_agreement  # noqa: E402

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from vdeploy.frameworks.mmseg.build import build_segmentor, load_weights, model_kwargs, spec_for  # noqa: E402
from vdeploy.frameworks.mmseg.config import load_config  # noqa: E402

ZOO = SHARED / "zoo" / "mmseg"
REFS = ROOT / "tests" / "data" / "references" / "mmseg"
KEYS = ROOT / "tests" / "data" / "references" / "mmseg_state_dict_keys.json.gz"
FAMILIES = ("twins", "convnext", "poolformer", "segnext")
CASES = ("twins_pcpvt_fpn", "twins_svt_uperhead", "convnext_upernet", "poolformer_fpn", "segnext_mscan_ham")


def zoo_or_skip():
    if not ZOO.is_dir():
        pytest.skip(f"{ZOO} is absent (the zoo configs live outside the repository)")


def family_configs():
    return sorted(str(p.relative_to(ZOO)) for f in FAMILIES for p in (ZOO / f).glob("*.py")) if ZOO.is_dir() else []


# --------------------------------------------------------------------------- checkpoint names

def test_every_config_of_these_families_has_recorded_keys():
    zoo_or_skip()
    recorded = json.loads(gzip.open(KEYS, "rt").read())["keys"]
    configs = family_configs()
    assert len(configs) == 27 and not [c for c in configs if c not in recorded]


@pytest.mark.parametrize("config", family_configs() or ["(zoo absent)"])
def test_state_dict_names_and_shapes_are_mmsegs(config):
    zoo_or_skip()
    recorded = json.loads(gzip.open(KEYS, "rt").read())["keys"][config]
    want = {k: tuple(s) for k, s in recorded if not k.startswith("auxiliary_head.")}
    with torch.device("meta"):  # names and shapes only: no memory for the large ones
        model = build_segmentor(model_kwargs(load_config(ZOO / config)))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}


# --------------------------------------------------------------------------- pieces against their definitions

@pytest.mark.parametrize("src, dst", [((150, 241), (160, 256)), ((37, 50), (64, 64)), ((100, 90), (64, 96)),
                                      ((5, 7), (32, 32)), ((64, 64), (64, 64)), ((77, 33), (96, 64))])
def test_resize_to_multiple_is_bit_exact_opencv(src, dst):
    """PoolFormer's ResizeToMultiple: OpenCV's 8-bit INTER_LINEAR, to the level."""
    from vdeploy.models.mmseg.multiple_of import cv2_linear_u8

    img = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    want = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_LINEAR)
    got = cv2_linear_u8(torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32)), *dst)
    assert np.array_equal(got[0].numpy().transpose(1, 2, 0).astype(np.uint8), want)


def test_ham_bases_are_what_mmseg_draws_after_manual_seed():
    from vdeploy.models.mmseg.ham_head import NMF2D

    nmf = NMF2D(64, md_s=2, md_r=8, steps=7, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        want = torch.nn.functional.normalize(torch.rand((2, 32, 8)), dim=1)  # mmseg: rand((B*S, D, R)), B = 1
    assert torch.equal(nmf.init_bases, want) and "init_bases" not in nmf.state_dict()


def test_nmf_multiplicative_updates_reduce_the_reconstruction_error():
    """The factorisation does what NMF does: more steps, a closer non-negative reconstruction."""
    from vdeploy.models.mmseg.ham_head import NMF2D

    x = torch.rand(1, 32, 12, 10, generator=torch.Generator().manual_seed(0))
    errors = [float((NMF2D(32, 1, 4, steps)(x) - x).norm()) for steps in (0, 2, 7, 30)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


# --------------------------------------------------------------------------- conformance with mmseg

def small_config(manifest):
    """The zoo config with the reference's test size (its `Resize` scale)."""
    cfg = load_config(ZOO / manifest["config"])
    pipelines = [cfg.get("test_pipeline"), ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("pipeline")]
    for pipeline in pipelines:
        for step in pipeline or []:
            if isinstance(step, dict) and step.get("type") == "Resize":
                step["scale"] = tuple(manifest["test_resize_scale"])
    return cfg


@pytest.fixture(scope="module")
def reference_models(module_tmp):
    zoo_or_skip()
    sys.path.insert(0, str(GOLDENS))
    from weights import golden_state_dict

    out, models = module_tmp.mktemp("mmseg_families_a"), {}

    def get(case):
        if case not in models:
            manifest = json.loads((REFS / case / "manifest.json").read_text())
            sd = {k: torch.from_numpy(v) for k, v in golden_state_dict(manifest["keys"]).items()}
            sd.update({k: torch.from_numpy(v) for k, v in np.load(REFS / case / "bn_stats.npz").items()})
            torch.save({"state_dict": sd, "meta": {}}, out / f"{case}.pth")
            kw = model_kwargs(small_config(manifest))
            model = build_segmentor(kw)
            load_weights(model, str(out / f"{case}.pth"))  # the project's own checkpoint path
            models[case] = (model.eval(), spec_for(kw, [f"c{i}" for i in range(kw["head"]["num_classes"])]), manifest)
        return models[case]
    return get


# chelsea always runs; coffee is marked slow (`-m "not slow"` leaves it out)
@pytest.mark.parametrize("image", ["chelsea", pytest.param("coffee", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", CASES)
def test_label_map_matches_mmseg(reference_models, case, image):
    from vdeploy.runtime.postprocess import semantic_segmentation
    from vdeploy.runtime.preprocess import preprocess

    model, spec, manifest = reference_models(case)
    ref = np.load(REFS / case / f"{image}.npz")
    fair = manifest["fairness"][image]
    # a fair bar: several classes, almost no pixel whose top two logits float noise could swap
    assert fair["classes_over_1_percent"] >= 2 and fair["share_top2_margin_below_1e-5_of_spread"] < 1e-3
    im = cv2.imread(str(GOLDENS / "images" / f"{image}.png"))
    prep = preprocess(im, spec)
    with torch.no_grad():
        logits, = model(torch.from_numpy(prep.inputs["images"]))
    pred = semantic_segmentation({"logits": logits.numpy()}, prep.meta, spec)
    agree, miou = label_map_agreement(pred.label_map, ref["label_map"])
    assert agree >= 0.999 and miou >= 0.99, (agree, miou)


# --------------------------------------------------------------------------- stock ONNX / OpenVINO

def export(model, path, hw):
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, *hw) * 255,), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}})


def agreement(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)), float((a.argmax(1) == b.argmax(1)).mean())


@pytest.mark.parametrize("case", [c if c in ("segnext_mscan_ham", "twins_svt_uperhead", "poolformer_fpn")
                                  else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_exports_run_on_onnxruntime_and_openvino(reference_models, tmp_path, case):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    model = reference_models(case)[0]
    path = tmp_path / "m.onnx"
    export(model, path, (64, 96))
    assert {n.domain for n in onnx.load(str(path)).graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # sizes other than the export's, not multiples of 32 or of the windows (padding paths)
    for hw in ((72, 104), (57, 83)):
        img = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(1)) * 255
        with torch.no_grad():
            want = model(img)[0].numpy()
        for got in (sess.run(None, {"images": img.numpy()})[0], compiled([img.numpy()])[compiled.output(0)]):
            assert got.shape == want.shape
            err, agree = agreement(got, want)
            assert err < 1e-3 and agree > 0.999, (hw, err, agree)


# --------------------------------------------------------------------------- config edge

def _edit(config, edit):
    zoo_or_skip()
    cfg = load_config(ZOO / config)
    edit(cfg["model"])
    return cfg


@pytest.mark.parametrize("config, edit, message", [
    ("convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py",
     lambda m: m["backbone"].update(gap_before_final_norm=True), "pooled vectors"),
    ("convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py",
     lambda m: m["backbone"].update(arch="enormous"), "arch 'enormous' is not one of"),
    ("poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py",
     lambda m: m["backbone"].update(out_indices=(0, 9)), "out_indices"),
    ("twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py",
     lambda m: m["backbone"].update(windiow_sizes=[7, 7]), "windiow_sizes"),
    ("twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py",
     lambda m: m["backbone"].update(num_heads=[1, 2, 5]), "one entry per stage"),
    ("segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py",
     lambda m: m["decode_head"]["ham_kwargs"].update(rand_init=False), "rand_init=False"),
    ("segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py",
     lambda m: m.update(test_cfg={"mode": "slide", "crop_size": (64, 64), "stride": (32, 32)}), "size divisor"),
])
def test_unsupported_settings_are_one_line_config_errors(config, edit, message):
    from vdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        build_segmentor(model_kwargs(_edit(config, edit)))
    assert "\n" not in str(info.value)
