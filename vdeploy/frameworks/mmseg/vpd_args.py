"""Config -> keyword arguments of mmseg's VPD depth estimator (`DepthEstimator` with a `VPD`
backbone and a `VPDDepthHead`), and the model built from them.

VPD's backbone is configured by `diffusion_cfg`, a CompVis `ldm` config of Stable Diffusion v1:
a `LatentDiffusion` of an `openaimodel.UNetModel` (spatial transformers) and an
`AutoencoderKL`. Only what VPD's inference runs is read: the UNet up to its last output block
and the autoencoder's encoder. Pretrained weights the config names (`diffusion_cfg.checkpoint`,
an autoencoder `ckpt_path`) are never fetched: an mmseg VPD checkpoint holds all of them.
Training-only settings (dropout, gradient checkpointing, the noise schedule, losses, the
conditioning stage, the UNet's output layer) change nothing at inference and are ignored; any
other setting this build does not implement is refused in one line.

The class embeddings (`class_embed_path`) are a [classes, context_dim] tensor of scene-name text
embeddings. A URL is never downloaded: the tensor's size is the dataset's scene-class count by
the UNet's context width, and its values come from the checkpoint (mmseg saves it as the
`backbone.class_embeddings` buffer). A local file is read for its size and values.
"""
from __future__ import annotations

import re
from typing import Any

from ...errors import ConfigError
from .args_common import _section

LATENT_DIFFUSION = "ldm.models.diffusion.ddpm.LatentDiffusion"
UNET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
AUTOENCODER = "ldm.models.autoencoder.AutoencoderKL"

# Checkpoint parts VPD's inference never runs: the autoencoder's decoder half and the UNet's
# noise-prediction output layer.
UNUSED_CHECKPOINT_PARTS = ("backbone.encoder_vq.decoder.", "backbone.encoder_vq.post_quant_conv.",
                           "backbone.unet.unet.diffusion_model.out.")

# Scene classes of mmseg's depth datasets: the rows of their class embeddings (NYUDataset's
# METAINFO names 27 scene types, 'printer_room' to 'bookstore').
SCENE_CLASSES = {"NYUDataset": 27}

_UNET_WHERE = "model.backbone.diffusion_cfg.params.unet_config.params"
_VAE_WHERE = "model.backbone.diffusion_cfg.params.first_stage_config.params"

# SD v1 UNet settings whose other values this build does not implement:
# key -> (value needed, ldm's default, why).
_UNET_FIXED = {
    "use_spatial_transformer": (True, False,
                                "VPD is built on SD v1's spatial transformers, not the UNet's AttentionBlocks"),
    "legacy": (False, True, "SD v1 sets legacy=False"),
    "num_head_channels": (-1, -1, "heads are num_heads of channels // num_heads each"),
    "conv_resample": (True, True, "up/downsampling by convolution"),
    "dims": (2, 2, "images"),
    "num_classes": (None, None, "a class-conditional UNet"),
    "use_fp16": (False, False, "float32 inference"),
    "use_scale_shift_norm": (False, False, "SD v1's residual blocks add the time embedding"),
    "resblock_updown": (False, False, "SD v1 resamples with plain convolutions"),
    "n_embed": (None, None, "a codebook-predicting UNet"),
}
# Settings that do nothing at inference here (the output layer is not built, no AttentionBlock).
_UNET_IGNORED = ("image_size", "out_channels", "dropout", "use_checkpoint", "num_heads_upsample",
                 "use_new_attention_order")
_UNET_READ = ("in_channels", "model_channels", "num_res_blocks", "attention_resolutions", "channel_mult",
              "num_heads", "transformer_depth", "context_dim")


def _int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _ints(value, what: str, minimum: int = 1) -> tuple:
    if not (isinstance(value, (list, tuple)) and value):
        raise ConfigError(f"{what} must be a non-empty list of ints, got {value!r}")
    return tuple(_int(v, what, minimum) for v in value)


def _target(part: Any, want: str, where: str) -> dict:
    if not isinstance(part, dict):
        raise ConfigError(f"config has no `{where}` dict")
    if part.get("target") != want:
        raise ConfigError(f"{where}.target {part.get('target')!r} is not supported; expected {want!r}")
    params = part.get("params")
    if not isinstance(params, dict):
        raise ConfigError(f"config has no `{where}.params` dict")
    return params


def unet_kwargs(p: dict) -> dict:
    for key in p:
        if key not in _UNET_FIXED and key not in _UNET_IGNORED and key not in _UNET_READ:
            hint = " (a setting of Stable Diffusion 2's UNet; VPD uses SD v1's)" if key in (
                "use_linear_in_transformer", "disable_self_attentions", "num_attention_blocks",
                "disable_middle_self_attn", "adm_in_channels", "use_bf16") else ""
            raise ConfigError(f"{_UNET_WHERE}.{key} is not supported{hint}")
    for key, (need, default, why) in _UNET_FIXED.items():
        if p.get(key, default) != need:
            raise ConfigError(f"{_UNET_WHERE}.{key}={p.get(key, default)!r} is not supported ({why}; "
                              f"needs {need!r})")
    for key in ("in_channels", "model_channels", "num_res_blocks", "attention_resolutions", "num_heads",
                "context_dim"):
        if key not in p:
            raise ConfigError(f"{_UNET_WHERE} needs `{key}`")
    if isinstance(p["context_dim"], (list, tuple)):
        raise ConfigError(f"{_UNET_WHERE}.context_dim as a list (one per level) is not supported")
    if isinstance(p["num_res_blocks"], (list, tuple)):
        raise ConfigError(f"{_UNET_WHERE}.num_res_blocks as a list (one per level) is not supported")
    kw = {"in_channels": _int(p["in_channels"], f"{_UNET_WHERE}.in_channels"),
          "model_channels": _int(p["model_channels"], f"{_UNET_WHERE}.model_channels"),
          "num_res_blocks": _int(p["num_res_blocks"], f"{_UNET_WHERE}.num_res_blocks"),
          "attention_resolutions": _ints(p["attention_resolutions"], f"{_UNET_WHERE}.attention_resolutions"),
          "channel_mult": _ints(p.get("channel_mult", (1, 2, 4, 8)), f"{_UNET_WHERE}.channel_mult"),
          "num_heads": _int(p["num_heads"], f"{_UNET_WHERE}.num_heads"),
          "transformer_depth": _int(p.get("transformer_depth", 1), f"{_UNET_WHERE}.transformer_depth"),
          "context_dim": _int(p["context_dim"], f"{_UNET_WHERE}.context_dim")}
    if kw["model_channels"] % 32:
        raise ConfigError(f"{_UNET_WHERE}.model_channels must be a multiple of 32 (GroupNorm of 32 groups)")
    if any(kw["model_channels"] * m < kw["num_heads"] for m in kw["channel_mult"]):
        raise ConfigError(f"{_UNET_WHERE}.num_heads is larger than a level's channel count")
    return kw


def autoencoder_kwargs(p: dict) -> dict:
    dd = p.get("ddconfig")
    if not isinstance(dd, dict):
        raise ConfigError(f"config has no `{_VAE_WHERE}.ddconfig` dict")
    where = f"{_VAE_WHERE}.ddconfig"
    if p.get("colorize_nlabels") is not None:
        raise ConfigError(f"{_VAE_WHERE}.colorize_nlabels is not supported")
    if dd.get("double_z", True) is not True:
        raise ConfigError(f"{where}.double_z must be True (AutoencoderKL's latent Gaussian)")
    if dd.get("attn_resolutions"):
        raise ConfigError(f"{where}.attn_resolutions {dd['attn_resolutions']!r} is not supported (attention "
                          "inside the encoder's levels; SD's is [])")
    if dd.get("resamp_with_conv", True) is not True:
        raise ConfigError(f"{where}.resamp_with_conv=False is not supported")
    if dd.get("use_linear_attn", False) or dd.get("attn_type", "vanilla") != "vanilla":
        raise ConfigError(f"{where}: only the vanilla attention block is supported (attn_type='vanilla')")
    for key in ("ch", "ch_mult", "num_res_blocks", "z_channels", "in_channels"):
        if key not in dd:
            raise ConfigError(f"{where} needs `{key}`")
    if "embed_dim" not in p:
        raise ConfigError(f"{_VAE_WHERE} needs `embed_dim`")
    kw = {"embed_dim": _int(p["embed_dim"], f"{_VAE_WHERE}.embed_dim"),
          "in_channels": _int(dd["in_channels"], f"{where}.in_channels"),
          "ch": _int(dd["ch"], f"{where}.ch"), "ch_mult": _ints(dd["ch_mult"], f"{where}.ch_mult"),
          "num_res_blocks": _int(dd["num_res_blocks"], f"{where}.num_res_blocks"),
          "z_channels": _int(dd["z_channels"], f"{where}.z_channels")}
    if kw["in_channels"] != 3:
        raise ConfigError(f"{where}.in_channels must be 3 (the image)")
    if kw["ch"] % 32:
        raise ConfigError(f"{where}.ch must be a multiple of 32 (GroupNorm of 32 groups)")
    return kw


def unet_taps(unet: dict) -> list[tuple[int, int]]:
    """(channels, downsampling factor of the latent) of the features mmseg's UNetWrapper returns,
    finest first: after output blocks 1, 4 and 7 and after the last one, reversed."""
    levels, per_level = len(unet["channel_mult"]), unet["num_res_blocks"] + 1
    blocks = []
    for i in range(levels * per_level):
        level, j = levels - 1 - i // per_level, i % per_level
        factor = 2 ** level // (2 if level and j == per_level - 1 else 1)  # the level's last block upsamples
        blocks.append((unet["model_channels"] * unet["channel_mult"][level], factor))
    return ([blocks[i] for i in (1, 4, 7) if i < len(blocks)] + [blocks[-1]])[::-1]


def _is_url(path: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None or path.startswith("pavi:")


def class_embeddings(path: Any, dataset: Any, context_dim: int) -> dict:
    """{"rows", "dim", "values"}: the embeddings' size and, read from a local file, their values."""
    where = "model.backbone.class_embed_path"
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where} must be a path or URL of the class embeddings")
    if _is_url(path):
        rows = SCENE_CLASSES.get(dataset) if isinstance(dataset, str) else None
        if rows is None:
            raise ConfigError(f"{where} is a URL (never downloaded) and the dataset type {dataset!r} has no known "
                              f"scene-class count ({', '.join(sorted(SCENE_CLASSES))}); give a local file")
        return {"rows": rows, "dim": context_dim, "values": None}
    import torch

    try:
        values = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{where} {path!r} cannot be read as a tensor ({type(e).__name__})") from None
    if not (isinstance(values, torch.Tensor) and values.ndim == 2 and values.is_floating_point() and len(values)):
        raise ConfigError(f"{where} {path!r} must hold a 2-D float tensor [classes, width]")
    if values.shape[1] != context_dim:
        raise ConfigError(f"{where} {path!r} holds embeddings of width {values.shape[1]} but the UNet's "
                          f"context_dim is {context_dim}")
    return {"rows": int(values.shape[0]), "dim": context_dim, "values": values.float()}


def backbone_kwargs(backbone: dict, dataset: Any) -> dict:
    if backbone.get("type") != "VPD":
        raise ConfigError(f"model.backbone type {backbone.get('type')!r} is not supported with a DepthEstimator; "
                          "expected 'VPD'")
    unet_cfg = backbone.get("unet_cfg") or {}
    if not isinstance(unet_cfg, dict):
        raise ConfigError("model.backbone.unet_cfg must be a dict")
    if unet_cfg.get("use_attn", True) is not False:
        raise ConfigError("model.backbone.unet_cfg.use_attn=True (the default: cross-attention maps appended to "
                          "the features) is not supported; the zoo configs set use_attn=False")
    sd = _target(backbone.get("diffusion_cfg"), LATENT_DIFFUSION, "model.backbone.diffusion_cfg")
    unet = unet_kwargs(_target(sd.get("unet_config"), UNET, "model.backbone.diffusion_cfg.params.unet_config"))
    vae = autoencoder_kwargs(_target(sd.get("first_stage_config"), AUTOENCODER,
                                     "model.backbone.diffusion_cfg.params.first_stage_config"))
    if unet["in_channels"] != vae["embed_dim"]:
        raise ConfigError(f"{_UNET_WHERE}.in_channels {unet['in_channels']} must equal the autoencoder's embed_dim "
                          f"{vae['embed_dim']}")
    select = backbone.get("class_embed_select", False)
    if not isinstance(select, bool):
        raise ConfigError(f"model.backbone.class_embed_select must be True or False, got {select!r}")
    gamma = backbone.get("gamma", 1e-4)
    pad_val = backbone.get("pad_val", 0)
    for key, value in (("gamma", gamma), ("pad_val", pad_val)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"model.backbone.{key} must be a number, got {value!r}")
    pad_shape = backbone.get("pad_shape")
    if pad_shape is not None:
        pad_shape = (pad_shape, pad_shape) if isinstance(pad_shape, int) else pad_shape
        pad_shape = _ints(pad_shape, "model.backbone.pad_shape")
        if len(pad_shape) != 2:
            raise ConfigError(f"model.backbone.pad_shape must be an int or (height, width), got {pad_shape!r}")
    return {"type": "VPD", "unet": unet, "autoencoder": vae, "class_embed_select": select, "gamma": float(gamma),
            "pad_shape": pad_shape, "pad_val": float(pad_val),
            "class_embeddings": class_embeddings(backbone.get("class_embed_path"), dataset, unet["context_dim"])}


def head_kwargs(head: dict) -> dict:
    where = "model.decode_head"
    if head.get("type") != "VPDDepthHead":
        raise ConfigError(f"{where} type {head.get('type')!r} is not supported with a DepthEstimator; "
                          "expected 'VPDDepthHead'")
    in_channels = _ints(head.get("in_channels", (320, 640, 1280, 1280)), f"{where}.in_channels")
    if len(in_channels) != 4:
        raise ConfigError(f"{where}.in_channels must list the 4 feature maps' channels, got {in_channels!r}")
    embed_dim = _int(head.get("embed_dim", 192), f"{where}.embed_dim")
    feature_dim = _int(head.get("feature_dim", 1536), f"{where}.feature_dim")
    if feature_dim != 8 * embed_dim:
        raise ConfigError(f"{where}.feature_dim {feature_dim} must be 8 * embed_dim ({8 * embed_dim}): the "
                          "decoder takes embed_dim * 8 channels")
    if in_channels[0] % 16 or feature_dim % 16:
        raise ConfigError(f"{where}: in_channels[0] and feature_dim must be multiples of 16 (GroupNorm of 16 groups)")
    layers = _int(head.get("num_deconv_layers", 3), f"{where}.num_deconv_layers")
    filters = _ints(head.get("num_deconv_filters", (32, 32, 32)), f"{where}.num_deconv_filters")
    if len(filters) < layers or filters[layers - 1] != filters[-1]:
        # mmseg sizes the convolution after the deconvolutions by the list's last entry
        raise ConfigError(f"{where}.num_deconv_filters {filters!r} does not fit num_deconv_layers={layers}")
    border = head.get("fmap_border", 0)
    border = (border, border) if isinstance(border, int) and not isinstance(border, bool) else border
    border = _ints(border, f"{where}.fmap_border", minimum=0)
    if len(border) != 2:
        raise ConfigError(f"{where}.fmap_border must be an int or a pair, got {border!r}")
    max_depth = head.get("max_depth", 10.0)
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, float)) or max_depth <= 0:
        raise ConfigError(f"{where}.max_depth must be a positive number, got {max_depth!r}")
    align = head.get("align_corners", False)
    if not isinstance(align, bool):
        raise ConfigError(f"{where}.align_corners must be True or False, got {align!r}")
    return {"type": "VPDDepthHead", "in_channels": in_channels, "max_depth": float(max_depth), "embed_dim": embed_dim,
            "feature_dim": feature_dim, "num_deconv_filters": filters[:layers], "fmap_border": border,
            "align_corners": align}


def mode_built(mode: str) -> str:
    """The test mode that reproduces what mmseg 1.2.2 returns: its `DepthEstimator.inference`
    runs 'slide' and then overwrites the result with whole-image inference."""
    return "whole" if mode == "slide" else mode


def model_kwargs(model: dict, dataset: Any) -> dict:
    """The DepthEstimator parts of the kwargs; `dataset`: the test dataset's type."""
    if model.get("neck"):
        raise ConfigError("model.neck with a DepthEstimator is not supported")
    backbone = backbone_kwargs(_section(model, "backbone", "model."), dataset)
    head = head_kwargs(_section(model, "decode_head", "model."))
    taps = unet_taps(backbone["unet"])
    if [c for c, _ in taps] != list(head["in_channels"]):
        raise ConfigError(f"model.decode_head.in_channels {list(head['in_channels'])} must equal the UNet features' "
                          f"channels {[c for c, _ in taps]}")
    first = taps[0][1]
    if [f for _, f in taps] != [first, 2 * first, 4 * first, 8 * first]:
        raise ConfigError("the UNet's features (output blocks 1, 4, 7 and the last) must be at strides s, 2s, 4s, 8s "
                          f"for VPDDepthHead; this UNet gives {[8 * f for _, f in taps]}")
    return {"type": "DepthEstimator", "backbone": backbone, "head": head, "heads": [head]}


def build(kw: dict):
    """The DepthEstimator of `kw` (build.model_kwargs of a VPD config)."""
    import torch

    from ...models import mmseg as M

    bb = kw["backbone"]
    emb = bb["class_embeddings"]
    # without a local file, zeros until a checkpoint brings mmseg's buffer
    values = emb["values"] if emb["values"] is not None else torch.zeros(emb["rows"], emb["dim"])
    backbone = M.VPD(M.AutoencoderKLEncoder(**bb["autoencoder"]), M.LdmUNetModel(**bb["unet"]), values,
                     class_embed_select=bb["class_embed_select"], gamma=bb["gamma"], pad_shape=bb["pad_shape"],
                     pad_val=bb["pad_val"])
    head = M.VPDDepthHead(**{k: v for k, v in kw["head"].items() if k != "type"})
    return M.DepthEstimator(backbone, head, mean=kw["mean"], std=kw["std"], mode=kw["mode"],
                            crop_size=kw.get("crop_size"), stride=kw.get("stride"))
