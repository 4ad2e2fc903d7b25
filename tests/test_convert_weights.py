"""convert-weights: key mapping, coverage and output for ResNet, Swin and ViT (random-init weights)."""
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
import torchvision

from vdeploy.cli import main
from vdeploy.errors import UserError
from vdeploy.tools.convert_weights import convert_state_dict, load_source

GOLDENS = Path(__file__).resolve().parents[2] / "shared" / "goldens"


def _randomize_bn(model):
    """Non-trivial BatchNorm statistics, so a swapped running_mean/var would show."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return _randomize_bn(torchvision.models.resnet50())


def test_resnet50_torchvision_fills_the_detectron2_backbone_of_mask_rcnn(resnet50):
    manifest_path = GOLDENS / "detectron2" / "mask_rcnn_R_50_FPN_3x" / "manifest.json"
    if not manifest_path.exists():
        pytest.skip(f"goldens not available at {GOLDENS}")
    manifest = json.loads(manifest_path.read_text())
    prefix = "backbone.bottom_up."
    golden = {k[len(prefix):]: tuple(shape) for k, shape in manifest["keys"] if k.startswith(prefix)}
    assert len(golden) == 265

    conv = convert_state_dict(resnet50.state_dict(), "torchvision")
    assert conv.arch == "resnet50" and conv.complete
    assert set(conv.state_dict) == set(golden)
    assert {k: tuple(v.shape) for k, v in conv.state_dict.items()} == golden


def test_resnet_mapping_values_and_coverage(resnet50):
    sd = resnet50.state_dict()
    conv = convert_state_dict(sd, "torchvision")
    out = conv.state_dict
    assert torch.equal(out["stem.conv1.weight"], sd["conv1.weight"])
    assert torch.equal(out["stem.conv1.norm.running_var"], sd["bn1.running_var"])
    assert torch.equal(out["res2.0.shortcut.weight"], sd["layer1.0.downsample.0.weight"])
    assert torch.equal(out["res2.0.shortcut.norm.bias"], sd["layer1.0.downsample.1.bias"])
    assert torch.equal(out["res5.2.conv3.norm.running_mean"], sd["layer4.2.bn3.running_mean"])
    assert torch.equal(out["res4.5.conv2.weight"], sd["layer3.5.conv2.weight"])
    # every source key is accounted for, exactly once
    assert sorted(conv.used + conv.unused) == sorted(sd)
    assert sorted(k for k in conv.unused if not k.endswith("num_batches_tracked")) == ["fc.bias", "fc.weight"]
    assert len(conv.used) == len(conv.filled) == 265


def test_converted_resnet_computes_what_torchvision_computes(resnet50):
    resnet_mod = pytest.importorskip("vdeploy.models.detectron2.resnet")
    conv = convert_state_dict(resnet50.state_dict(), "torchvision")
    native = resnet_mod.ResNet(depth=50, out_features=("res5",), stride_in_1x1=False).eval()
    native.load_state_dict(conv.state_dict, strict=True)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        body = torch.nn.Sequential(*list(resnet50.children())[:-2])
        expected = body(x)
        got = native(x)["res5"]
    # float32 noise relative to the activation scale (FrozenBN folds scale and shift differently)
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-4 * scale, ((got - expected).abs().max(), scale)


@pytest.mark.parametrize("name, depth, filled", [("resnet18", 18, 100), ("resnet34", 34, 180), ("resnet101", 101, 520)])
def test_resnet_depths(name, depth, filled):
    sd = getattr(torchvision.models, name)().state_dict()
    conv = convert_state_dict(sd, "timm")   # timm ResNets use torchvision's names
    assert conv.arch == f"resnet{depth}" and conv.complete and len(conv.filled) == filled


def test_missing_and_wrong_shape_are_reported(resnet50):
    sd = dict(resnet50.state_dict())
    del sd["layer2.1.conv2.weight"]
    del sd["layer1.0.bn1.running_var"]   # statistics are only made up for caffe2 files, never here
    sd["layer3.0.bn1.bias"] = torch.zeros(7)
    conv = convert_state_dict(sd, "torchvision")
    assert conv.missing == ["res2.0.conv1.norm.running_var", "res3.1.conv2.weight"]
    assert conv.synthesized == []
    assert conv.mismatched == [("res4.0.conv1.norm.bias", [256], [7])]
    assert not conv.complete


def test_detectron2_and_caffe2_sources(resnet50, tmp_path):
    native = convert_state_dict(resnet50.state_dict(), "torchvision").state_dict
    d2 = {"backbone.bottom_up." + k: v for k, v in native.items()}
    d2["backbone.fpn_lateral2.weight"] = torch.zeros(256, 256, 1, 1)
    conv = convert_state_dict(d2, "detectron2")
    assert conv.complete and conv.unused == ["backbone.fpn_lateral2.weight"]
    assert all(torch.equal(conv.state_dict[k], v) for k, v in native.items())

    # detectron2's MSRA ImageNet weights (R-50.pkl): caffe2 names, BatchNorm as scale + bias only
    c2 = {}
    bn = {"weight": "s", "bias": "b"}
    for key, value in native.items():
        m = re.fullmatch(r"(?:stem\.conv1|res(\d)\.(\d+)\.(conv\d|shortcut))(?:\.norm\.(\w+)|\.weight)", key)
        if m[4] in ("running_mean", "running_var"):
            continue
        if m[1] is None:
            name = "conv1_w" if m[4] is None else f"res_conv1_bn_{bn[m[4]]}"
        else:
            branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[m[3]]
            name = f"res{m[1]}_{m[2]}_{branch}" + ("_w" if m[4] is None else f"_bn_{bn[m[4]]}")
        c2[name] = value.numpy()
    c2["fc1000_w"] = torch.zeros(1000, 2048).numpy()
    assert "res2_0_branch2a_bn_s" in c2 and "res5_2_branch1_w" not in c2
    c2["res2_0_branch2a_w_momentum"] = c2["res2_0_branch2a_w"]
    pkl = tmp_path / "R-50.pkl"
    with open(pkl, "wb") as f:   # as the Detectron model zoo ships it: numpy blobs in a pickle
        pickle.dump({"blobs": c2, "__author__": "test"}, f)
    conv = convert_state_dict(load_source(pkl), "detectron2")
    assert conv.complete and conv.unused == ["fc1000_w"]
    assert len(conv.synthesized) == 2 * 53
    assert torch.equal(conv.state_dict["res3.0.conv2.norm.weight"], native["res3.0.conv2.norm.weight"])
    assert torch.all(conv.state_dict["res3.0.conv2.norm.running_mean"] == 0)
    assert torch.allclose(conv.state_dict["res3.0.conv2.norm.running_var"], torch.full((128,), 1 - 1e-5))


# --- Swin --------------------------------------------------------------------------------------

def _tv_swin_to_timm(sd, merging_at_stage_end=False):
    """torchvision swin_t names -> timm's, spelled out from timm's module layout."""
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            out["head.fc." + k[5:]] = v
            continue
        m = re.fullmatch(r"features\.0\.([02])\.(\w+)", k)
        if m:
            out[f"patch_embed.{'proj' if m[1] == '0' else 'norm'}.{m[2]}"] = v
            continue
        m = re.fullmatch(r"features\.(\d)\.(reduction|norm)\.(\w+)", k)
        if m:
            stage = int(m[1]) // 2 - (1 if merging_at_stage_end else 0)
            out[f"layers.{stage}.downsample.{m[2]}.{m[3]}"] = v
            continue
        m = re.fullmatch(r"features\.(\d)\.(\d+)\.(.+)", k)
        if m:
            rest = m[3].replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            out[f"layers.{(int(m[1]) - 1) // 2}.blocks.{m[2]}.{rest}"] = v
            continue
        out[k] = v
    return out


@pytest.fixture(scope="module")
def swin_t_sd():
    torch.manual_seed(0)
    return torchvision.models.swin_t().state_dict()


def test_swin_torchvision(swin_t_sd):
    conv = convert_state_dict(swin_t_sd, "torchvision")
    assert conv.complete, conv.missing
    assert conv.arch == "swin(embed_dim=96, depths=[2, 2, 6, 2], heads=[3, 6, 12, 24], window=7)"
    out = conv.state_dict
    assert torch.equal(out["patch_embed.proj.weight"], swin_t_sd["features.0.0.weight"])
    assert torch.equal(out["patch_embed.norm.bias"], swin_t_sd["features.0.2.bias"])
    assert torch.equal(out["stages.1.downsample.reduction.weight"], swin_t_sd["features.2.reduction.weight"])
    assert torch.equal(out["stages.3.downsample.norm.weight"], swin_t_sd["features.6.norm.weight"])
    assert torch.equal(out["stages.2.blocks.5.mlp.fc2.weight"], swin_t_sd["features.5.5.mlp.3.weight"])
    assert torch.equal(out["stages.0.blocks.1.attn.relative_position_bias_table"],
                       swin_t_sd["features.1.1.attn.relative_position_bias_table"])
    assert "stages.0.downsample.reduction.weight" not in out
    unused = sorted(conv.unused)
    assert [k for k in unused if not k.endswith("relative_position_index")] == ["head.bias", "head.weight"]
    assert len(unused) == 2 + 12


@pytest.mark.parametrize("merging_at_stage_end", [False, True], ids=["timm>=0.9", "timm<0.9/official"])
def test_swin_timm_matches_torchvision(swin_t_sd, merging_at_stage_end):
    reference = convert_state_dict(swin_t_sd, "torchvision").state_dict
    timm_sd = _tv_swin_to_timm(swin_t_sd, merging_at_stage_end)
    conv = convert_state_dict({"module." + k: v for k, v in timm_sd.items()}, "timm")
    assert conv.complete
    assert set(conv.state_dict) == set(reference)
    assert all(torch.equal(conv.state_dict[k], reference[k]) for k in reference)


# --- ViT ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_sd():
    torch.manual_seed(0)
    return torchvision.models.vit_b_16().state_dict()


def test_vit_torchvision_and_timm(vit_sd):
    conv = convert_state_dict(vit_sd, "torchvision")
    assert conv.complete and conv.arch == "vit(dim=768, layers=12, patch=16, image=224)"
    out = conv.state_dict
    assert torch.equal(out["cls_token"], vit_sd["class_token"])
    assert torch.equal(out["pos_embed"], vit_sd["encoder.pos_embedding"])
    assert torch.equal(out["blocks.3.attn.qkv.weight"],
                       vit_sd["encoder.layers.encoder_layer_3.self_attention.in_proj_weight"])
    assert torch.equal(out["blocks.11.mlp.fc1.bias"], vit_sd["encoder.layers.encoder_layer_11.mlp.0.bias"])
    assert sorted(conv.unused) == ["heads.head.bias", "heads.head.weight"]

    # timm's ViT is named like the native naming, plus its head
    timm_sd = {k: v.clone() for k, v in out.items()}
    timm_sd.update({"head.weight": torch.zeros(1000, 768), "head.bias": torch.zeros(1000)})
    conv = convert_state_dict(timm_sd, "timm")
    assert conv.complete and sorted(conv.unused) == ["head.bias", "head.weight"]
    assert all(torch.equal(conv.state_dict[k], out[k]) for k in out)


def test_wrong_family_is_a_user_error(vit_sd):
    with pytest.raises(UserError, match="no detectron2 backbone naming"):
        convert_state_dict(vit_sd, "detectron2")


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_writes_safetensors_and_pth(tmp_path, resnet50, capsys):
    from safetensors.torch import load_file

    src = tmp_path / "r50.pth"
    torch.save({"state_dict": resnet50.state_dict()}, src)
    out = tmp_path / "native.safetensors"
    report = tmp_path / "report.json"
    rc = main(["convert-weights", str(src), str(out), "--from", "torchvision",
               "--prefix", "backbone.bottom_up.", "--report", str(report)])
    assert rc == 0
    loaded = load_file(str(out))
    assert len(loaded) == 265
    assert torch.equal(loaded["backbone.bottom_up.res3.2.conv1.weight"], resnet50.state_dict()["layer2.2.conv1.weight"])
    summary = json.loads(report.read_text())
    assert summary["missing"] == [] and "fc.weight" in summary["unused"]
    assert "53 x *.num_batches_tracked" in capsys.readouterr().out

    pth = tmp_path / "native.pth"
    assert main(["convert-weights", str(src), str(pth), "--from", "timm"]) == 0
    sd = load_source(pth)
    assert set(sd) == set(convert_state_dict(resnet50.state_dict(), "timm").state_dict)


def test_cli_incomplete_source_keeps_existing_output(tmp_path, resnet50, capsys):
    sd = {k: v for k, v in resnet50.state_dict().items() if not k.startswith(("layer4.2.conv1.", "layer4.2.bn1."))}
    src = tmp_path / "partial.pth"
    torch.save(sd, src)
    out = tmp_path / "out.pth"
    out.write_bytes(b"previous")
    assert main(["convert-weights", str(src), str(out), "--from", "torchvision"]) == 2
    assert out.read_bytes() == b"previous"
    assert "missing: res5.2.conv1.weight" in capsys.readouterr().out
    assert main(["convert-weights", str(src), str(out), "--from", "torchvision", "--allow-missing"]) == 0
    assert len(torch.load(out, weights_only=True)) == 265 - 5
