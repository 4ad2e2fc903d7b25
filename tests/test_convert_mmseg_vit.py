"""`vdeploy convert-weights --to mmseg-vit`: torchvision / timm ViT weights into mmseg's
VisionTransformer names, checked by loading the result into the native mmseg ViT (every key
filled, nothing left over) and computing what torchvision's ViT computes."""
from __future__ import annotations

import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from vdeploy.models.mmseg import VisionTransformer  # noqa: E402
from vdeploy.tools.convert_mmseg_vit import native_vit_to_mmseg  # noqa: E402
from vdeploy.tools.convert_weights import convert_state_dict  # noqa: E402


def small_vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4,
                                                hidden_dim=64, mlp_dim=128).eval()


def mmseg_vit():
    return VisionTransformer(img_size=64, patch_size=16, embed_dims=64, num_layers=2, num_heads=4, mlp_ratio=2,
                             final_norm=True, norm={"type": "LN", "eps": 1e-6}).eval()


def test_converted_vit_computes_what_torchvision_computes():
    tv = small_vit()
    with torch.no_grad():
        tv.conv_proj.bias.zero_()  # mmseg's ViT has no patch-embedding bias (patch_bias=False)
        for p in tv.encoder.parameters():  # away from zero-initialised biases
            p.add_(0.05 * torch.randn(p.shape))
    conv = convert_state_dict(tv.state_dict(), "torchvision")
    sd, dropped = native_vit_to_mmseg(conv.state_dict, prefix="")
    assert dropped == ["patch_embed.proj.bias"]
    ours = mmseg_vit()
    ours.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tokens = tv._process_input(x)
        tokens = tv.encoder(torch.cat([tv.class_token.expand(1, -1, -1), tokens], dim=1))
        want = tokens[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
        got, = ours(x)
    assert torch.allclose(got, want, atol=1e-5)


def test_cli_writes_mmseg_names_and_refuses_other_families(tmp_path):
    src, out = tmp_path / "vit.pth", tmp_path / "vit_mmseg.pth"
    torch.save(small_vit().state_dict(), src)
    r = run_cli("convert-weights", src, out, "--from", "torchvision", "--to", "mmseg-vit")
    assert r.returncode == 0, r.stderr
    assert "patch_embed.proj.bias dropped" in r.stdout
    sd = torch.load(out, weights_only=True)
    want = {f"backbone.{k}" for k in mmseg_vit().state_dict()}
    assert set(sd) == want

    torch.save(torchvision.models.resnet18().state_dict(), src)
    r = run_cli("convert-weights", src, out, "--from", "torchvision", "--to", "mmseg-vit")
    assert r.returncode == 2 and "needs a ViT checkpoint" in r.stderr
    assert set(torch.load(out, weights_only=True)) == want  # the earlier output is kept
