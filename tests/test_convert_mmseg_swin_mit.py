"""`vdeploy convert-weights --to mmseg-swin` (timm / torchvision / official Swin) and
`--from segformer --to mmseg-mit` (the official SegFormer code's MiT): the result loads into the
native mmseg backbone and computes what the source architecture computes.

The MiT source here is a from-scratch forward of the official SegFormer encoder as its paper and
code describe it (separate q and kv projections, Linear MLP around a depthwise conv), so a wrong
concatenation, reshape or stage index shows up as different features."""
from __future__ import annotations

import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
import torch.nn.functional as F  # noqa: E402

from vdeploy.models.mmseg import MixVisionTransformer, SwinTransformer  # noqa: E402
from vdeploy.tools.convert_mmseg_mit import convert_segformer_mit  # noqa: E402
from vdeploy.tools.convert_mmseg_swin import native_swin_to_mmseg  # noqa: E402
from vdeploy.tools.convert_weights import convert_state_dict  # noqa: E402


def small_torchvision_swin():
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                                               window_size=[7, 7]).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the zero / one initialisations
            p.add_(0.05 * torch.randn(p.shape))
    return model


def test_converted_swin_computes_what_torchvision_computes():
    tv = small_torchvision_swin()
    conv = convert_state_dict(tv.state_dict(), "torchvision")
    assert conv.complete
    sd, dropped = native_swin_to_mmseg(conv.state_dict, prefix="")
    assert sorted(dropped) == ["norm.bias", "norm.weight"]
    ours = SwinTransformer(embed_dims=32, depths=(2, 2), num_heads=(2, 4), window_size=7, out_indices=(0, 1)).eval()
    report = ours.load_state_dict(sd, strict=False)
    assert not report.unexpected_keys
    # what the source cannot hold: mmseg's per-output norms and its recomputed index buffers
    assert {k.rsplit(".", 1)[0] for k in report.missing_keys if "relative_position_index" not in k} == {"norm0",
                                                                                                       "norm1"}
    x = torch.rand(1, 3, 112, 112)  # 28x28 and 14x14 tokens: every window shifted, none padded
    with torch.no_grad():
        stage0 = tv.features[1](tv.features[0](x))
        stage1 = tv.features[3](tv.features[2](stage0))
        got = ours(x)
    for out, norm, want in zip(got, (ours.norm0, ours.norm1), (stage0, stage1)):
        want = F.layer_norm(want, want.shape[-1:], norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
        assert torch.allclose(out, want, atol=1e-4), (out - want).abs().max()


def official_mit_state_dict(widths=(16, 32), depths=(2, 1), srs=(2, 1), mlp_ratio=2, patches=(7, 3)):
    """Random weights under the official SegFormer MiT names (with its ImageNet head)."""
    g = torch.Generator().manual_seed(1)
    r = lambda *shape: 0.2 * torch.randn(*shape, generator=g)  # noqa: E731
    sd, cin = {}, 3
    for i, (w, d, sr, p) in enumerate(zip(widths, depths, srs, patches), start=1):
        sd[f"patch_embed{i}.proj.weight"], sd[f"patch_embed{i}.proj.bias"] = r(w, cin, p, p), r(w)
        sd[f"patch_embed{i}.norm.weight"], sd[f"patch_embed{i}.norm.bias"] = 1 + r(w), r(w)
        for j in range(d):
            b = f"block{i}.{j}."
            for n in ("norm1", "norm2"):
                sd[b + n + ".weight"], sd[b + n + ".bias"] = 1 + r(w), r(w)
            sd[b + "attn.q.weight"], sd[b + "attn.q.bias"] = r(w, w), r(w)
            sd[b + "attn.kv.weight"], sd[b + "attn.kv.bias"] = r(2 * w, w), r(2 * w)
            sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = r(w, w), r(w)
            if sr > 1:
                sd[b + "attn.sr.weight"], sd[b + "attn.sr.bias"] = r(w, w, sr, sr), r(w)
                sd[b + "attn.norm.weight"], sd[b + "attn.norm.bias"] = 1 + r(w), r(w)
            h = mlp_ratio * w
            sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = r(h, w), r(h)
            sd[b + "mlp.dwconv.dwconv.weight"], sd[b + "mlp.dwconv.dwconv.bias"] = r(h, 1, 3, 3), r(h)
            sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = r(w, h), r(w)
        sd[f"norm{i}.weight"], sd[f"norm{i}.bias"] = 1 + r(w), r(w)
        cin = w
    sd["head.weight"], sd["head.bias"] = r(10, widths[-1]), r(10)
    return sd


def official_mit_forward(sd, x, heads=(1, 2), srs=(2, 1), strides=(4, 2)):
    """The official encoder's arithmetic, written from its description."""
    outs, i = [], 1
    while f"patch_embed{i}.proj.weight" in sd:
        w = sd[f"patch_embed{i}.proj.weight"]
        x = F.conv2d(x, w, sd[f"patch_embed{i}.proj.bias"], stride=strides[i - 1], padding=w.shape[-1] // 2)
        b_, c, h, wd = x.shape
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (c,), sd[f"patch_embed{i}.norm.weight"],
                         sd[f"patch_embed{i}.norm.bias"])
        j = 0
        while f"block{i}.{j}.norm1.weight" in sd:
            p = lambda n: sd[f"block{i}.{j}.{n}"]  # noqa: E731
            y = F.layer_norm(t, (c,), p("norm1.weight"), p("norm1.bias"), 1e-6)
            nh, d = heads[i - 1], c // heads[i - 1]
            q = F.linear(y, p("attn.q.weight"), p("attn.q.bias")).reshape(b_, -1, nh, d).transpose(1, 2)
            src = y
            if srs[i - 1] > 1:
                img = y.transpose(1, 2).reshape(b_, c, h, wd)
                src = F.conv2d(img, p("attn.sr.weight"), p("attn.sr.bias"), stride=srs[i - 1]).flatten(2).transpose(1, 2)
                src = F.layer_norm(src, (c,), p("attn.norm.weight"), p("attn.norm.bias"))
            kv = F.linear(src, p("attn.kv.weight"), p("attn.kv.bias")).reshape(b_, -1, 2, nh, d).permute(2, 0, 3, 1, 4)
            attn = ((q @ kv[0].transpose(-2, -1)) * d ** -0.5).softmax(-1)
            t = t + F.linear((attn @ kv[1]).transpose(1, 2).reshape(b_, -1, c), p("attn.proj.weight"),
                             p("attn.proj.bias"))
            y = F.linear(F.layer_norm(t, (c,), p("norm2.weight"), p("norm2.bias"), 1e-6), p("mlp.fc1.weight"),
                         p("mlp.fc1.bias"))
            hid = y.shape[-1]
            y = F.conv2d(y.transpose(1, 2).reshape(b_, hid, h, wd), p("mlp.dwconv.dwconv.weight"),
                         p("mlp.dwconv.dwconv.bias"), padding=1, groups=hid).flatten(2).transpose(1, 2)
            t = t + F.linear(F.gelu(y), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
            j += 1
        t = F.layer_norm(t, (c,), sd[f"norm{i}.weight"], sd[f"norm{i}.bias"], 1e-6)
        x = t.transpose(1, 2).reshape(b_, c, h, wd)
        outs.append(x)
        i += 1
    return outs


def test_converted_mit_computes_what_the_official_encoder_computes():
    sd = official_mit_state_dict()
    conv = convert_segformer_mit(sd, prefix="")
    assert conv.complete and conv.unused == ["head.weight", "head.bias"]
    assert conv.arch == "mit(widths=[16, 32], depths=[2, 1], sr_ratios=[2, 1])"
    ours = MixVisionTransformer(embed_dims=16, num_layers=(2, 1), num_heads=(1, 2), patch_sizes=(7, 3),
                                strides=(4, 2), sr_ratios=(2, 1), out_indices=(0, 1), mlp_ratio=2).eval()
    ours.load_state_dict(conv.state_dict, strict=True)
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        got, want = ours(x), official_mit_forward(sd, x)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_cli_mmseg_swin_and_mit(tmp_path):
    src, out = tmp_path / "swin.pth", tmp_path / "swin_mmseg.pth"
    torch.save(small_torchvision_swin().state_dict(), src)
    r = run_cli("convert-weights", src, out, "--from", "torchvision", "--to", "mmseg-swin")
    assert r.returncode == 0, r.stderr
    assert "norm0..norm3" in r.stdout
    keys = set(torch.load(out, weights_only=True))
    assert "backbone.stages.0.downsample.reduction.weight" in keys
    assert "backbone.stages.1.blocks.1.attn.w_msa.relative_position_bias_table" in keys

    mit_src, mit_out = tmp_path / "mit_b0.pth", tmp_path / "mit_mmseg.pth"
    torch.save(official_mit_state_dict(), mit_src)
    r = run_cli("convert-weights", mit_src, mit_out, "--from", "segformer", "--to", "mmseg-mit")
    assert r.returncode == 0, r.stderr
    assert "unused: head.weight" in r.stdout
    assert "backbone.layers.0.1.0.attn.attn.in_proj_weight" in torch.load(mit_out, weights_only=True)

    # a naming that does not fit the target: one line, exit 2, the earlier output kept
    r = run_cli("convert-weights", mit_src, out, "--from", "torchvision", "--to", "mmseg-swin")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("convert-weights", src, out, "--from", "torchvision", "--to", "mmseg-mit")
    assert r.returncode == 2 and "--from segformer" in r.stderr
    r = run_cli("convert-weights", src, mit_out, "--from", "segformer", "--to", "mmseg-mit")
    assert r.returncode == 2 and "no official SegFormer MiT naming" in r.stderr
    assert set(torch.load(out, weights_only=True)) == keys


@pytest.mark.parametrize("config, make_source, convert", [
    ("swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py",
     lambda: torchvision.models.swin_t().state_dict(),
     lambda sd: native_swin_to_mmseg(convert_state_dict(sd, "torchvision").state_dict)[0]),
    ("segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
     lambda: official_mit_state_dict(widths=(32, 64, 160, 256), depths=(2, 2, 2, 2), srs=(8, 4, 2, 1), mlp_ratio=4,
                                     patches=(7, 3, 3, 3)),
     lambda sd: convert_segformer_mit(sd).state_dict),
], ids=["upernet-swin-t", "segformer-b0"])
def test_converted_backbone_fits_the_zoo_segmentor(config, make_source, convert):
    """The converted file initialises the backbone of the segmentor mmseg's own config builds:
    every tensor lands on a weight of that shape, and only what no backbone checkpoint holds
    (Swin's per-output norms, its recomputed index buffers) is left to the segmentor."""
    from conftest import SHARED
    from vdeploy.frameworks.mmseg.build import build_segmentor, model_kwargs
    from vdeploy.frameworks.mmseg.config import load_config

    path = SHARED / "zoo" / "mmseg" / config
    if not path.is_file():
        pytest.skip(f"{path} is absent (the zoo configs live outside the repository)")
    model = build_segmentor(model_kwargs(load_config(path)))
    target = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    converted = convert(make_source())
    assert {k: tuple(v.shape) for k, v in converted.items()}.items() <= target.items()
    left = {k for k in target if k not in converted}
    assert all(k.split(".")[1].startswith("norm") or k.endswith("relative_position_index") for k in left), left
