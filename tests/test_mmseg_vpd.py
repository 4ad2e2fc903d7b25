"""VPD (mmseg's DepthEstimator: Stable Diffusion v1's autoencoder encoder and UNet, VPDDepthHead)
without mmseg or ldm: both zoo configs build with mmseg's state-dict names, depth maps match the
real mmseg 1.2.2's (tests/data/references/mmseg/vpd_tiny_*, made by
scripts/references/make_mmseg_references_vpd.py on shrunken zoo configs), unsupported settings
are refused in one line, a URL class_embed_path is never fetched, and the graph exports to
onnxruntime and OpenVINO.
"""
from __future__ import annotations

import copy
import gzip
import json
import time

import numpy as np
import pytest

from conftest import GOLDENS, ROOT, SHARED

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from test_mmseg_families_b import case_config, stand_in_weights  # noqa: E402
from vdeploy.errors import CheckpointError, ConfigError  # noqa: E402
from vdeploy.frameworks.mmseg import vpd_args  # noqa: E402
from vdeploy.frameworks.mmseg.build import build_segmentor, load_weights, model_kwargs, spec_for  # noqa: E402
from vdeploy.frameworks.mmseg.config import load_config  # noqa: E402
from vdeploy.models.mmseg.vpd import DepthEstimator  # noqa: E402

ZOO = SHARED / "zoo" / "mmseg"
REFS = ROOT / "tests" / "data" / "references" / "mmseg"
KEYS = REFS / "vpd_zoo_keys.json.gz"
CONFIGS = ("vpd/vpd_sd_4xb8-25k_nyu-480x480.py", "vpd/vpd_sd_4xb8-25k_nyu-512x512.py")
CASES = ("vpd_tiny_480", "vpd_tiny_512")
IMAGES = ("astronaut", "chelsea", "coffee")
IGNORED = vpd_args.UNUSED_CHECKPOINT_PARTS + ("auxiliary_head.",)


def zoo_cfg(config=CONFIGS[0]) -> dict:
    if not ZOO.is_dir():
        pytest.skip(f"{ZOO} is absent (the zoo configs live outside the repository)")
    return load_config(ZOO / config)


def meta_model(cfg):
    """The model of `cfg` on the meta device: names and shapes without 3.6 GB of parameters."""
    kw = model_kwargs(cfg)
    with torch.device("meta"):
        return build_segmentor(kw), kw


# --------------------------------------------------------------------------- zoo configs

# Shapes of Stable Diffusion v1 (and of the head at its zoo size) as published, for when the
# recorded mmseg keys are absent: one name of each part, spelled as ldm and mmseg spell it.
SD_V1 = {
    "backbone.gamma": (768,), "backbone.class_embeddings": (28, 768),  # 27 NYU scene classes + their mean
    "backbone.text_adapter.fc.0.weight": (768, 768), "backbone.text_adapter.fc.2.bias": (768,),
    "backbone.encoder_vq.encoder.conv_in.weight": (128, 3, 3, 3),
    "backbone.encoder_vq.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "backbone.encoder_vq.encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
    "backbone.encoder_vq.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "backbone.encoder_vq.encoder.conv_out.weight": (8, 512, 3, 3),
    "backbone.encoder_vq.quant_conv.weight": (8, 8, 1, 1),
    "backbone.unet.unet.diffusion_model.time_embed.0.weight": (1280, 320),
    "backbone.unet.unet.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "backbone.unet.unet.diffusion_model.input_blocks.1.0.in_layers.0.weight": (320,),
    "backbone.unet.unet.diffusion_model.input_blocks.1.0.out_layers.3.weight": (320, 320, 3, 3),
    "backbone.unet.unet.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "backbone.unet.unet.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": (320, 320),
    "backbone.unet.unet.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "backbone.unet.unet.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
    "backbone.unet.unet.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "backbone.unet.unet.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "backbone.unet.unet.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight": (1280, 768),
    "backbone.unet.unet.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "backbone.unet.unet.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "backbone.unet.unet.diffusion_model.output_blocks.11.1.proj_out.weight": (320, 320, 1, 1),
    "decode_head.conv1.0.weight": (320, 320, 3, 3), "decode_head.conv2.weight": (640, 640, 3, 3),
    "decode_head.conv_aggregation.0.weight": (1536, 3520, 1, 1),
    "decode_head.decoder.deconv_layers.0.weight": (1536, 32, 2, 2),
    "decode_head.decoder.conv_layers.0.weight": (192, 32, 3, 3),
    "decode_head.depth_pred_layer.2.weight": (1, 192, 3, 3),
}


@pytest.mark.parametrize("config", CONFIGS)
def test_zoo_config_builds_with_mmsegs_state_dict_names(config):
    """Built on the meta device; names and shapes are mmseg's (recorded from mmseg 1.2.2) less
    the parts inference never runs, which are exactly the decoder half of the autoencoder and
    the UNet's output layer."""
    model, kw = meta_model(zoo_cfg(config))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: got.get(k) for k in SD_V1} == SD_V1
    assert 0.90e9 < sum(p.numel() for p in model.parameters()) < 0.91e9
    assert kw["mode"] == "slide_flip" and kw["backbone"]["pad_shape"] == (512, 512)
    if not KEYS.is_file():
        pytest.skip(f"{KEYS} is absent: checked against SD v1's published shapes only")
    recorded = {k: tuple(s) for k, s in json.loads(gzip.open(KEYS, "rt").read())[config]}
    want = {k: s for k, s in recorded.items() if not k.startswith(IGNORED)}
    assert sorted(set(want) ^ set(got)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}
    left_out = {k.split(".")[2] if k.startswith("backbone.encoder_vq") else "out" for k in set(recorded) - set(want)}
    assert left_out == {"decoder", "post_quant_conv", "out"}


def test_build_model_of_a_zoo_config_without_weights():
    """What the zoo-coverage count runs: the full model, random, in seconds, with the depth spec."""
    zoo_cfg()
    import gc

    from vdeploy.frameworks import build_model

    t = time.time()
    dm = build_model(str(ZOO / CONFIGS[0]))
    seconds = time.time() - t
    try:
        assert isinstance(dm.module, DepthEstimator) and seconds < 60, seconds
        spec = dm.spec
        assert spec["task"] == "depth_estimation" and spec["classes"] == []
        assert spec["inputs"] == [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": "RGB",
                                   "shape": [1, 3, "height", "width"]}]
        assert spec["preprocess"] == {
            "resize": {"type": "shortest_edge", "min_size": 480, "max_size": 2000, "interp": "cv2_linear"},
            "pad": {}, "normalize": {"mean": [127.5] * 3, "std": [127.5] * 3, "where": "graph"}}
        assert spec["postprocess"] == {"type": "depth_estimation", "align_corners": False, "max_depth": 10.0,
                                       "unit": "m"}
        (out,) = spec["outputs"]
        assert out["name"] == "depth" and out["shape"] == [1, 1, "height", "width"]
        assert "480x480 windows, stride 160x160, each averaged with its mirror" in out["meaning"]
        assert dm.provenance["weights"] is None
    finally:
        del dm
        gc.collect()


def test_the_512_config_spec():
    model, kw = meta_model(zoo_cfg(CONFIGS[1]))
    spec = spec_for(kw, [])
    assert spec["preprocess"]["resize"]["min_size"] == 512 and model.decode_head.fmap_border == (0, 0)
    assert "512x512 windows, stride 128x128" in spec["outputs"][0]["meaning"]


# --------------------------------------------------------------------------- against mmseg

def references_or_skip(case):
    if not (REFS / case / "manifest.json").is_file():
        pytest.skip(f"{REFS / case} is absent (made by scripts/references/make_mmseg_references_vpd.py)")


_MODELS: dict = {}


def case_model(case, module_tmp):
    """The shrunken zoo model of a reference case with its stand-in weights, loaded from an mmseg
    checkpoint that also holds the parts inference ignores (decoder, UNet output layer)."""
    references_or_skip(case)
    if case not in _MODELS:
        cfg, manifest = case_config(case)
        folder = module_tmp.mktemp(case)
        embed = folder / "class_embeddings.pth"
        torch.save(torch.from_numpy(np.load(REFS / case / "class_embeddings.npy")), embed)
        cfg["model"]["backbone"]["class_embed_path"] = str(embed)
        kw = model_kwargs(cfg)
        model = build_segmentor(kw)
        ckpt = folder / "vpd.pth"
        torch.save({"state_dict": stand_in_weights(manifest, case),
                    "meta": {"dataset_meta": {"classes": manifest["classes"]}}}, ckpt)
        load_weights(model, str(ckpt), vpd_args.UNUSED_CHECKPOINT_PARTS)
        _MODELS.clear()  # one at a time
        _MODELS[case] = model, spec_for(kw, [])
    return _MODELS[case]


def torch_depth(model, spec, bgr):
    """Runtime preprocessing -> torch graph -> mmseg's host postprocess (bilinear to the photo)."""
    from vdeploy.runtime.preprocess import preprocess

    x = preprocess(bgr, spec).inputs["images"]
    with torch.no_grad():
        depth, = model(torch.from_numpy(x))
        full = torch.nn.functional.interpolate(depth, size=bgr.shape[:2], mode="bilinear",
                                               align_corners=spec["postprocess"]["align_corners"])
    return x.shape[2:], full[0, 0].numpy()


@pytest.mark.parametrize("case, image", [
    pytest.param(c, i, marks=() if i == "astronaut" or (c, i) == ("vpd_tiny_480", "coffee") else pytest.mark.slow)
    for c in CASES for i in IMAGES])
def test_depth_matches_mmseg(case, image, module_tmp):
    """Depth at the photo's size against mmseg's `inference_model` pred_depth_map: mean relative
    difference <= 1e-4 and every pixel within 1e-3 (float32 rounding: measured ~1e-6)."""
    model, spec = case_model(case, module_tmp)
    bgr = cv2.imread(str(GOLDENS / "images" / f"{image}.png"))
    ref = np.load(REFS / case / f"{image}.npz")
    fed_hw, got = torch_depth(model, spec, bgr)
    assert tuple(fed_hw) == tuple(ref["img_shape"]) and got.shape == ref["depth"].shape
    rel = np.abs(got - ref["depth"]) / ref["depth"]
    print(f"{case} {image}: mean rel {rel.mean():.2e}, max rel {rel.max():.2e}")
    assert rel.mean() <= 1e-4 and rel.max() <= 1e-3, (rel.mean(), rel.max())


@pytest.mark.parametrize("case", CASES)
def test_stages_match_mmseg(case, module_tmp):
    """The first window of the first photo, stage by stage: context, latents, UNet features (head
    output where recorded)."""
    model, _ = case_model(case, module_tmp)
    stages = np.load(REFS / case / "stages.npz")
    bb = model.backbone
    with torch.no_grad():
        context = bb.context(1)
        latents = bb.encoder_vq(torch.from_numpy(stages["input"]))
        feats = bb.unet(torch.from_numpy(stages["latents"]), torch.ones(1, dtype=torch.long), context)
        head = model.decode_head(feats)
    pairs = [("context", context), ("latents", latents), ("head_out", head)]
    pairs += [(f"unet_out{i}", f) for i, f in enumerate(feats)]
    assert {"latents", "unet_out0", "unet_out3"} <= set(stages.files)
    for name, got in pairs:
        if name not in stages.files:  # the head's output is recorded by newer versions of the script
            continue
        want = stages[name]
        assert got.shape == want.shape, name
        got = got.numpy()
        if want.dtype == np.float16:  # stored rounded to float16: within its half-step of 2^-11 relative
            over = np.abs(got - want.astype(np.float32)) - (2.0 ** -11 * np.abs(got) + 1e-4 * np.abs(got).max())
            assert over.max() <= 0, (name, float(over.max()))
        else:
            err = float(np.abs(got - want).max() / np.abs(want).max())
            assert err < 1e-4, (name, err)


def test_references_are_a_fair_bar():
    """Depth that varies over the photo (not a sigmoid saturated at 0 or max_depth everywhere)."""
    for case in CASES:
        references_or_skip(case)
        fair = json.loads((REFS / case / "manifest.json").read_text())["fairness"]
        for image, fig in fair.items():
            assert fig["depth_relative_spread"] > 0.01 and fig["pre_sigmoid_saturated_over_6"] < 0.05, (case, image,
                                                                                                         fig)


def test_slide_is_whole_as_in_mmseg():
    """mmseg 1.2.2's DepthEstimator.inference overwrites 'slide' with whole-image inference."""
    cfg = zoo_cfg()
    cfg["model"]["test_cfg"]["mode"] = "slide"
    model, kw = meta_model(cfg)
    assert kw["mode"] == "whole" and model.mode == "whole" and "windows" not in spec_for(kw, [])["outputs"][0][
        "meaning"]


def test_whole_image_sizes_the_unet_cannot_take_are_refused_clearly():
    """As in mmseg, the padded image's sides must be multiples of 64 (the UNet concatenates each
    upsampled map with the encoder's of the same level); shapes only, on the meta device."""
    cfg = zoo_cfg()
    cfg["model"]["test_cfg"]["mode"] = "whole"
    model, _ = meta_model(cfg)
    with torch.no_grad():
        assert model(torch.empty(1, 3, 300, 640, device="meta"))[0].shape == (1, 1, 300, 640)
        with pytest.raises(ValueError, match=r"must be a multiple of 8 \(of 64 pixels in the image\)"):
            model(torch.empty(1, 3, 520, 100, device="meta"))


# --------------------------------------------------------------------------- slide_flip windows

class _Features(torch.nn.Module):
    """A backbone of four maps at strides 1, 2, 4, 8 that depends on position (not flip-symmetric)."""

    def forward(self, x):
        ramp = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x[:, :1]) / 10.0
        y = torch.cat([x, ramp], 1)
        return [torch.nn.functional.avg_pool2d(y, k) for k in (1, 2, 4, 8)]


class _Head(torch.nn.Module):
    align_corners = False

    def forward(self, feats):
        return feats[1].sum(1, keepdim=True).sigmoid() * 10  # at half the window's size


def mmseg_slide_flip(depth_fn, x, crop, stride):
    """mmseg's DepthEstimator.slide_flip_inference, transcribed loop by loop."""
    (hc, wc), (hs, ws) = crop, stride
    _, _, h, w = x.shape
    preds = x.new_zeros((1, 1, h, w))
    count = x.new_zeros((1, 1, h, w))
    for i in range(max(h - hc + hs - 1, 0) // hs + 1):
        for j in range(max(w - wc + ws - 1, 0) // ws + 1):
            y2, x2 = min(i * hs + hc, h), min(j * ws + wc, w)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            c = x[:, :, y1:y2, x1:x2]
            d = (depth_fn(c) + depth_fn(c.flip(3)).flip(3)) / 2
            preds[:, :, y1:y2, x1:x2] += d
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


@pytest.mark.parametrize("hw", [(37, 53), (24, 24), (16, 40), (50, 20)])
def test_slide_flip_windows_are_mmsegs(hw):
    model = DepthEstimator(_Features(), _Head(), mean=[0.0] * 3, std=[1.0] * 3, mode="slide_flip", crop_size=(24, 24),
                           stride=(10, 10)).eval()
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, = model(x)
        want = mmseg_slide_flip(model.depth, x, (24, 24), (10, 10))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, model.depth(x))  # windows and flips make a difference


# --------------------------------------------------------------------------- the config edge

UNET = ("diffusion_cfg", "params", "unet_config", "params")
VAE = ("diffusion_cfg", "params", "first_stage_config", "params", "ddconfig")


def _set(path, **values):
    def change(model):
        node = model["backbone"]
        for part in path:
            node = node[part]
        node.update(values)
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: m["backbone"]["unet_cfg"].pop("use_attn"), r"unet_cfg.use_attn=True \(the default"),
    (lambda m: m["backbone"]["unet_cfg"].update(use_attn=True), "use_attn=True"),
    (_set(UNET, use_spatial_transformer=False), "use_spatial_transformer=False is not supported"),
    (_set(UNET, use_linear_in_transformer=True), "use_linear_in_transformer is not supported .*Stable Diffusion 2"),
    (_set(UNET, num_head_channels=64), "num_head_channels=64 is not supported"),
    (_set(UNET, legacy=True), "legacy=True is not supported"),
    (lambda m: m["backbone"]["diffusion_cfg"]["params"]["unet_config"]["params"].pop("legacy"),
     "legacy=True is not supported"),
    (_set(UNET, context_dim=[768, 768, 768, 768]), "context_dim as a list"),
    (_set(UNET, use_scale_shift_norm=True), "use_scale_shift_norm=True"),
    (_set(UNET, num_classes=10), "num_classes=10"),
    (_set(UNET, in_channels=8), "must equal the autoencoder's embed_dim 4"),
    (_set(UNET, num_res_blocks=1), "in_channels .* must equal the UNet features' channels"),
    (_set(("diffusion_cfg", "params", "unet_config"),
          target="ldm.modules.diffusionmodules.openaimodel.EncoderUNetModel"), "unet_config.target .* is not supported"),
    (_set(("diffusion_cfg",), target="ldm.models.diffusion.ddpm.DDPM"), "diffusion_cfg.target"),
    (_set(("diffusion_cfg", "params", "first_stage_config"), target="ldm.models.autoencoder.VQModelInterface"),
     "first_stage_config.target"),
    (_set(VAE, attn_resolutions=[32]), r"attn_resolutions \[32\] is not supported"),
    (_set(VAE, attn_type="linear"), "vanilla attention"),
    (_set(VAE, double_z=False), "double_z must be True"),
    (lambda m: m["backbone"].update(type="ResNet"), "expected 'VPD'"),
    (lambda m: m["backbone"].update(pad_val=[0, 0, 0]), "pad_val must be a number"),
    (lambda m: m["backbone"].update(pad_shape=[512, 512, 3]), "pad_shape must be an int or"),
    (lambda m: m["decode_head"].update(feature_dim=1024), r"must be 8 \* embed_dim"),
    (lambda m: m["decode_head"].update(in_channels=[320, 640, 1280]), "4 feature maps"),
    (lambda m: m["decode_head"].update(type="FCNHead"), "expected 'VPDDepthHead'"),
    (lambda m: m["decode_head"].update(num_deconv_layers=2, num_deconv_filters=[32, 32, 64]), "does not fit"),
    (lambda m: m.update(neck={"type": "FPN"}), "neck with a DepthEstimator"),
    (lambda m: m["test_cfg"].update(mode="slide_flip_tta"), "test_cfg.mode 'slide_flip_tta' is not one of"),
])
def test_unsupported_settings_are_refused_in_one_line(change, message):
    cfg = copy.deepcopy(zoo_cfg())
    change(cfg["model"])
    with pytest.raises(ConfigError, match=message) as e:
        model_kwargs(cfg)
    assert "\n" not in str(e.value)


def test_slide_flip_is_for_depth_estimators_only():
    if not ZOO.is_dir():
        pytest.skip(f"{ZOO} is absent")
    cfg = load_config(ZOO / "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py")
    cfg["model"]["test_cfg"] = {"mode": "slide_flip", "crop_size": (512, 512), "stride": (341, 341)}
    with pytest.raises(ConfigError, match="'slide_flip' is not one of 'whole', 'slide'"):
        model_kwargs(cfg)


def _no_network(monkeypatch):
    import socket
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_a_url_class_embed_path_is_never_fetched(monkeypatch):
    """The zoo's URL: rows from NYUDataset's 27 scene classes, width the UNet's context_dim; nor is
    the Stable Diffusion checkpoint the config names fetched."""
    cfg = zoo_cfg()
    _no_network(monkeypatch)
    assert cfg["model"]["backbone"]["class_embed_path"].startswith("https://")
    model, kw = meta_model(cfg)
    assert {k: v for k, v in kw["backbone"]["class_embeddings"].items()} == {"rows": 27, "dim": 768, "values": None}
    assert tuple(model.backbone.class_embeddings.shape) == (28, 768)
    cfg["test_dataloader"]["dataset"]["type"] = "MyDepthDataset"
    with pytest.raises(ConfigError, match=r"is a URL \(never downloaded\) and the dataset type 'MyDepthDataset'"):
        model_kwargs(cfg)


def test_a_local_class_embed_path_gives_size_and_values(tmp_path):
    cfg = zoo_cfg()
    values = torch.randn(5, 768)
    torch.save(values, tmp_path / "emb.pth")
    cfg["model"]["backbone"]["class_embed_path"] = str(tmp_path / "emb.pth")
    kw = model_kwargs(cfg)
    assert kw["backbone"]["class_embeddings"]["rows"] == 5
    torch.testing.assert_close(kw["backbone"]["class_embeddings"]["values"], values)
    for bad, message in ((b"not a tensor file", "cannot be read as a tensor"),
                         (None, "must hold a 2-D float tensor"), (torch.randn(5, 64), "width 64 but the UNet's")):
        if isinstance(bad, bytes):
            (tmp_path / "emb.pth").write_bytes(bad)
        else:
            torch.save(bad if bad is not None else {"embeddings": values}, tmp_path / "emb.pth")
        with pytest.raises(ConfigError, match=message) as e:
            model_kwargs(cfg)
        assert "\n" not in str(e.value)
    cfg["model"]["backbone"]["class_embed_path"] = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="cannot be read"):
        model_kwargs(cfg)


def test_class_embed_select_uses_the_mean_row_and_without_it_every_row():
    """mmseg appends the rows' mean with class_embed_select and, with no category id, conditions
    every image on it; without select, on every row."""
    from vdeploy.models.mmseg.vpd import VPD

    values = torch.randn(4, 16)
    for select in (True, False):
        vpd = VPD(torch.nn.Identity(), torch.nn.Identity(), values, class_embed_select=select, gamma=0.5).eval()
        rows = torch.cat([values, values.mean(0, keepdim=True)]) if select else values
        torch.testing.assert_close(vpd.class_embeddings, rows)
        with torch.no_grad():
            ctx = vpd.context(3)
            want = rows[-1:] if select else rows
            want = want + 0.5 * vpd.text_adapter.fc(want)
        assert ctx.shape == (3, 1 if select else 4, 16)
        torch.testing.assert_close(ctx[2], want)


# --------------------------------------------------------------------------- checkpoints

def test_checkpoint_parts_inference_ignores_and_misfits(tmp_path):
    """The autoencoder's decoder, post_quant_conv and the UNet's `out` load silently; any other
    key without a place, or a missing one, is refused."""
    cfg = zoo_cfg()
    for section, values in (("diffusion_cfg.params.unet_config.params", {"model_channels": 64, "context_dim": 64}),
                            ("diffusion_cfg.params.first_stage_config.params.ddconfig", {"ch": 32})):
        node = cfg["model"]["backbone"]
        for part in section.split("."):
            node = node[part]
        node.update(values)
    cfg["model"]["decode_head"].update(in_channels=[64, 128, 256, 256], embed_dim=32, feature_dim=256)
    kw = model_kwargs(cfg)
    model = build_segmentor(kw)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    extra = {"backbone.encoder_vq.decoder.conv_in.weight": torch.zeros(32, 4, 3, 3),
             "backbone.encoder_vq.post_quant_conv.weight": torch.zeros(4, 4, 1, 1),
             "backbone.unet.unet.diffusion_model.out.2.weight": torch.zeros(4, 64, 3, 3),
             "auxiliary_head.conv.weight": torch.zeros(1)}
    path = tmp_path / "ok.pth"
    torch.save({"state_dict": {**sd, **extra}, "meta": {}}, path)
    load_weights(model, str(path), vpd_args.UNUSED_CHECKPOINT_PARTS)
    for broken, what in (({**sd, "backbone.encoder_vq.colorize": torch.zeros(3)}, "without a place"),
                         ({k: v for k, v in sd.items() if k != "backbone.gamma"}, "missing")):
        torch.save({"state_dict": broken, "meta": {}}, path)
        with pytest.raises(CheckpointError, match=what):
            load_weights(model, str(path), vpd_args.UNUSED_CHECKPOINT_PARTS)


# --------------------------------------------------------------------------- export

# The tiny case's network with smaller windows (128-pixel padding and windows, photos resized to a
# 128-pixel short side), so that the export and the runs take seconds; the head's 96-pixel output
# is resized to the window, as mmseg's predict_by_feat. The graph is judged against the torch model
# it was exported from (the tiny case is judged against mmseg above).
SMALL = """_base_ = [{base!r}]
model = dict(
    backbone=dict(pad_shape=128, class_embed_path={embed!r},
                  diffusion_cfg=dict(checkpoint=None, params=dict(
                      unet_config=dict(params=dict(model_channels=64, context_dim=64)),
                      first_stage_config=dict(params=dict(ddconfig=dict(ch=32)))))),
    decode_head=dict(in_channels=[64, 128, 256, 256], embed_dim=32, feature_dim=256),
    test_cfg=dict(crop_size=(128, 128), stride=(64, 64)))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(2000, 128), keep_ratio=True),
                 dict(type='PackSegInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""


def load_stand_ins(module):
    """../shared/goldens/weights.py's stand-ins (those of the reference cases) for every tensor but
    the class embeddings, which stay the config file's."""
    import sys

    sys.path.insert(0, str(GOLDENS))
    try:
        from weights import golden_state_dict
    finally:
        sys.path.remove(str(GOLDENS))
    own = {k: v for k, v in module.state_dict().items() if k != "backbone.class_embeddings"}
    sd = golden_state_dict([(k, tuple(v.shape)) for k, v in own.items()])
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=False)


def test_export_runs_on_onnxruntime_and_openvino(tmp_path):
    """Exported at one size and run at others: stock operators only; the bundle verifies against
    torch on a photo and random images (abs_rel at the photo's size under 1e-5, measured ~2e-6; raw
    depth within 1e-4 relative, measured ~4e-5 onnxruntime, ~2e-5 OpenVINO), an image smaller than
    a window gives depth within 1e-4 relative of torch's, and `predict` a depth map at the photo's
    size."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    from vdeploy.runtime.tasks import get_task

    if get_task("depth_estimation") is None:
        pytest.skip("the runtime has no depth_estimation task")
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model
    from vdeploy.runtime.predictor import Predictor

    zoo_cfg()
    embed = tmp_path / "class_embeddings.pth"
    rows = torch.randn(27, 64, generator=torch.Generator().manual_seed(0))
    torch.save(rows / rows.norm(dim=1, keepdim=True), embed)  # unit rows, as CLIP text embeddings
    config = tmp_path / "vpd_small.py"
    config.write_text(SMALL.format(base=str(ZOO / CONFIGS[0]), embed=str(embed)))
    dm = build_model(str(config))
    load_stand_ins(dm.module)
    photo = GOLDENS / "images" / "astronaut.png"
    bundle = export_bundle(dm, tmp_path / "b", ["onnx", "openvino"], verify_images=[photo], log=lambda *a: None)
    graph = onnx.load(str(tmp_path / "b" / "model.onnx"), load_external_data=False).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    sess = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(tmp_path / "b" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # the verification's inputs (the photo, random ones) all have a short side of 128; an image
    # smaller than a window as well:
    x = torch.rand(1, 3, 100, 150, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        want = dm.module(x)[0].numpy()
    assert want.std() > 1e-3 * want.mean()  # depth that varies
    for backend, got in (("onnxruntime", sess.run(None, {"images": x.numpy()})[0]),
                         ("openvino", compiled([x.numpy()])[compiled.output(0)])):
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4 * np.abs(want).max(), backend
    record = json.loads((tmp_path / "b" / "deploy.json").read_text())["verification"]
    assert record["passed"] and record["task"] == "depth_estimation"
    assert sorted(record["backends"]) == ["onnxruntime", "openvino"] and len(record["inputs"]) >= 2
    assert all(b["metrics"]["abs_rel"] < 1e-5 for b in record["backends"].values()), record["backends"]
    assert all(d["max_rel"] < 1e-4 for d in record["diagnostics"]), record["diagnostics"]
    bgr = cv2.imread(str(photo))
    depth = Predictor(bundle.path, "onnxruntime").predict(bgr).depth_map
    assert depth.shape == bgr.shape[:2] and 0 < depth.min() and depth.max() < 10
