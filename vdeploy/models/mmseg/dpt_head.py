"""DPT's decode head (mmseg's DPTHead) for inference.

Four ViT features (with their class tokens) are reassembled into a pyramid (readout of the
class token, 1x1 projection, then 4x / 2x transposed convs, identity, a stride-2 conv), each
mapped to `channels` by a 3x3 conv, and fused from the coarsest level up by residual
pre-activation conv units with 2x bilinear upsampling (align_corners=True, mmseg's default there).
Names follow mmseg (`reassemble_blocks.projects`, `fusion_blocks.i.res_conv_unit1.conv1`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .heads import DecodeHead
from .layers import BN, GELU, RELU, ConvModule, activation, norm_layer, norm_name, resize


class ReassembleBlocks(nn.Module):
    def __init__(self, in_channels=768, out_channels: Sequence[int] = (96, 192, 384, 768), readout_type="ignore"):
        super().__init__()
        if readout_type not in ("ignore", "add", "project"):
            raise ValueError(f"DPTHead: readout_type {readout_type!r} is not 'ignore', 'add' or 'project'")
        self.readout_type = readout_type
        self.projects = nn.ModuleList([ConvModule(in_channels, c, 1, norm=None, act=None) for c in out_channels])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, 4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, 2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, 2, 1)])
        if readout_type == "project":
            self.readout_projects = nn.ModuleList([nn.Sequential(nn.Linear(2 * in_channels, in_channels),
                                                                 activation(GELU)) for _ in out_channels])

    def forward(self, inputs):
        out = []
        for i, (x, cls_token) in enumerate(inputs):
            n, c, h, w = x.shape
            if self.readout_type == "project":
                tokens = x.flatten(2).transpose(1, 2)
                tokens = self.readout_projects[i](torch.cat([tokens, cls_token.unsqueeze(1).expand_as(tokens)], -1))
                x = tokens.transpose(1, 2).reshape(n, c, h, w)
            elif self.readout_type == "add":
                x = x + cls_token[:, :, None, None]
            out.append(self.resize_layers[i](self.projects[i](x)))
        return out


class PreActConv(nn.Module):
    """mmcv's ConvModule in the order (act, conv, norm), without a conv bias."""

    def __init__(self, channels, norm: Optional[dict], act: Optional[dict]):
        super().__init__()
        self.activate = activation(act, channels) if act is not None else None
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm_attr = None
        if norm is not None:
            self.norm_attr = norm_name(norm)
            self.add_module(self.norm_attr, norm_layer(norm, channels))

    def forward(self, x):
        if self.activate is not None:
            x = self.activate(x)
        x = self.conv(x)
        return getattr(self, self.norm_attr)(x) if self.norm_attr is not None else x


class PreActResidualConvUnit(nn.Module):
    def __init__(self, channels, norm, act):
        super().__init__()
        self.conv1 = PreActConv(channels, norm, act)
        self.conv2 = PreActConv(channels, norm, act)

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class FeatureFusionBlock(nn.Module):
    def __init__(self, channels, norm, act, first=False):
        super().__init__()
        self.project = ConvModule(channels, channels, 1, norm=None, act=None, bias=True)
        self.res_conv_unit1 = None if first else PreActResidualConvUnit(channels, norm, act)
        self.res_conv_unit2 = PreActResidualConvUnit(channels, norm, act)

    def forward(self, x, skip=None):
        if skip is not None:
            # mmseg resizes only when the sizes differ; resizing to the same size is an identity,
            # and doing it always keeps the exported graph right for every input size
            x = x + self.res_conv_unit1(resize(skip, x.shape[2:], align_corners=False))
        x = self.res_conv_unit2(x)
        x = resize(x, (x.shape[2] * 2, x.shape[3] * 2), align_corners=True)
        return self.project(x)


class DPTHead(DecodeHead):
    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, in_index=(0, 1, 2, 3), embed_dims=768,
                 post_process_channels: Sequence[int] = (96, 192, 384, 768), readout_type="ignore",
                 expand_channels=False, norm_cfg: Optional[dict] = BN, act_cfg: Optional[dict] = RELU,
                 align_corners=False, norm=None, act=None):
        # DPT's own norm_cfg/act_cfg (BN, ReLU by default) are its conv units'; the base head gets none
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=None, act=None)
        if len(in_index) != 4 or len(post_process_channels) != 4:
            raise ValueError("DPTHead needs four input features and four post_process_channels")
        if expand_channels:
            raise ValueError("DPTHead: expand_channels is not supported")
        if norm_cfg is not None and norm_cfg.get("type") in ("SyncBN", "BN2d"):
            norm_cfg = dict(norm_cfg, type="BN")
        norm_cfg = {k: v for k, v in (norm_cfg or {}).items() if k != "requires_grad"} or None
        self.reassemble_blocks = ReassembleBlocks(embed_dims, post_process_channels, readout_type)
        self.convs = nn.ModuleList([ConvModule(c, channels, 3, 1, 1, norm=None, act=None, bias=False)
                                    for c in post_process_channels])
        self.fusion_blocks = nn.ModuleList([FeatureFusionBlock(channels, norm_cfg, act_cfg, first=i == 0)
                                            for i in range(4)])
        self.project = ConvModule(channels, channels, 3, 1, 1, norm=norm_cfg, act=RELU)

    def features(self, inputs):
        x = [conv(f) for conv, f in zip(self.convs, self.reassemble_blocks(self.select(inputs)))]
        out = self.fusion_blocks[0](x[-1])
        for i in range(1, len(self.fusion_blocks)):
            out = self.fusion_blocks[i](out, x[-(i + 1)])
        return self.project(out)
