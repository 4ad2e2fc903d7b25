"""Every pooling layer and head variant fast-reid configs name exports with finite features that
agree with PyTorch on onnxruntime and OpenVINO (the embedding gates: relative L2 <= 1e-3, cosine
>= 0.99999 per sample), including an SBS-style ResNet-50 (IBN, non-local blocks, learnable GeM).

And the "SBS gives NaN on onnxruntime" report, reproduced in miniature: when a non-local block
leaves float32's range, PyTorch itself is NaN from that block on, onnxruntime is NaN with it, and
`explain` names the block.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from vdeploy.frameworks.fastreid import build_reid_model, spec_for  # noqa: E402
from vdeploy.models.base import DeployableModel  # noqa: E402
from vdeploy.runtime.backends import create_backend  # noqa: E402

SIZE = [64, 32]
BASE = dict(depth=18, last_stride=1, norm="BN", with_ibn=False, with_se=False, with_nl=False, feat_dim=512,
            embedding_dim=0, pool="GlobalAvgPool", with_bnneck=True, head_norm="BN",
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375], size_test=SIZE)
POOLS = ["GlobalAvgPool", "FastGlobalAvgPool", "GlobalMaxPool", "AdaptiveAvgMaxPool", "ClipGlobalAvgPool",
         "GeneralizedMeanPooling", "GeneralizedMeanPoolingP", "Identity"]
VARIANTS = [dict(pool=p) for p in POOLS] + [
    dict(pool="GeneralizedMeanPoolingP", with_bnneck=False),
    dict(pool="GlobalAvgPool", embedding_dim=128),
    dict(pool="GeneralizedMeanPooling", embedding_dim=64, with_bnneck=False),
    dict(pool="Flatten", with_bnneck=False),  # fast-reid's Flatten feeds a neck only when H = W = 1
    dict(pool="GlobalAvgPool", with_se=True, with_ibn=True),
    # Base-SBS: ResNet-50, non-local blocks in stages 2-3, learnable GeM; with IBN as in sbs_R50-ibn
    dict(depth=50, feat_dim=2048, with_nl=True, with_ibn=True, pool="GeneralizedMeanPoolingP"),
]


def _images(seed: int, n: int = 6) -> np.ndarray:
    """Images that differ from each other as photos do (layout, brightness, contrast). Noise images
    would all pool to nearly the same feature, so that the BNNeck, calibrated on them, subtracts
    from each feature a mean within float32 rounding of it and any engine's rounding looks large."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (n, 3, SIZE[0] // 8, SIZE[1] // 8))
    layout = coarse.repeat(8, axis=2).repeat(8, axis=3) + 0.3 * rng.standard_normal((n, 3, *SIZE))
    contrast, brightness = rng.uniform(20, 90, (n, 1, 1, 1)), rng.uniform(60, 190, (n, 1, 1, 1))
    return (brightness + contrast * layout).clip(0, 255).astype(np.float32)


def _calibrated(kw: dict, images: np.ndarray):
    """The model with every BatchNorm's running statistics set from `images`, as fast-reid's
    reference script does for stand-in weights: activations of a realistic scale throughout."""
    torch.manual_seed(0)
    model = build_reid_model(**kw)

    def pre(mod, inp):
        t = inp[0]
        mod.running_mean.copy_(t.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(t.var(dim=(0, 2, 3)))

    hooks = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model(torch.from_numpy(images))
    for h in hooks:
        h.remove()
    return model


def _bundle(model, kw, out):
    from vdeploy.export import export_bundle

    dm = DeployableModel(model, spec_for(kw, model.out_dim), {"source": "test", "framework": "fastreid"},
                         batchable=True)
    return dm, export_bundle(dm, out, ["onnx", "openvino"], verify=False, log=lambda *a: None)


def _agreement(ref: np.ndarray, got: np.ndarray):
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    return rel, cos


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_variant_is_finite_and_agrees_on_onnxruntime_and_openvino(variant, tmp_path):
    kw = dict(BASE, **variant)
    images = _images(0)
    model = _calibrated(kw, images)
    _, bundle = _bundle(model, kw, tmp_path / "b")
    with torch.no_grad():
        ref = model(torch.from_numpy(images))[0].numpy()
    assert np.isfinite(ref).all() and np.linalg.norm(ref, axis=1).min() > 0
    for backend in ("onnxruntime", "openvino"):
        got = create_backend(backend, bundle).load().infer({"images": images})["features"]
        assert got.shape == ref.shape
        assert np.isfinite(got).all(), f"{backend}: non-finite features"
        rel, cos = _agreement(ref, got)
        assert rel.max() <= 1e-3 and cos.min() >= 0.99999, f"{backend}: relative L2 {rel.max():.2e}, cosine {cos.min()}"


def test_gem_p_is_the_checkpoint_value_in_the_graph(tmp_path):
    """Learnable GeM's p is a weight: the exported graph uses the loaded value, not the initial 3."""
    kw = dict(BASE, pool="GeneralizedMeanPoolingP")
    images = _images(1)
    model = _calibrated(kw, images)
    with torch.no_grad():
        model.heads.pool_layer.p.fill_(4.5)
        ref = model(torch.from_numpy(images))[0].numpy()
    _, bundle = _bundle(model, kw, tmp_path / "b")
    got = create_backend("onnxruntime", bundle).load().infer({"images": images})["features"]
    rel, _ = _agreement(ref, got)
    assert rel.max() <= 1e-4


def test_overflowing_nonlocal_block_is_named_by_explain(tmp_path):
    """The SBS NaN in miniature. A non-local block is a cubic form of its input (theta . phi^T . g / N,
    no softmax): with stand-in weights whose BatchNorms were calibrated on a few photos, an input
    unlike them grows ~x^3 per block until float32 overflows, and PyTorch itself (fast-reid too) is
    NaN from that block on. Here the last block's projections are scaled to overflow on any input."""
    from vdeploy.export.explain import explain_bundle

    kw = dict(BASE, depth=50, feat_dim=2048, with_nl=True, pool="GeneralizedMeanPoolingP")
    images = _images(2)
    model = _calibrated(kw, images)
    with torch.no_grad():
        for conv in (model.backbone.NL_3[2].theta, model.backbone.NL_3[2].phi, model.backbone.NL_3[2].g):
            conv.weight.mul_(1e14)
        ref = model(torch.from_numpy(images))[0].numpy()
    assert not np.isfinite(ref).any()  # PyTorch itself
    dm, bundle = _bundle(model, kw, tmp_path / "b")
    lines = []
    results = explain_bundle(bundle, dm, backends=["onnxruntime"], log=lines.append)
    for ex in results:
        assert ex.first_reference_nonfinite.stage == "backbone.NL_3.2"
        assert ex.first_divergence is None  # onnxruntime follows PyTorch up to there, and NaN with it
        before = ex.stages[:[s.stage for s in ex.stages].index("backbone.NL_3.2")]
        assert before and all(s.rel_l2 <= 1e-3 and not s.ref_nonfinite for s in before)
    assert any("PyTorch itself is non-finite from backbone.NL_3.2" in line for line in lines)
