"""flops: ResNet-50 against the published figure, per-module attribution, uncounted operators, CLI."""
import json

import pytest
import torch
import torchvision
from torch import nn

from vdeploy.cli import main
from vdeploy.errors import UserError
from vdeploy.models.base import DeployableModel
from vdeploy.tools.flops import count_flops, example_inputs


@pytest.fixture(scope="module")
def resnet50_report():
    model = torchvision.models.resnet50().eval()
    return count_flops(model, [torch.rand(1, 3, 224, 224)])


def test_resnet50_matches_published_macs(resnet50_report):
    r = resnet50_report
    # published: 4.1 GMACs (conv + linear) and 25.56M parameters
    assert abs(r.macs / 4.11e9 - 1) < 0.02, r.macs
    assert r.params == 25_557_032
    assert r.flops == 2 * r.macs
    # the fc layer is exactly 2048 x 1000 multiply-adds
    fc = next(m for m in r.modules if m.name == "fc")
    assert fc.macs == 2048 * 1000 and fc.params == 2048 * 1000 + 1000
    assert set(r.counted_ops) == {"aten.convolution", "aten.addmm"}


def test_per_module_attribution_adds_up(resnet50_report):
    by_name = {m.name: m for m in resnet50_report.modules}
    assert by_name[""].flops == resnet50_report.flops
    top = [m for m in resnet50_report.modules if m.depth == 1]
    assert sum(m.flops for m in top) == resnet50_report.flops
    assert sum(m.params for m in top) == resnet50_report.params
    layer1 = by_name["layer1"]
    assert layer1.flops == sum(by_name[f"layer1.{i}"].flops for i in range(3))
    # conv1: 64 x 3 x 7 x 7 kernel over a 112 x 112 output
    assert by_name["conv1"].macs == 64 * 3 * 7 * 7 * 112 * 112


def test_operators_without_formula_are_listed_not_zeroed(resnet50_report):
    uncounted = resnet50_report.uncounted
    assert uncounted["aten._native_batch_norm_legit_no_training"] == 53
    assert uncounted["aten.relu_"] == 49
    assert uncounted["aten.add_"] == 16          # residual additions
    assert "aten.max_pool2d_with_indices" in uncounted
    # free operators (views, copies) are not reported
    assert not any(op in uncounted for op in ("aten.view", "aten.t", "aten.detach"))


class TwoInputNet(nn.Module):
    """A detection-shaped graph: images plus im_info, with an operator no formula covers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, images, im_info):
        x = self.conv(images)
        pooled = x[..., : int(im_info[0, 0]), : int(im_info[0, 1])].mean(dim=(2, 3))
        return (torch.sigmoid(self.head(pooled)), torch.topk(pooled, 2).values)


DETECTION_SPEC = {
    "task": "detection", "classes": ["a"],
    "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "shape": [1, 3, "height", "width"]},
               {"name": "im_info", "dtype": "float32", "shape": [1, 2]}],
    "preprocess": {"resize": {"type": "shortest_edge", "min_size": 64, "max_size": 100},
                   "pad": {"size_divisibility": 32}},
    "outputs": [{"name": "scores"}, {"name": "top"}],
}


def test_example_inputs_follow_the_spec():
    tensors, shapes = example_inputs(DETECTION_SPEC)
    assert shapes == {"images": [1, 3, 64, 128], "im_info": [1, 2]}   # 100 padded to 128
    assert tensors[1].tolist() == [[64.0, 100.0]]
    assert 0 <= float(tensors[0].min()) and float(tensors[0].max()) <= 255
    tensors, shapes = example_inputs(DETECTION_SPEC, (50, 70))
    assert shapes["images"] == [1, 3, 64, 96] and tensors[1].tolist() == [[50.0, 70.0]]

    fixed = {"task": "classification", "inputs": [{"name": "x", "shape": [1, 3, 224, 224]}]}
    assert example_inputs(fixed)[1] == {"x": [1, 3, 224, 224]}
    with pytest.raises(UserError, match="fixed height"):
        example_inputs(fixed, (100, 224))


def test_parse_size():
    from vdeploy.cli.common import parse_size

    assert parse_size("800x1333") == (800, 1333)
    assert parse_size("224") == (224, 224) and parse_size(None) is None
    for bad in ("axb", "0x5", "1x2x3"):
        with pytest.raises(UserError):
            parse_size(bad)


def test_cli_tree_and_json(tmp_path, monkeypatch, capsys):
    import vdeploy.frameworks as frameworks

    built = []

    def fake_build(spec, weights=None, **options):
        built.append(spec)
        torch.manual_seed(0)
        return DeployableModel(TwoInputNet(), DETECTION_SPEC)

    monkeypatch.setattr(frameworks, "build_model", fake_build)
    out = tmp_path / "flops.json"
    rc = main(["flops", "some-config.yaml", "--input-size", "64x96", "--depth", "1", "--json", str(out)])
    assert rc == 0 and built == ["some-config.yaml"]
    report = json.loads(out.read_text())
    conv_macs = 8 * 3 * 9 * 64 * 96
    assert report["macs"] == conv_macs + 8 * 4 and report["flops"] == 2 * report["macs"]
    assert report["params"] == (8 * 27 + 8) + (8 * 4 + 4)
    assert {"aten.sigmoid", "aten.topk", "aten.mean"} <= set(report["uncounted"])
    assert report["input_shapes"] == {"images": [1, 3, 64, 96], "im_info": [1, 2]}
    conv = next(m for m in report["modules"] if m["name"] == "conv")
    assert conv["macs"] == conv_macs and conv["type"] == "Conv2d"
    text = capsys.readouterr().out
    assert "conv" in text and "head" in text and "aten.topk" in text


def test_cli_resnet50_through_model_sources(tmp_path):
    """`torchvision:NAME` goes through vdeploy.frameworks.build_model, as users call it."""
    import vdeploy.frameworks as frameworks

    try:
        frameworks.resolve("torchvision:resnet50")
    except UserError:
        pytest.skip("the torchvision model source is not available")
    out = tmp_path / "r50.json"
    assert main(["flops", "torchvision:resnet50", "--depth", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert abs(report["macs"] / 4.11e9 - 1) < 0.02
    assert report["input_shapes"]["images"] == [1, 3, 224, 224]


def test_a_container_never_called_itself_gets_its_childrens_macs():
    class ASPPLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = torch.nn.ModuleList(torch.nn.Conv2d(3, 4, 1) for _ in range(3))

        def forward(self, x):
            return sum(b(x) for b in self.branches)

    report = count_flops(ASPPLike(), [torch.rand(1, 3, 8, 8)])
    by_name = {m.name: m for m in report.modules}
    one = by_name["branches.0"].macs
    assert one == 3 * 4 * 8 * 8 and by_name["branches"].macs == 3 * one == report.macs
