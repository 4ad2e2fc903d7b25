"""fast-reid without fast-reid: config, golden features, architecture variants, ONNX export."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import GOLDENS, goldens_or_skip

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from vdeploy.errors import CheckpointError, ConfigError  # noqa: E402
from vdeploy.frameworks import resolve  # noqa: E402
from vdeploy.frameworks.fastreid import build_reid_model, claims, load_config, model_kwargs  # noqa: E402

FASTREID = GOLDENS / "fastreid"
CASE = FASTREID / "bagtricks_R50"
CONFIG = FASTREID / "configs" / "Market1501" / "bagtricks_R50.yml"


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def golden_model(module_tmp):
    goldens_or_skip()
    from vdeploy.frameworks import build_model

    ckpt = module_tmp.mktemp("fastreid") / "model_final.pth"
    subprocess.run([sys.executable, str(GOLDENS.parent / "acceptance" / "make_ckpt.py"), str(CASE), str(ckpt)],
                   check=True, capture_output=True)
    return build_model(str(CONFIG), str(ckpt)), ckpt


@pytest.fixture(scope="module")
def golden():
    goldens_or_skip()
    return np.load(CASE / "outputs.npz")


def test_config_and_dump_give_the_same_model():
    goldens_or_skip()
    kw = model_kwargs(load_config(CONFIG))
    assert kw == model_kwargs(load_config(CASE / "config_dump.yaml"))
    assert kw["depth"] == 50 and kw["last_stride"] == 1 and kw["with_bnneck"] and kw["pool"] == "GlobalAvgPool"
    assert kw["size_test"] == [256, 128] and kw["pixel_mean"] == [123.675, 116.28, 103.53]


def test_claims_fastreid_yaml_by_content(tmp_path):
    goldens_or_skip()
    assert claims(str(CONFIG)) and claims(str(CASE / "config_dump.yaml"))
    assert resolve(str(CONFIG)).name == "fastreid"
    d2 = tmp_path / "faster_rcnn.yaml"
    d2.write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n")
    assert not claims(str(d2))
    reid = tmp_path / "renamed.txt"  # the file name does not matter, the content does
    reid.write_text("MODEL:\n  HEADS:\n    NECK_FEAT: after\n")
    assert claims(str(reid))


def test_spec_describes_fastreid_preprocessing(golden_model):
    dm, _ = golden_model
    spec = dm.spec
    assert spec["task"] == "embedding" and dm.batchable
    assert spec["inputs"][0]["color"] == "RGB" and spec["inputs"][0]["shape"] == ["N", 3, 256, 128]
    assert spec["preprocess"]["resize"] == {"type": "fixed", "height": 256, "width": 128, "interp": "cv2_cubic"}
    assert spec["preprocess"]["normalize"]["where"] == "graph"
    assert spec["outputs"][0]["name"] == "features" and spec["outputs"][0]["shape"] == ["N", 2048]
    assert dm.provenance["framework"] == "fastreid" and len(dm.provenance["weights_sha256"]) == 64


def test_runtime_preprocessing_matches_golden(golden_model, golden):
    from vdeploy.runtime.preprocess import preprocess

    dm, _ = golden_model
    for name, want in zip(golden["images"], golden["resized_rgb"]):
        prep = preprocess(cv2.imread(str(GOLDENS / "images" / "reid" / str(name))), dm.spec)
        got = prep.inputs["images"][0].transpose(1, 2, 0)
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_features_match_fastreid(golden_model, golden):
    dm, _ = golden_model
    seen = {}
    hook = dm.module.backbone.register_forward_hook(lambda m, i, o: seen.setdefault("backbone", o))
    x = torch.from_numpy(golden["resized_rgb"]).permute(0, 3, 1, 2).float()
    try:
        with torch.no_grad():
            feats, = dm.module(x)
    finally:
        hook.remove()
    got, want = feats.numpy(), golden["features"]
    assert got.shape == want.shape == (5, 2048)
    assert cosine(got, want).min() >= 0.9999
    scale = np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got / scale, want / scale, rtol=1e-3, atol=1e-6 * 2048 ** 0.5)
    backbone = seen["backbone"]
    assert list(backbone.shape) == golden["backbone_shape"].tolist()
    np.testing.assert_allclose(backbone.mean(dim=(2, 3)).numpy(), golden["backbone_mean_c"], rtol=1e-3, atol=1e-5)


def test_onnx_export_matches_pytorch_for_any_batch(golden_model, golden, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    dm, _ = golden_model
    path = tmp_path / "reid.onnx"
    export_onnx(dm.module, torch.rand(2, 3, 256, 128) * 255, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = golden["resized_rgb"].transpose(0, 3, 1, 2).astype(np.float32)
    got, = sess.run(None, {"images": x})
    assert cosine(got, golden["features"]).min() >= 0.9999
    with torch.no_grad():
        want, = dm.module(torch.from_numpy(x))
    norm = np.linalg.norm(want.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(got / norm, want.numpy() / norm, rtol=1e-3, atol=1e-4)


def export_onnx(module, example, path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["features"],
                          dynamic_axes={"images": {0: "N"}, "features": {0: "N"}})


def test_checkpoint_of_another_model_is_refused(golden_model, tmp_path):
    goldens_or_skip()
    from vdeploy.frameworks import build_model

    _, ckpt = golden_model
    cfg = tmp_path / "r50_ibn.yml"
    cfg.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  BACKBONE:\n    WITH_IBN: True\n")
    with pytest.raises(CheckpointError, match="does not fit"):
        build_model(str(cfg), str(ckpt))


@pytest.mark.parametrize("key, value, message", [
    ("META_ARCHITECTURE", "Distiller", "META_ARCHITECTURE 'Distiller' is not supported"),
    ("BACKBONE", {"NAME": "build_osnet_backbone"}, "build_osnet_backbone"),
    ("BACKBONE", {"DEPTH": "77x"}, "depth 77"),
    ("HEADS", {"POOL_LAYER": "Magic"}, "pool layer 'Magic'"),
])
def test_unsupported_config_is_a_config_error(tmp_path, key, value, message):
    from vdeploy.frameworks.fastreid import DEFAULTS
    import yaml

    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"MODEL": {"META_ARCHITECTURE": "Baseline", key: value}}))
    with pytest.raises(ConfigError, match=message):
        build_reid_model(**model_kwargs(load_config(cfg)))
    assert DEFAULTS.is_file()


# ----------------------------------------------------------------------------- variants
# fast-reid's own names for the parameters of IBN, SE, non-local and GeM, so its checkpoints load.

VARIANT_KEYS = [
    "backbone.layer1.0.bn1.IN.weight", "backbone.layer3.5.bn1.BN.running_var",  # IBN-a in stages 1-3
    "backbone.layer1.0.se.fc.0.weight", "backbone.layer4.2.se.fc.2.weight",     # squeeze-excitation
    "backbone.NL_2.1.W.1.running_mean", "backbone.NL_3.2.theta.weight",          # non-local
    "heads.pool_layer.p",                                                        # GeM with learnable p
    "heads.bottleneck.0.weight", "heads.bottleneck.1.running_var",               # embedding conv + BNNeck
]


def test_variants_have_fastreid_parameter_names_and_export(tmp_path):
    """IBN + SE + non-local + GeM + a 256-d embedding in one model (one export keeps it quick)."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_reid_model(depth=50, last_stride=1, norm="BN", with_ibn=True, with_se=True, with_nl=True,
                             feat_dim=2048, embedding_dim=256, pool="GeneralizedMeanPoolingP", with_bnneck=True,
                             head_norm="BN", pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    keys = model.state_dict()
    for k in VARIANT_KEYS:
        assert k in keys, k
    assert not any(".bn1.IN." in k for k in keys if k.startswith("backbone.layer4."))  # no IBN in stage 4
    # fast-reid's non-local uses inter_channels = reduc_ratio // reduc_ratio = 1
    assert keys["backbone.NL_2.0.g.weight"].shape == (1, 512, 1, 1)
    assert not any(k.startswith(("backbone.NL_1.", "backbone.NL_4.")) for k in keys)
    x = torch.rand(2, 3, 64, 32) * 255
    with torch.no_grad():
        want, = model(x)
    assert want.shape == (2, 256) and torch.isfinite(want).all()
    export_onnx(model, x, tmp_path / "m.onnx")
    got, = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x[:1].numpy()})
    np.testing.assert_allclose(got, want[:1].numpy(), rtol=1e-3, atol=1e-4 * float(want.abs().max()))


def test_pooling_layers_follow_fastreid():
    from vdeploy.models.fastreid.layers import make_pool

    x = torch.rand(2, 3, 4, 5) + 0.1
    torch.testing.assert_close(make_pool("GlobalAvgPool")(x), x.mean((2, 3), keepdim=True))
    torch.testing.assert_close(make_pool("GlobalMaxPool")(x), x.amax((2, 3), keepdim=True))
    torch.testing.assert_close(make_pool("AdaptiveAvgMaxPool")(x), x.mean((2, 3), True) + x.amax((2, 3), True))
    gem = make_pool("GeneralizedMeanPoolingP")
    torch.testing.assert_close(gem(x), x.pow(3).mean((2, 3), keepdim=True).pow(1 / 3))
    assert list(gem.state_dict()) == ["p"]
