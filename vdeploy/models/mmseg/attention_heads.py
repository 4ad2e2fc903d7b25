"""MMSegmentation's attention decode heads for inference, in plain PyTorch that exports to stock
ONNX: DANet, CCNet (criss-cross attention), NonLocal, DisentangledNonLocal, GCNet, and the
self-attention block the context heads (context_heads.py, ocr_head.py) build on.

mmcv implements criss-cross attention as a compiled op; here it is written from mmcv's
documented semantics with einsum, sized from the input's shape so one graph serves every size.
"""
from __future__ import annotations

import torch
from torch import nn

from .heads import BN, RELU, DecodeHead, FCNHead, in_channels_of
from .layers import ConvModule, Scale


# --------------------------------------------------------------------------- shared blocks

class SelfAttentionBlock(nn.Module):
    """mmseg's utils.SelfAttentionBlock: query/key/value projections, softmax(q k) v, optional
    output projection. Projections are ConvModules (`*_norm`) or bare 1x1 convs."""

    def __init__(self, key_in_channels, query_in_channels, channels, out_channels, *, share_key_query=False,
                 query_downsample=None, key_downsample=None, key_query_num_convs=1, value_out_num_convs=1,
                 key_query_norm=False, value_out_norm=False, matmul_norm=False, with_out=False, norm=BN, act=RELU):
        super().__init__()
        self.channels = channels
        self.key_project = self.project(key_in_channels, channels, key_query_num_convs, key_query_norm, norm, act)
        self.query_project = self.key_project if share_key_query else \
            self.project(query_in_channels, channels, key_query_num_convs, key_query_norm, norm, act)
        self.value_project = self.project(key_in_channels, channels if with_out else out_channels,
                                          value_out_num_convs, value_out_norm, norm, act)
        self.out_project = self.project(channels, out_channels, value_out_num_convs, value_out_norm, norm, act) \
            if with_out else None
        self.query_downsample = query_downsample
        self.key_downsample = key_downsample
        self.matmul_norm = matmul_norm

    @staticmethod
    def project(cin, cout, num_convs, use_conv_module, norm, act):
        if use_conv_module:
            convs = [ConvModule(cin if i == 0 else cout, cout, 1, norm=norm, act=act) for i in range(num_convs)]
        else:
            convs = [nn.Conv2d(cin if i == 0 else cout, cout, 1) for i in range(num_convs)]
        return convs[0] if len(convs) == 1 else nn.Sequential(*convs)

    def forward(self, query_feats, key_feats):
        query = self.query_project(query_feats)
        if self.query_downsample is not None:
            query = self.query_downsample(query)
        query = query.flatten(2).transpose(1, 2)
        key = self.key_project(key_feats)
        value = self.value_project(key_feats)
        if self.key_downsample is not None:
            key, value = self.key_downsample(key), self.key_downsample(value)
        key = key.flatten(2)
        value = value.flatten(2).transpose(1, 2)
        sim = torch.matmul(query, key)
        if self.matmul_norm:
            sim = self.channels ** -0.5 * sim
        context = torch.matmul(sim.softmax(dim=-1), value).transpose(1, 2)
        context = context.reshape(query_feats.shape[0], -1, query_feats.shape[2], query_feats.shape[3])
        return context if self.out_project is None else self.out_project(context)


class _AttentionFCNHead(FCNHead):
    """The heads built on FCNHead with a block between its two convs (NL, DNL, GC, CC)."""

    def block(self, x):
        raise NotImplementedError

    def features(self, inputs):
        x = self.select(inputs)
        return self.concat(x, self.convs[1](self.block(self.convs[0](x))))


# --------------------------------------------------------------------------- DANet

class PAM(SelfAttentionBlock):
    """Position attention: plain 1x1 convs, no scaling, a learned residual weight."""

    def __init__(self, in_channels, channels):
        super().__init__(in_channels, in_channels, channels, in_channels, norm=None, act=None)
        self.gamma = Scale(0)

    def forward(self, x):
        return self.gamma(super().forward(x, x)) + x


class CAM(nn.Module):
    """Channel attention: softmax(max(energy) - energy) over the channel-channel energy."""

    def __init__(self):
        super().__init__()
        self.gamma = Scale(0)

    def forward(self, x):
        n, c, h, w = x.shape
        q = x.reshape(n, c, -1)
        energy = torch.bmm(q, q.transpose(1, 2))
        energy = energy.max(dim=-1, keepdim=True)[0].expand_as(energy) - energy
        out = torch.bmm(energy.softmax(dim=-1), q).reshape(n, c, h, w)
        return self.gamma(out) + x


class DAHead(DecodeHead):
    """DANet; at inference only the fused (PAM + CAM) logits are used."""

    def __init__(self, in_channels, channels, num_classes, *, pam_channels, in_index=-1, align_corners=False,
                 input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.pam_in_conv = self.conv(in_channels, channels, 3, 1)
        self.pam = PAM(channels, pam_channels)
        self.pam_out_conv = self.conv(channels, channels, 3, 1)
        self.pam_conv_seg = nn.Conv2d(channels, num_classes, 1)  # training-only logits; kept for the weights
        self.cam_in_conv = self.conv(in_channels, channels, 3, 1)
        self.cam = CAM()
        self.cam_out_conv = self.conv(channels, channels, 3, 1)
        self.cam_conv_seg = nn.Conv2d(channels, num_classes, 1)

    def features(self, inputs):
        x = self.select(inputs)
        return self.pam_out_conv(self.pam(self.pam_in_conv(x))) + self.cam_out_conv(self.cam(self.cam_in_conv(x)))


# --------------------------------------------------------------------------- CCNet

class CrissCrossAttention(nn.Module):
    """mmcv's CrissCrossAttention: each pixel attends to its row and its column (the pixel
    itself counted once, through the row), softmax over both together."""

    def __init__(self, in_channels):
        super().__init__()
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = Scale(0.0)

    def forward(self, x):
        h = x.shape[2]
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        # energy along the column: [b, h, w, i] (i: rows), the pixel itself masked out
        energy_h = torch.einsum("bchw,bciw->bhwi", q, k)
        rows = torch.arange(h, device=x.device)
        self_mask = (rows[:, None] == rows[None, :])[:, None, :]  # [h, 1, i]
        energy_h = energy_h.masked_fill(self_mask, float("-inf"))
        energy_w = torch.einsum("bchw,bchj->bhwj", q, k)
        attn = torch.cat([energy_h, energy_w], dim=-1).softmax(dim=-1)
        out = torch.einsum("bciw,bhwi->bchw", v, attn[..., :h]) + torch.einsum("bchj,bhwj->bchw", v, attn[..., h:])
        return self.gamma(out) + x


class CCHead(_AttentionFCNHead):
    def __init__(self, in_channels, channels, num_classes, *, recurrence=2, **kw):
        super().__init__(in_channels, channels, num_classes, num_convs=2, **kw)
        self.recurrence = recurrence
        self.cca = CrissCrossAttention(channels)

    def block(self, x):
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x


# --------------------------------------------------------------------------- NonLocal / DNL / GC

class NonLocal2d(nn.Module):
    """mmcv's NonLocal2d (no sub-sampling); modes embedded_gaussian, dot_product, gaussian,
    concatenation."""

    def __init__(self, in_channels, reduction=2, use_scale=True, mode="embedded_gaussian", norm=BN):
        super().__init__()
        if mode not in ("gaussian", "embedded_gaussian", "dot_product", "concatenation"):
            raise ValueError(f"NonLocal mode {mode!r} is not supported")
        self.in_channels, self.mode, self.use_scale = in_channels, mode, use_scale
        self.inter_channels = max(in_channels // reduction, 1)
        self.g = ConvModule(in_channels, self.inter_channels, 1, norm=None, act=None)
        self.conv_out = ConvModule(self.inter_channels, in_channels, 1, norm=norm, act=None)
        if mode != "gaussian":
            self.theta = ConvModule(in_channels, self.inter_channels, 1, norm=None, act=None)
            self.phi = ConvModule(in_channels, self.inter_channels, 1, norm=None, act=None)
        if mode == "concatenation":
            self.concat_project = ConvModule(self.inter_channels * 2, 1, 1, norm=None, act=RELU, bias=False)

    def thetaphi(self, x):
        n = x.shape[0]
        if self.mode == "gaussian":
            flat = x.reshape(n, self.in_channels, -1)
            return flat.transpose(1, 2), flat
        if self.mode == "concatenation":
            return (self.theta(x).reshape(n, self.inter_channels, -1, 1),
                    self.phi(x).reshape(n, self.inter_channels, 1, -1))
        return self.theta(x).flatten(2).transpose(1, 2), self.phi(x).flatten(2)

    def pairwise(self, theta, phi):
        if self.mode == "concatenation":
            h, w = theta.shape[2], phi.shape[3]
            weight = self.concat_project(torch.cat([theta.expand(-1, -1, -1, w), phi.expand(-1, -1, h, -1)], dim=1))
            weight = weight[:, 0]
            return weight / weight.shape[-1]
        weight = torch.matmul(theta, phi)
        if self.mode == "dot_product":
            return weight / weight.shape[-1]
        if self.mode == "embedded_gaussian" and self.use_scale:
            weight = weight / theta.shape[-1] ** 0.5
        return weight.softmax(dim=-1)

    def forward(self, x):
        n = x.shape[0]
        g = self.g(x).flatten(2).transpose(1, 2)
        theta, phi = self.thetaphi(x)
        y = torch.matmul(self.pairwise(theta, phi), g).transpose(1, 2)
        y = y.reshape(n, self.inter_channels, x.shape[2], x.shape[3])
        return x + self.conv_out(y)


class NLHead(_AttentionFCNHead):
    def __init__(self, in_channels, channels, num_classes, *, reduction=2, use_scale=True,
                 mode="embedded_gaussian", **kw):
        super().__init__(in_channels, channels, num_classes, num_convs=2, **kw)
        self.nl_block = NonLocal2d(channels, reduction, use_scale, mode, kw.get("norm", BN))

    def block(self, x):
        return self.nl_block(x)


class DisentangledNonLocal2d(NonLocal2d):
    """mmseg's DNL: whitened (mean-subtracted) pairwise term with a temperature, plus a unary
    term from a 1x1 mask conv."""

    def __init__(self, in_channels, reduction=2, use_scale=True, mode="embedded_gaussian", norm=BN,
                 temperature=0.05):
        super().__init__(in_channels, reduction, use_scale, mode, norm)
        self.temperature = temperature
        self.conv_mask = nn.Conv2d(in_channels, 1, 1)

    def pairwise(self, theta, phi):
        if self.mode != "embedded_gaussian":
            return super().pairwise(theta, phi)
        weight = torch.matmul(theta, phi)
        if self.use_scale:
            weight = weight / theta.shape[-1] ** 0.5
        return (weight / self.temperature).softmax(dim=-1)

    def forward(self, x):
        n = x.shape[0]
        g = self.g(x).flatten(2).transpose(1, 2)
        theta, phi = self.thetaphi(x)
        theta = theta - theta.mean(dim=-2, keepdim=True)
        phi = phi - phi.mean(dim=-1, keepdim=True)
        y = torch.matmul(self.pairwise(theta, phi), g).transpose(1, 2)
        y = y.reshape(n, self.inter_channels, x.shape[2], x.shape[3])
        unary = torch.matmul(self.conv_mask(x).flatten(2).softmax(dim=-1), g)  # [n, 1, inter]
        unary = unary.transpose(1, 2).reshape(n, self.inter_channels, 1, 1)
        return x + self.conv_out(y + unary)


class DNLHead(_AttentionFCNHead):
    def __init__(self, in_channels, channels, num_classes, *, reduction=2, use_scale=True,
                 mode="embedded_gaussian", temperature=0.05, **kw):
        super().__init__(in_channels, channels, num_classes, num_convs=2, **kw)
        self.dnl_block = DisentangledNonLocal2d(channels, reduction, use_scale, mode, kw.get("norm", BN), temperature)

    def block(self, x):
        return self.dnl_block(x)


class ContextBlock(nn.Module):
    """mmcv's ContextBlock (GCNet): attention (or average) pooling, then channel add / mul."""

    def __init__(self, in_channels, ratio, pooling_type="att", fusion_types=("channel_add",)):
        super().__init__()
        planes = int(in_channels * ratio)
        self.pooling_type = pooling_type
        if pooling_type == "att":
            self.conv_mask = nn.Conv2d(in_channels, 1, 1)

        def transform():
            return nn.Sequential(nn.Conv2d(in_channels, planes, 1), nn.LayerNorm([planes, 1, 1]), nn.ReLU(),
                                 nn.Conv2d(planes, in_channels, 1))
        self.channel_add_conv = transform() if "channel_add" in fusion_types else None
        self.channel_mul_conv = transform() if "channel_mul" in fusion_types else None

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        if self.pooling_type == "att":
            mask = self.conv_mask(x).flatten(2).softmax(dim=2)  # [n, 1, hw]
            context = torch.matmul(x.flatten(2), mask.transpose(1, 2)).reshape(n, c, 1, 1)
        else:
            context = x.mean(dim=(2, 3), keepdim=True)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out


class GCHead(_AttentionFCNHead):
    def __init__(self, in_channels, channels, num_classes, *, ratio=0.25, pooling_type="att",
                 fusion_types=("channel_add",), **kw):
        super().__init__(in_channels, channels, num_classes, num_convs=2, **kw)
        self.gc_block = ContextBlock(channels, ratio, pooling_type, tuple(fusion_types))

    def block(self, x):
        return self.gc_block(x)
