"""fast-reid's other architectures (ResNeSt, MGN, ViT) against the real fast-reid's outputs.

The references in tests/data/references/fastreid were made by scripts/references/
make_fastreid_references.py from the real fast-reid with the shared stand-in weights; building
their checkpoints needs ../shared (weights.py and make_ckpt.py), so these tests skip without it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDENS, SHARED, goldens_or_skip

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from vdeploy.errors import ConfigError  # noqa: E402
from vdeploy.frameworks.fastreid import build_reid_model, load_config, model_kwargs  # noqa: E402

REFS = Path(__file__).parent / "data" / "references" / "fastreid"
ZOO = SHARED / "zoo" / "fastreid"
CASES = ["sbs_S50", "mgn_R50-ibn", "bagtricks_vit"]


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _case_or_skip(name):
    goldens_or_skip()
    case = REFS / name
    if not (case / "outputs.npz").is_file():
        pytest.skip(f"{case} is absent: make it with scripts/references/make_fastreid_references.py")
    return case


@pytest.fixture(scope="module", params=CASES)
def reference(request, module_tmp):
    from vdeploy.frameworks import build_model
    from vdeploy.runtime.preprocess import preprocess

    case = _case_or_skip(request.param)
    config = ZOO / json.loads((case / "manifest.json").read_text())["config"]
    ckpt = module_tmp.mktemp("fastreid") / "model_final.pth"
    subprocess.run([sys.executable, str(SHARED / "acceptance" / "make_ckpt.py"), str(case), str(ckpt)],
                   check=True, capture_output=True)
    dm = build_model(str(config), str(ckpt))
    out = np.load(case / "outputs.npz")
    x = np.stack([preprocess(cv2.imread(str(GOLDENS / "images" / "reid" / str(n))), dm.spec).inputs["images"][0]
                  for n in out["images"]])
    return request.param, dm, out, x


def test_features_match_fastreid_stage_by_stage(reference):
    name, dm, out, x = reference
    seen = {}
    hook = dm.module.backbone.register_forward_hook(lambda m, i, o: seen.setdefault("backbone", o))
    try:
        with torch.no_grad():
            feats, = dm.module(torch.from_numpy(x))
    finally:
        hook.remove()
    got, want = feats.numpy(), out["features"]
    assert got.shape == want.shape and dm.spec["outputs"][0]["shape"] == ["N", want.shape[1]]
    assert cosine(got, want).min() >= 0.9999, name
    backbone = seen["backbone"]
    assert list(backbone.shape) == out["backbone_shape"].tolist()
    np.testing.assert_allclose(backbone.mean(dim=(2, 3)).numpy(), out["backbone_mean_c"], rtol=1e-3, atol=1e-4)


def test_onnx_export_matches_fastreid(reference, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from test_fastreid import export_onnx

    name, dm, out, x = reference
    export_onnx(dm.module, torch.from_numpy(x[:2]), tmp_path / "m.onnx")
    got, = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})
    assert cosine(got, out["features"]).min() >= 0.9999, name


def test_mgn_concatenates_eight_heads_in_fastreid_order():
    cfg = load_config(_zoo_or_skip("Market1501/mgn_R50-ibn.yml"))
    kw = model_kwargs(cfg)
    assert kw["arch"] == "MGN" and kw["embedding_dim"] == 256 and kw["pool"] == "GeneralizedMeanPoolingP"
    model = build_reid_model(**kw)
    keys = model.state_dict()
    # fast-reid's names: the shared trunk as a Sequential, three branches, eight heads.
    for k in ("backbone.6.bn1.IN.weight", "b1.0.4.conv3.weight", "b1.1.0.downsample.0.weight",
              "b2.1.2.bn3.running_var", "b33_head.bottleneck.1.weight", "b21_head.pool_layer.p"):
        assert k in keys, k
    assert model.out_dim == 8 * 256


def test_resnest_and_vit_follow_fastreid_shapes():
    kw = model_kwargs(load_config(_zoo_or_skip("DukeMTMC/AGW_S50.yml")))
    model = build_reid_model(**kw)
    keys = model.state_dict()
    # deep stem of 32-wide convs (S50), split attention with radix 2, avg-pool before the shortcut conv
    assert keys["backbone.conv1.0.weight"].shape == (32, 3, 3, 3)
    assert keys["backbone.layer2.0.conv2.conv.weight"].shape == (256, 64, 3, 3)
    assert keys["backbone.layer2.0.downsample.1.weight"].shape == (512, 256, 1, 1)
    assert not any("NL_" in k for k in keys)  # fast-reid's ResNeSt ignores WITH_NL
    vit = model_kwargs(load_config(_zoo_or_skip("Market1501/bagtricks_vit.yml")))
    assert vit["depth"] == "base" and vit["stride_size"] == [16, 16]
    keys = build_reid_model(**vit).state_dict()
    assert keys["backbone.pos_embed"].shape == (1, 16 * 8 + 1, 768) and "backbone.blocks.11.attn.qkv.bias" in keys


def test_unsupported_combinations_name_the_key(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("MODEL:\n  META_ARCHITECTURE: MGN\n  BACKBONE:\n    NAME: build_resnest_backbone\n")
    with pytest.raises(ConfigError, match="'MGN' with MODEL.BACKBONE.NAME 'build_resnest_backbone'"):
        model_kwargs(load_config(cfg))
    cfg.write_text("MODEL:\n  BACKBONE:\n    NAME: build_vit_backbone\n    DEPTH: base\n"
                   "INPUT:\n  SIZE_TRAIN: [256, 128]\n  SIZE_TEST: [384, 128]\n")
    with pytest.raises(ConfigError, match="INPUT.SIZE_TEST .* differs from INPUT.SIZE_TRAIN"):
        model_kwargs(load_config(cfg))
    cfg.write_text("MODEL:\n  META_ARCHITECTURE: MGN\n  BACKBONE:\n    DEPTH: 18x\n")
    with pytest.raises(ConfigError, match="DEPTH below 50x is not supported with MGN"):
        build_reid_model(**model_kwargs(load_config(cfg)))


def _zoo_or_skip(rel):
    path = ZOO / rel
    if not path.is_file():
        pytest.skip(f"{path} is absent (the zoo configs live outside the repository)")
    return path
