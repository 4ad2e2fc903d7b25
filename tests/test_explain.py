"""`vdeploy verify --explain`: the stage-by-stage comparison names the stage where a backend parts
from PyTorch, says when every stage agrees, and tells a bundle file changed after export apart."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from vdeploy.bundle import load_bundle, sha256_file, update_deploy_json  # noqa: E402
from vdeploy.export.explain import compare_stage, explain_bundle, select_stages  # noqa: E402
from vdeploy.frameworks.fastreid import build_reid_model, spec_for  # noqa: E402
from vdeploy.models.base import DeployableModel  # noqa: E402

KW = dict(depth=18, last_stride=1, norm="BN", with_ibn=False, with_se=False, with_nl=False, feat_dim=512,
          embedding_dim=0, pool="GeneralizedMeanPoolingP", with_bnneck=True, head_norm="BN",
          pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375], size_test=[64, 32])


class _ExportedScaled(torch.autograd.Function):
    """The identity in PyTorch, a multiplication by 1.05 in the exported graph: an exporter bug in
    miniature (a symbolic that does not do what the eager op does)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def symbolic(g, x):
        return g.op("Mul", x, g.op("Constant", value_t=torch.tensor(1.05)))


class _Miscompiled(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return _ExportedScaled.apply(self.block(x))


def _reid(tmp_path, tamper_stage=None):
    from vdeploy.export import export_bundle

    torch.manual_seed(0)
    model = build_reid_model(**KW)
    if tamper_stage:
        model.backbone.layer3[1] = _Miscompiled(model.backbone.layer3[1])
    dm = DeployableModel(model, spec_for(KW, model.out_dim), {"source": "test", "framework": "fastreid"},
                         batchable=True)
    return dm, export_bundle(dm, tmp_path / "reid", ["onnx", "openvino"], verify=False, log=lambda *a: None)


def test_stages_are_the_called_modules_two_levels_down():
    torch.manual_seed(0)
    model = build_reid_model(**dict(KW, depth=50, feat_dim=2048, with_nl=True))
    stages = select_stages(model, (torch.rand(1, 3, 64, 32) * 255,))
    # layerN is iterated block by block and NL_N is a ModuleList: neither counts as a level
    assert stages[:5] == ["backbone", "backbone.conv1", "backbone.bn1", "backbone.relu", "backbone.maxpool"]
    assert "backbone.layer3.5" in stages and "backbone.NL_3.2" in stages and "backbone.layer3" not in stages
    assert stages[-4:] == ["heads", "heads.pool_layer", "heads.bottleneck", "heads.bottleneck.0"]
    model.explain_stages = ["backbone.layer4", "heads"]  # a model may name its own
    assert select_stages(model, ()) == ["backbone.layer4", "heads"]


def test_compare_stage_figures():
    ref = np.array([[1.0, 2.0, 2.0]], np.float32)
    same = compare_stage("s", ref, ref.copy(), 1e-3)
    assert not same.diverged and same.rel_l2 == 0 and same.cosine == pytest.approx(1.0)
    off = compare_stage("s", ref, ref * 1.01, 1e-3)
    assert off.diverged and off.rel_l2 == pytest.approx(0.01, rel=1e-4) and "relative L2" in off.note
    nan = compare_stage("s", ref, np.array([[1.0, np.nan, 2.0]], np.float32), 1e-3)
    assert nan.diverged and nan.nonfinite == 1 and "where PyTorch is finite" in nan.note
    both = compare_stage("s", np.array([np.inf, 1.0]), np.array([np.nan, 1.0]), 1e-3)
    assert not both.diverged and both.ref_nonfinite == 1 and "PyTorch itself" in both.note
    shape = compare_stage("s", ref, ref[:, :2], 1e-3)
    assert shape.diverged and "shape" in shape.note


def test_explain_names_the_stage_an_exporter_got_wrong(tmp_path):
    dm, bundle = _reid(tmp_path, tamper_stage=True)
    lines = []
    results = explain_bundle(bundle, dm, backends=["onnxruntime", "openvino"], log=lines.append)
    assert {r.backend for r in results} == {"onnxruntime", "openvino"} and len(results) == 2 * 2  # 2 synthetic inputs
    for r in results:
        names = [s.stage for s in r.stages]
        first = r.first_divergence
        assert first is not None and first.stage == "backbone.layer3.1", [(s.stage, s.rel_l2) for s in r.stages]
        assert first.rel_l2 == pytest.approx(0.05, rel=1e-2)  # the 5 % of the miscompiled op
        assert all(s.rel_l2 < 1e-4 for s in r.stages[:names.index("backbone.layer3.1")])
        assert r.bundle_vs_explain < 1e-3  # the bundle has the same (wrong) graph
    assert sum("first divergence at backbone.layer3.1 (relative L2 5.00e-02" in line for line in lines) == 4


def test_explain_tells_a_bundle_changed_after_export(tmp_path):
    dm, bundle = _reid(tmp_path)
    import onnx
    from onnx import numpy_helper

    path = bundle.path / "model.onnx"
    m = onnx.load(str(path))
    init = next(i for i in m.graph.initializer if numpy_helper.to_array(i).ndim == 4)  # the first conv's weights
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.1, init.name))
    onnx.save(m, str(path))
    files = dict(bundle.meta["files"])
    files["model.onnx"] = dict(files["model.onnx"], sha256=sha256_file(path))
    bundle = update_deploy_json(bundle, files=files)
    lines = []
    results = explain_bundle(load_bundle(bundle.path), dm, backends=["onnxruntime"], log=lines.append)
    assert all(r.first_divergence is None for r in results)  # a fresh export of the model agrees ...
    assert all(r.bundle_vs_explain > 1e-3 for r in results)  # ... the bundle's file does not
    assert all("its file was changed after export" in line for line in lines[-len(results):])


def test_cli_verify_explain_reports_every_stage_agreeing(small_classifier_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(small_classifier_bundle.path, bundle)
    r = run_cli("verify", bundle, "--explain", "--backends", "onnxruntime,openvino")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "onnxruntime against PyTorch, stage by stage" in out and "openvino against PyTorch, stage by stage" in out
    for stage in ("layer1", "layer4.1", "avgpool", "fc", "output"):
        assert stage in out
    assert out.count("stages agree (relative L2 <= 0.001") == 2 * 2 and "first divergence" not in out
    assert "verification passed" in out  # the gates still run after the explanation


def test_explain_refuses_a_bundle_without_an_onnx_engine(small_classifier_bundle):
    from vdeploy.errors import UserError

    with pytest.raises(UserError, match="needs an onnxruntime or openvino backend"):
        explain_bundle(small_classifier_bundle, backends=["torchscript"], log=lambda *a: None)
