"""Native ViT backbone names (what `convert_state_dict` makes of timm / torchvision / official ViT
checkpoints, shape-checked there) -> the names of mmseg's VisionTransformer, `backbone.` first,
so that the file initialises an mmseg ViT segmentor (SETR, Segmenter, DPT, UPerNet-ViT):

    cls_token, pos_embed                    -> backbone.cls_token, backbone.pos_embed
    patch_embed.proj.weight                 -> backbone.patch_embed.projection.weight
    blocks.i.norm1 / norm2                  -> backbone.layers.i.ln1 / ln2
    blocks.i.attn.qkv (rows q, k, v)        -> backbone.layers.i.attn.attn.in_proj_{weight,bias}
    blocks.i.attn.proj                      -> backbone.layers.i.attn.attn.out_proj
    blocks.i.mlp.fc1 / fc2                  -> backbone.layers.i.ffn.layers.0.0 / ffn.layers.1
    norm                                    -> backbone.ln1 (used by configs with final_norm=True)

The patch embedding's bias has no place: mmseg's VisionTransformer is built with
patch_bias=False in every zoo config (mmseg drops that bias too when it initialises from such a
checkpoint). The position embedding keeps the source's grid; mmseg resizes it to the config's
`img_size` when it loads a pretrained backbone, so `img_size` must give the same grid here
(e.g. 224 for a 224-pixel, patch-16 checkpoint) or the file is refused when loaded.
"""
from __future__ import annotations

import re

_BLOCK = {"norm1": "ln1", "norm2": "ln2", "attn.proj": "attn.attn.out_proj", "mlp.fc1": "ffn.layers.0.0",
          "mlp.fc2": "ffn.layers.1"}
DROPPED_NOTE = ("patch_embed.proj.bias dropped: mmseg's VisionTransformer has no patch-embedding bias "
                "(patch_bias=False in its configs)")


def native_vit_to_mmseg(sd: dict, prefix: str = "backbone.") -> tuple[dict, list[str]]:
    """-> ({mmseg key: tensor}, [native keys left out])."""
    out, dropped = {}, []
    for key, tensor in sd.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", key)
        if m:
            i, part, kind = m.groups()
            name = f"attn.attn.in_proj_{kind}" if part == "attn.qkv" else f"{_BLOCK[part]}.{kind}"
            out[f"{prefix}layers.{i}.{name}"] = tensor
        elif key in ("cls_token", "pos_embed"):
            out[prefix + key] = tensor
        elif key == "patch_embed.proj.weight":
            out[prefix + "patch_embed.projection.weight"] = tensor
        elif key in ("norm.weight", "norm.bias"):
            out[prefix + "ln1." + key.split(".")[1]] = tensor
        else:
            dropped.append(key)
    return out, dropped
