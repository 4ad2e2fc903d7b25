"""Native Swin (v1) backbone names (what `convert_state_dict` makes of timm, torchvision and the
official Swin code's checkpoints, shape-checked there) -> the names of mmseg's SwinTransformer,
`backbone.` first, so that the file initialises an mmseg Swin segmentor (UPerNet-Swin):

    patch_embed.proj / norm                 -> backbone.patch_embed.projection / norm
    stages.s.blocks.b.norm1 / norm2         -> backbone.stages.s.blocks.b.norm1 / norm2
    stages.s.blocks.b.attn.qkv / proj / relative_position_bias_table
                                            -> backbone.stages.s.blocks.b.attn.w_msa.(same)
    stages.s.blocks.b.mlp.fc1 / fc2         -> backbone.stages.s.blocks.b.ffn.layers.0.0 / ffn.layers.1
    stages.s.downsample (starts stage s)    -> backbone.stages.(s-1).downsample (ends stage s-1)

Patch merging's 4C features change order: the official code concatenates the four 2x2 offsets
(0,0), (1,0), (0,1), (1,1) (row, column) one after another, mmseg unfolds them channel by channel
((c, 0, 0), (c, 0, 1), (c, 1, 0), (c, 1, 1) for each c), so the reduction's input columns and the
norm's entries are permuted. The classifier's final `norm` has no place: mmseg normalises each
output with its own LayerNorm (norm0..norm3), which the segmentor's training sets.
"""
from __future__ import annotations

import re

import torch

_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.qkv": "attn.w_msa.qkv", "attn.proj": "attn.w_msa.proj",
          "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1"}
DROPPED_NOTE = ("norm.weight, norm.bias dropped: mmseg's Swin has one LayerNorm per output (norm0..norm3), "
                "trained with the segmentor")


def unfold_order(t: torch.Tensor) -> torch.Tensor:
    """Permute the 4C axis (the last one) from offset-major (official) to channel-major (nn.Unfold)."""
    c = t.shape[-1] // 4
    lead = t.shape[:-1]
    return t.reshape(*lead, 4, c)[..., [0, 2, 1, 3], :].transpose(-1, -2).reshape(*lead, 4 * c)


def native_swin_to_mmseg(sd: dict, prefix: str = "backbone.") -> tuple[dict, list[str]]:
    """-> ({mmseg key: tensor}, [native keys left out])."""
    out, dropped = {}, []
    for key, tensor in sd.items():
        block = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
                             r"\.(weight|bias)", key)
        table = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.attn\.relative_position_bias_table", key)
        merge = re.fullmatch(r"stages\.(\d)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", key)
        patch = re.fullmatch(r"patch_embed\.(proj|norm)\.(weight|bias)", key)
        if block:
            s, b, part, kind = block.groups()
            out[f"{prefix}stages.{s}.blocks.{b}.{_BLOCK[part]}.{kind}"] = tensor
        elif table:
            out[f"{prefix}stages.{table[1]}.blocks.{table[2]}.attn.w_msa.relative_position_bias_table"] = tensor
        elif merge and int(merge[1]) >= 1:
            out[f"{prefix}stages.{int(merge[1]) - 1}.downsample.{merge[2]}"] = unfold_order(tensor)
        elif patch:
            out[f"{prefix}patch_embed.{'projection' if patch[1] == 'proj' else 'norm'}.{patch[2]}"] = tensor
        else:
            dropped.append(key)
    return out, dropped
