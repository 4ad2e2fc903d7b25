"""Reference depth maps of the real MMSegmentation 1.2.2 for VPD (a `DepthEstimator`: the `VPD`
backbone, i.e. Stable Diffusion's AutoencoderKL encoder and UNet run once at t=1, and the
`VPDDepthHead`), for the tests of vdeploy's VPD, plus the state-dict keys of both zoo configs.
Run it beside the project, in a scratch virtualenv (never a project dependency):

    python make_mmseg_references_vpd.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

CASE `vpd_zoo_keys` writes OUT_DIR/vpd_zoo_keys.json.gz: {config: [[key, shape], ...]} of mmseg's
state dict for both full zoo configs (class_embed_path a local [27, 768] file).

The scratch virtualenv: mmseg 1.2.2, mmdet 3.3.0, mmcv-lite 2.1.0 (with the `mmcv/_ext.py`
stand-in of make_mmseg_references_query.py; VPD calls no mmcv op), torch 2.14.1 (CPU), and
CompVis stable-diffusion's `ldm` package, which mmseg's VPD builds its networks with, made
importable by a .pth file. Nothing is stubbed: every import of ldm resolves to a real package.
    git -C stable-diffusion archive HEAD ldm | tar -x -C /tmp/sd-src     # CompVis, commit 21f890f9
    echo /tmp/sd-src > $VENV/lib/python3.11/site-packages/stable_diffusion_ldm.pth
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\nnumpy==2.2.6\\n' > constraints.txt
    pip install -c constraints.txt pytorch-lightning==1.9.5 omegaconf einops   # 1.x: has
                                        # pytorch_lightning.utilities.distributed.rank_zero_only
    pip install -c constraints.txt "setuptools<81"         # lightning_fabric imports pkg_resources
    pip install --no-deps taming-transformers-rom1504==0.0.6 openai-clip==1.0.1   # VectorQuantizer2; `clip`
    pip install -c constraints.txt transformers kornia     # ldm.modules.encoders.modules imports them
(`ldm.modules.encoders.modules` is imported only for `AbstractEncoder`, the configs' cond stage,
an empty nn.Module; the PyPI `taming-transformers` 0.0.1 lacks VectorQuantizer2, its rom1504 fork
has it.)

The cases shrink the network to seconds a window on a CPU (7-9 s on two cores) and keep its
structure (the manifest's `overrides`, dotted keys into the zoo config, which the tests apply
through vdeploy's reader):
UNet `model_channels` 320 -> 64 and `context_dim` 768 -> 64 (8 heads, channel_mult [1, 2, 4, 4],
two res blocks a level and the spatial transformers kept), the autoencoder's `ch` 128 -> 32, the
head's `in_channels` [64, 128, 256, 256], `embed_dim` 32, `feature_dim` 256 (= 8 x embed_dim, as
in the zoo: 1536 = 8 x 192); `diffusion_cfg.checkpoint` None (VPD pops it: no download) and
`class_embed_path` a local [27, 64] float32 tensor (`class_embeddings.pth`, a name relative to the
case folder, where it is written with `class_embeddings.npy`, the manifest's `class_embeddings`).
The test pipeline's Resize (short side 480 / 512, keep_ratio) and test_cfg (slide_flip: 480 crops
at stride 160 / 512 at 128) are the zoo's, so sliding windows and flips run; the test pipeline's
`LoadDepthAnnotation` is dropped (mmseg's inference_model only drops `LoadAnnotations`; there is no
depth file to load).

Weights: the shared stand-ins (../shared/goldens/weights.py) for every key, loaded strict, then
three tensors set (stored as final values in `bn_stats.npz`, which ../shared/acceptance/make_ckpt.py
applies after the stand-ins):
- `backbone.class_embeddings`: the buffer VPD built from the class-embedding file (its 27 rows and
  their mean, appended by `class_embed_select`), as in a trained checkpoint (the stand-in generator
  would put other values there);
- `decode_head.depth_pred_layer.2.weight` x3 (the manifest's `scaled`: {key: factor}, the factor
  multiplying the stand-in): the stand-in head's pre-sigmoid output has a spread of only 0.3 (std)
  around +0.8, depth 5.5-8.5 m of 10;
- `decode_head.depth_pred_layer.2.bias` centred (the manifest's `calibrated`): the stand-in bias
  minus the median pre-sigmoid value over every window of the first image after the x3, so that the
  pre-sigmoid output lies within about +-3 around 0 and the depth spans most of (0, max_depth)
  without saturating at either end.
The head decoder's BatchNorm statistics are left as made: their inputs have channel means within
+-1.2 and variances of 0.13-4 against the stand-ins' |mean| ~0.1 and 0.5-1.5; nothing saturates and
the figures below need no calibration.

Per image (inference_model), `<image>.npz`: `depth` (pred_depth_map, float32 H x W at the
original size), `orig_hw`, `img_shape` (after Resize), `windows` (sliding windows run, each also
mirrored). `stages.npz`, first image, first window, unmirrored, from hooks (`Probe`): `input` (the
VPD backbone's input after its padding to pad_shape), `latents` (encoder_vq.encode(x).mode()),
`context` (the text adapter's output, the UNet's cross-attention context), `unet_out0..3` (the
UNet outputs fed to the head, finest first), `head_out` (the head's depth at its own resolution,
before predict_by_feat's resize to the window), `window` (y1, x1, y2, x2). To stay small, the
UNet outputs and `head_out` are float16 (for locating a discrepancy; the bar is the float32 depth);
the rest is float32.

Fairness per image (manifest `fairness`): the share of pre-sigmoid values (every window and mirror,
at the head's resolution) with |x| > 6 and > 3 and their 1/50/99% quantiles; depth min / median /
max and std / mean; the relative depth change |d' - d| / d (mean and max over pixels) when the VPD
backbone's outputs, or the UNet's input latents, get 1e-4 relative Gaussian noise (x + 1e-4 *
mean|x| * N(0, 1), as mmseg_reference_common.label_map_references does); and the reference's own
float32 rounding: |d - d64| / d64 against the same model run in float64 on the same input
(`float64_twin`), the floor any faithful float32 re-implementation sits near. Measured (both cases,
all images): |x| > 6 on 0.003-0.01% of the values, depth min 0.8-1.1, median 5.1-5.2, max 9.2-9.8,
std / mean 0.23-0.28; backbone noise 1.5-2.2e-5 mean (1.7-2.3e-4 max), latent noise 3-4.2e-5
(3.5-5.5e-4), float32 rounding 6-8e-7 (6-9e-6).
"""
import copy
import gzip
import json
import os
import sys
import time

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmseg.apis import inference_model, init_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmseg_reference_common as common  # noqa: E402

CONFIGS = ("vpd/vpd_sd_4xb8-25k_nyu-480x480.py", "vpd/vpd_sd_4xb8-25k_nyu-512x512.py")
SD = "model.backbone.diffusion_cfg."
UNET = SD + "params.unet_config.params."
TINY = {
    SD + "checkpoint": None,
    UNET + "model_channels": 64,
    UNET + "context_dim": 64,
    SD + "params.first_stage_config.params.ddconfig.ch": 32,
    "model.decode_head.in_channels": [64, 128, 256, 256],
    "model.decode_head.embed_dim": 32,
    "model.decode_head.feature_dim": 256,
    "model.backbone.class_embed_path": "class_embeddings.pth",  # relative to the case folder
}
CASES = {"vpd_tiny_480": (CONFIGS[0], TINY), "vpd_tiny_512": (CONFIGS[1], TINY), "vpd_zoo_keys": None}
TEXT_DIM = 64
SCALED = {"decode_head.depth_pred_layer.2.weight": 3.0}
CENTRED = "decode_head.depth_pred_layer.2.bias"
STAGES = ("input", "latents", "context", "unet_out0", "unet_out1", "unet_out2", "unet_out3", "head_out")
HALF = ("unet_out0", "unet_out1", "unet_out2", "unet_out3", "head_out")
DROPPED_STEPS = ("LoadDepthAnnotation",)
STAGES_IMAGE = common.IMAGES[0]


def class_embeddings(n_classes, dim):
    """Deterministic stand-in class embeddings, from a fixed seed: unit rows sharing a common
    direction (cosine ~0.6 between rows, the mean row's norm ~0.8), as CLIP text embeddings of
    prompts that differ in one word do. Independent rows would average to a mean row of norm
    ~0.2, the context `class_embed_select` uses at inference, and weaken its part in the output."""
    rng = np.random.Generator(np.random.PCG64(2026))
    e = rng.standard_normal(dim) + 0.8 * rng.standard_normal((n_classes, dim))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def drop_steps(cfg):
    for pipe in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
        pipe[:] = [step for step in pipe if step.get("type") not in DROPPED_STEPS]


def load_config(zoo, config, overrides, embed_path):
    cfg = Config.fromfile(os.path.join(zoo, config))
    drop_steps(cfg)
    common.prepare_config(cfg, dict(overrides, **{"model.backbone.class_embed_path": embed_path}))
    return cfg


class Probe:
    """Forward hooks on a VPD DepthEstimator: the head's pre-sigmoid outputs of every window, the
    number of backbone calls, the first call's stages, and 1e-4 relative Gaussian noise on the
    backbone's outputs or on the UNet's input (the latents) when `noise` says so."""

    def __init__(self, model):
        self.noise, self.capture, self.stages, self.pre_sigmoid, self.calls = None, False, {}, [], 0
        bb, head = model.backbone, model.decode_head
        self.hooks = [
            bb.register_forward_hook(self._backbone),
            bb.encoder_vq.encoder.register_forward_pre_hook(self._input),
            bb.unet.register_forward_pre_hook(self._unet_in, with_kwargs=True),
            bb.unet.register_forward_hook(self._unet_out),
            head.depth_pred_layer.register_forward_hook(self._logits),
        ]
        # BaseDecodeHead.predict calls self.forward(...), not self(...): no module hook fires there,
        # so the head's output is taken by wrapping its forward on the instance
        self.head, head_forward = head, head.forward

        def forward(*args, **kwargs):
            out = head_forward(*args, **kwargs)
            if self._first():
                self.stages["head_out"] = out.detach().clone()
            return out
        head.forward = forward

    def remove(self):
        for h in self.hooks:
            h.remove()
        del self.head.forward  # back to the class's

    @staticmethod
    def jitter(t):
        g = torch.Generator().manual_seed(0)
        if isinstance(t, (list, tuple)):
            return type(t)(x + 1e-4 * x.abs().mean() * torch.randn(x.shape, generator=g) for x in t)
        return t + 1e-4 * t.abs().mean() * torch.randn(t.shape, generator=g)

    def _first(self):
        return self.capture and self.calls == 1

    def _input(self, mod, args):
        self.calls += 1  # the encoder runs once per backbone call, before the UNet
        if self._first():
            self.stages["input"] = args[0].detach().clone()

    def _backbone(self, mod, inp, out):
        return self.jitter(out) if self.noise == "backbone" else out

    def _unet_in(self, mod, args, kwargs):
        if self._first():
            self.stages["latents"] = args[0].detach().clone()
            self.stages["context"] = kwargs["context"].detach().clone()
        if self.noise == "latents":
            return (self.jitter(args[0]), *args[1:]), kwargs
        return None

    def _unet_out(self, mod, inp, out):
        if self._first():
            for i, o in enumerate(out):
                self.stages["unet_out%d" % i] = o.detach().clone()

    def _logits(self, mod, inp, out):
        self.pre_sigmoid.append(out.detach().flatten().clone())

    def run(self, model, bgr, noise=None, capture=False):
        """mmseg's inference_model -> (its result, every pre-sigmoid value of the head)."""
        self.noise, self.capture, self.pre_sigmoid, self.calls = noise, capture, [], 0
        with torch.no_grad():
            res = inference_model(model, bgr)
        self.noise = None
        return res, torch.cat(self.pre_sigmoid).numpy()


def relative_change(noisy, depth):
    r = np.abs(noisy - depth) / depth
    return float(r.mean()), float(r.max())


def first_window(model, img_shape):
    h_crop, w_crop = model.test_cfg.crop_size
    return np.array([0, 0, min(h_crop, img_shape[0]), min(w_crop, img_shape[1])])


def float64_twin(model):
    """A float64 copy of the model that computes the same depth from the same float32 input (the
    data preprocessor stays float32). ldm hard-codes float32 in two places: the UNet casts its input
    to `diffusion_model.dtype` and its GroupNorm32 normalises in float32 (a no-op on float32 input),
    so the twin gets dtype float64 and GroupNorm32 runs as a plain GroupNorm (see `run`)."""
    m64 = copy.deepcopy(model).double()
    m64.data_preprocessor.float()
    unet = m64.backbone.unet.unet.diffusion_model
    unet.dtype = torch.float64
    to64 = lambda mod, args: (args[0].double(), *args[1:])  # noqa: E731
    m64.backbone.register_forward_pre_hook(to64)
    unet.time_embed.register_forward_pre_hook(to64)  # ldm's timestep_embedding is float32

    def run(bgr):
        from ldm.modules.diffusionmodules.util import GroupNorm32
        forward, GroupNorm32.forward = GroupNorm32.forward, torch.nn.GroupNorm.forward
        try:
            with torch.no_grad():
                return inference_model(m64, bgr).pred_depth_map.data[0].double().numpy()
        finally:
            GroupNorm32.forward = forward
    return run


def depth_references(model, name, img_dir, case_dir):
    """Per image `<stem>.npz` (depth, orig_hw, img_shape, windows), `stages.npz` for the first image's
    first window; -> fairness figures per image stem."""
    depth64 = float64_twin(model)  # before the probe's hooks, which a deep copy would take along
    probe, fair = Probe(model), {}
    for img in common.IMAGES:
        bgr = cv2.imread(os.path.join(img_dir, img))
        t0 = time.time()
        res, logits = probe.run(model, bgr, capture=img == STAGES_IMAGE)
        seconds = time.time() - t0
        windows = probe.calls // 2  # each window runs the backbone on itself and on its mirror image
        depth = res.pred_depth_map.data[0].numpy().astype(np.float32)
        assert depth.shape == bgr.shape[:2]
        noisy_bb = probe.run(model, bgr, noise="backbone")[0].pred_depth_map.data[0].numpy()
        noisy_lat = probe.run(model, bgr, noise="latents")[0].pred_depth_map.data[0].numpy()
        d64 = depth64(bgr)
        stem = os.path.splitext(img)[0]
        img_shape = np.array(res.metainfo["img_shape"][:2])
        np.savez_compressed(os.path.join(case_dir, stem + ".npz"), depth=depth, orig_hw=np.array(bgr.shape[:2]),
                            img_shape=img_shape, windows=np.array(windows))
        if img == STAGES_IMAGE:
            assert sorted(probe.stages) == sorted(STAGES), sorted(probe.stages)
            stages = {k: v.numpy().astype(np.float16 if k in HALF else np.float32) for k, v in probe.stages.items()}
            np.savez_compressed(os.path.join(case_dir, "stages.npz"), window=first_window(model, img_shape), **stages)
        bb_mean, bb_max = relative_change(noisy_bb, depth)
        lat_mean, lat_max = relative_change(noisy_lat, depth)
        fair[stem] = {
            "img_shape": img_shape.tolist(), "windows": windows,
            "pre_sigmoid_saturated_over_6": float((np.abs(logits) > 6).mean()),
            "pre_sigmoid_over_3": float((np.abs(logits) > 3).mean()),
            "pre_sigmoid_quantiles_1_50_99": [round(float(q), 4) for q in np.quantile(logits, [0.01, 0.5, 0.99])],
            "depth_min": float(depth.min()), "depth_median": float(np.median(depth)), "depth_max": float(depth.max()),
            "depth_relative_spread": float(depth.std() / depth.mean()),
            "rel_change_under_1e-4_backbone_noise_mean": bb_mean, "rel_change_under_1e-4_backbone_noise_max": bb_max,
            "rel_change_under_1e-4_latent_noise_mean": lat_mean, "rel_change_under_1e-4_latent_noise_max": lat_max,
            "float32_rounding_vs_float64_mean": float((np.abs(depth - d64) / d64).mean()),
            "float32_rounding_vs_float64_max": float((np.abs(depth - d64) / d64).max()),
            "seconds": round(seconds, 1)}
        print(name, img, fair[stem], flush=True)
    probe.remove()
    return fair


def centre_depth_bias(model, bgr):
    """The last conv's bias minus the median of the head's pre-sigmoid output on one image."""
    probe = Probe(model)
    logits = probe.run(model, bgr)[1]
    probe.remove()
    bias = model.decode_head.depth_pred_layer[2].bias
    with torch.no_grad():
        bias -= float(np.median(logits))
    return {CENTRED: bias.detach().numpy().copy()}


def check_rebuild(model, manifest, golden_state_dict, stats):
    """The checkpoint ../shared/acceptance/make_ckpt.py rebuilds (stand-ins, then bn_stats.npz) is
    the model the references were made with."""
    sd = golden_state_dict(manifest)
    sd.update(stats)
    for k, v in model.state_dict().items():
        assert np.array_equal(np.asarray(sd[k]), v.numpy()), k


def make_case(name, zoo, goldens, out_dir):
    config, overrides = CASES[name]
    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    emb = class_embeddings(27, TEXT_DIM)
    np.save(os.path.join(case_dir, "class_embeddings.npy"), emb)
    embed_path = os.path.join(case_dir, overrides["model.backbone.class_embed_path"])
    torch.save(torch.from_numpy(emb), embed_path)
    cfg = load_config(zoo, config, overrides, os.path.abspath(embed_path))
    model = init_model(cfg, None, device="cpu").eval()
    golden_state_dict = common.golden_state_dict_from(goldens)
    manifest, sd, sha = common.stand_in_weights(model, golden_state_dict)
    stats = {"backbone.class_embeddings": model.state_dict()["backbone.class_embeddings"].numpy().copy()}
    stats.update({k: sd[k] * np.float32(f) for k, f in SCALED.items()})
    sd.update(stats)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    stats.update(centre_depth_bias(model, cv2.imread(os.path.join(img_dir, common.IMAGES[0]))))
    check_rebuild(model, manifest, golden_state_dict, stats)
    np.savez_compressed(os.path.join(case_dir, "bn_stats.npz"), **stats)
    fair = depth_references(model, name, img_dir, case_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": common.dataset_classes(cfg, model),
                   "test_pipeline_dropped": list(DROPPED_STEPS),
                   "class_embeddings": "class_embeddings.npy",
                   "scaled": SCALED,
                   "calibrated": {CENTRED: "the stand-in bias minus the median pre-sigmoid output on "
                                           + common.IMAGES[0] + " (after `scaled`)"},
                   "bn_stats": "final values set after the stand-ins: backbone.class_embeddings (the file's 27 "
                               "rows and their mean), the scaled and the calibrated tensors",
                   "stages": "stages.npz: " + STAGES_IMAGE + ", first window, unmirrored; float16: " + ", ".join(HALF),
                   "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)


def write_keys(path, zoo):
    """{config: [[key, shape], ...]} of mmseg's full model for every VPD zoo config (one at a time:
    Stable Diffusion's ~1.07e9 parameters take 4.3 GB)."""
    import tempfile
    keys = {}
    with tempfile.TemporaryDirectory() as tmp:
        embed_path = os.path.join(tmp, "class_embeddings.pth")
        torch.save(torch.from_numpy(class_embeddings(27, 768)), embed_path)
        for config in CONFIGS:
            cfg = load_config(zoo, config, {SD + "checkpoint": None}, embed_path)
            model = init_model(cfg, None, device="cpu")
            keys[config] = [(k, list(v.shape)) for k, v in model.state_dict().items()]
            print(config, len(keys[config]), sum(p.numel() for p in model.parameters()), flush=True)
            del model
    with gzip.open(path, "wt") as f:
        json.dump(keys, f)


if __name__ == "__main__":
    args = common.parse_args(__doc__, CASES)
    for case in args.cases or list(CASES):
        t0 = time.time()
        if case == "vpd_zoo_keys":
            write_keys(os.path.join(args.out_dir, case + ".json.gz"), args.zoo)
        else:
            make_case(case, args.zoo, args.goldens, args.out_dir)
        print(case, "done in %.0f s" % (time.time() - t0), flush=True)
