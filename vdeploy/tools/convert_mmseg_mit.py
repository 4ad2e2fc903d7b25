"""The official SegFormer code's MiT (Mix Transformer) checkpoints (`mit_b0.pth` .. `mit_b5.pth`,
NVlabs naming) -> the names of mmseg's MixVisionTransformer, `backbone.` first:

    patch_embed{i}.proj / norm              -> backbone.layers.{i-1}.0.projection / norm
    block{i}.j.norm1 / norm2                -> backbone.layers.{i-1}.1.j.norm1 / norm2
    block{i}.j.attn.q + attn.kv (rows k, v) -> backbone.layers.{i-1}.1.j.attn.attn.in_proj_{weight,bias}
    block{i}.j.attn.proj                    -> backbone.layers.{i-1}.1.j.attn.attn.out_proj
    block{i}.j.attn.sr / attn.norm          -> backbone.layers.{i-1}.1.j.attn.sr / attn.norm
    block{i}.j.mlp.fc1 / fc2 (Linear)       -> backbone.layers.{i-1}.1.j.ffn.layers.0 / ffn.layers.4 (1x1 conv)
    block{i}.j.mlp.dwconv.dwconv            -> backbone.layers.{i-1}.1.j.ffn.layers.1
    norm{i}                                 -> backbone.layers.{i-1}.2

The expected keys and shapes come from the native MixVisionTransformer built with the widths,
depths, patch sizes and reduction ratios the checkpoint holds; every source key ends up used or
unused (the ImageNet classifier `head` is unused), every target key filled or missing.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError
from .convert_weights import Conversion, _find_prefix

ANCHOR = "patch_embed1.proj.weight"


def _rename(sd: dict) -> tuple[dict, dict]:
    """-> ({mmseg key without prefix: tensor}, {mmseg key: source key(s)})."""
    out, origin = {}, {}
    for key, tensor in sd.items():
        name = None
        if m := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(weight|bias)", key):
            name = f"layers.{int(m[1]) - 1}.0.{'projection' if m[2] == 'proj' else 'norm'}.{m[3]}"
        elif m := re.fullmatch(r"norm(\d)\.(weight|bias)", key):
            name = f"layers.{int(m[1]) - 1}.2.{m[2]}"
        elif m := re.fullmatch(r"block(\d)\.(\d+)\.(.+)\.(weight|bias)", key):
            stage, layer, part, kind = int(m[1]) - 1, m[2], m[3], m[4]
            head = f"layers.{stage}.1.{layer}."
            if part == "attn.q":
                kv = sd.get(key.replace(".attn.q.", ".attn.kv."))
                if kv is not None:
                    name, tensor = head + f"attn.attn.in_proj_{kind}", torch.cat([tensor, kv])
                    origin[name] = [key, key.replace(".attn.q.", ".attn.kv.")]
                    out[name] = tensor
                    continue
            simple = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attn.attn.out_proj", "attn.sr": "attn.sr",
                      "attn.norm": "attn.norm", "mlp.dwconv.dwconv": "ffn.layers.1"}
            if part in simple:
                name = head + f"{simple[part]}.{kind}"
            elif part in ("mlp.fc1", "mlp.fc2"):
                name = head + f"ffn.layers.{0 if part == 'mlp.fc1' else 4}.{kind}"
                if kind == "weight":
                    tensor = tensor.reshape(*tensor.shape, 1, 1)
        if name is not None:
            out[name] = tensor
            origin[name] = [key]
    return out, origin


def _reference(sd: dict) -> tuple[str, dict[str, tuple]]:
    from ..models.mmseg import MixVisionTransformer

    stages = sorted({int(m[1]) for k in sd if (m := re.fullmatch(r"patch_embed(\d)\.proj\.weight", k))})
    if stages != list(range(1, len(stages) + 1)):
        raise UserError(f"not a complete MiT state dict: patch embeddings for stages {stages}")
    widths = [sd[f"patch_embed{i}.proj.weight"].shape[0] for i in stages]
    patches = [sd[f"patch_embed{i}.proj.weight"].shape[-1] for i in stages]
    depths = [len({k.split(".")[1] for k in sd if k.startswith(f"block{i}.")}) for i in stages]
    srs = [sd[f"block{i}.0.attn.sr.weight"].shape[-1] if f"block{i}.0.attn.sr.weight" in sd else 1
           for i in stages]
    fc1 = sd.get("block1.0.mlp.fc1.weight")
    if fc1 is None or any(w % widths[0] for w in widths):
        raise UserError("not a complete MiT state dict: block1.0.mlp.fc1.weight absent or stage widths "
                        f"{widths} not multiples of the first")
    mlp_ratio = fc1.shape[0] // widths[0]
    # Heads change no weight shape: widths[i] = embed_dims * num_heads[i] with embed_dims = widths[0].
    with torch.device("meta"):
        model = MixVisionTransformer(in_channels=sd["patch_embed1.proj.weight"].shape[1], embed_dims=widths[0],
                                     num_layers=depths, num_heads=[w // widths[0] for w in widths],
                                     patch_sizes=patches, strides=[4] + [2] * (len(stages) - 1), sr_ratios=srs,
                                     mlp_ratio=mlp_ratio)
    arch = f"mit(widths={widths}, depths={depths}, sr_ratios={srs})"
    return arch, {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_segformer_mit(source_sd: dict[str, torch.Tensor], prefix: str = "backbone.") -> Conversion:
    """Rename an official MiT state dict into mmseg's names (`prefix` first), with coverage."""
    found = _find_prefix(source_sd, ANCHOR)
    if found is None:
        raise UserError(f"no official SegFormer MiT naming recognised: expected a key like {ANCHOR}")
    sd = {k[len(found):]: v for k, v in source_sd.items() if k.startswith(found)}
    arch, reference = _reference(sd)
    renamed, origin = _rename(sd)
    conv = Conversion(arch, {}, [], [], [], [], [])
    taken = set()
    for key, shape in reference.items():
        tensor = renamed.get(key)
        if tensor is None:
            conv.missing.append(key)
        elif tuple(tensor.shape) != shape:
            conv.mismatched.append((key, list(shape), list(tensor.shape)))
        else:
            conv.state_dict[prefix + key] = tensor
            conv.filled.append(key)
            taken.update(found + k for k in origin[key])
    conv.used = [k for k in source_sd if k in taken]
    conv.unused = [k for k in source_sd if k not in taken]
    return conv
