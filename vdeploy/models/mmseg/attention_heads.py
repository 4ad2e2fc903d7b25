"""MMSegmentation's attention / context decode heads for inference, in plain PyTorch that
exports to stock ONNX: DANet, CCNet (criss-cross attention), NonLocal, DisentangledNonLocal,
GCNet, ANN, EMANet, APCNet, DMNet, ISANet, PSANet (PSA mask), EncNet.

mmcv implements criss-cross attention and the PSA mask as compiled ops; here they are written
from mmcv's documented semantics with einsum / gather, sized from the input's shape so one
graph serves every image size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import BN, RELU, DecodeHead, FCNHead, in_channels_of
from .layers import AdaptiveAvgPool, ConvModule, Scale, activation, adaptive_avg_pool, norm_layer, resize, resize_to


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


# --------------------------------------------------------------------------- ANN

class PPMConcat(nn.Module):
    """Adaptive average pools at several scales, flattened and concatenated: [n, c, sum(s*s)]."""

    def __init__(self, pool_scales):
        super().__init__()
        self.pool_scales = tuple(pool_scales)

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        return torch.cat([adaptive_avg_pool(x, s).reshape(n, c, -1) for s in self.pool_scales], dim=2)


class _KeyPooled(nn.Module):
    """Adapts PPMConcat's [n, c, L] to the block's 'reshape to [n, c, -1]' (a no-op there)."""


class ANNBlock(SelfAttentionBlock):
    def __init__(self, low_in_channels, high_in_channels, channels, out_channels, share_key_query, query_scale,
                 key_pool_scales, norm, act):
        super().__init__(low_in_channels, high_in_channels, channels, out_channels, share_key_query=share_key_query,
                         query_downsample=nn.MaxPool2d(query_scale) if query_scale > 1 else None,
                         key_downsample=PPMConcat(key_pool_scales), key_query_num_convs=1, value_out_num_convs=1,
                         key_query_norm=True, value_out_norm=False, matmul_norm=True, with_out=True, norm=norm,
                         act=act)


class AFNB(nn.Module):
    def __init__(self, low_in_channels, high_in_channels, channels, out_channels, query_scales, key_pool_scales,
                 norm, act):
        super().__init__()
        self.stages = nn.ModuleList([ANNBlock(low_in_channels, high_in_channels, channels, out_channels, False, s,
                                              key_pool_scales, norm, act) for s in query_scales])
        self.bottleneck = ConvModule(out_channels + high_in_channels, out_channels, 1, norm=norm, act=None)

    def forward(self, low, high):
        context = torch.stack([stage(high, low) for stage in self.stages], dim=0).sum(dim=0)
        return self.bottleneck(torch.cat([context, high], 1))


class APNB(nn.Module):
    def __init__(self, in_channels, channels, out_channels, query_scales, key_pool_scales, norm, act):
        super().__init__()
        self.stages = nn.ModuleList([ANNBlock(in_channels, in_channels, channels, out_channels, True, s,
                                              key_pool_scales, norm, act) for s in query_scales])
        self.bottleneck = ConvModule(2 * in_channels, out_channels, 1, norm=norm, act=act)

    def forward(self, x):
        context = torch.stack([stage(x, x) for stage in self.stages], dim=0).sum(dim=0)
        return self.bottleneck(torch.cat([context, x], 1))


class ANNHead(DecodeHead):
    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, project_channels, query_scales=(1,),
                 key_pool_scales=(1, 3, 6, 8), in_index=(2, 3), align_corners=False, norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        low, high = in_channels
        self.fusion = AFNB(low, high, project_channels, high, query_scales, key_pool_scales, norm, act)
        self.bottleneck = self.conv(high, channels, 3, 1)
        self.context = APNB(channels, project_channels, channels, query_scales, key_pool_scales, norm, act)

    def features(self, inputs):
        low, high = self.select(inputs)
        return self.context(self.bottleneck(self.fusion(low, high)))


# --------------------------------------------------------------------------- EMANet

class EMAModule(nn.Module):
    """Expectation-maximisation attention with the learned `bases` buffer (inference: no update)."""

    def __init__(self, channels, num_bases, num_stages):
        super().__init__()
        self.num_stages = num_stages
        self.register_buffer("bases", F.normalize(torch.randn(1, channels, num_bases), dim=1))

    def forward(self, feats):
        n, c, h, w = feats.shape
        feats = feats.reshape(n, c, -1)
        bases = self.bases.expand(n, -1, -1)
        attention = None
        for _ in range(self.num_stages):
            attention = torch.bmm(feats.transpose(1, 2), bases).softmax(dim=2)  # [n, hw, k]
            normed = attention / attention.sum(dim=1, keepdim=True).clamp(min=1e-12)
            bases = F.normalize(torch.bmm(feats, normed), dim=1)
        return torch.bmm(bases, attention.transpose(1, 2)).reshape(n, c, h, w)


class EMAHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, ema_channels, num_bases, num_stages, concat_input=True,
                 in_index=-1, align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.ema_module = EMAModule(ema_channels, num_bases, num_stages)
        self.ema_in_conv = self.conv(in_channels, ema_channels, 3, 1)
        self.ema_mid_conv = ConvModule(ema_channels, ema_channels, 1, norm=None, act=None)
        self.ema_out_conv = ConvModule(ema_channels, ema_channels, 1, norm=norm, act=None)
        self.bottleneck = self.conv(ema_channels, channels, 3, 1)
        self.conv_cat = self.conv(in_channels + channels, channels, 3, 1) if concat_input else None

    def features(self, inputs):
        x = self.select(inputs)
        feats = self.ema_in_conv(x)
        recon = self.ema_out_conv(F.relu(self.ema_module(self.ema_mid_conv(feats))))
        out = self.bottleneck(F.relu(feats + recon))
        return out if self.conv_cat is None else self.conv_cat(torch.cat([x, out], dim=1))


# --------------------------------------------------------------------------- APCNet / DMNet

class ACM(nn.Module):
    def __init__(self, pool_scale, fusion, in_channels, channels, norm, act):
        super().__init__()
        self.pool_scale, self.channels = pool_scale, channels
        self.pooled_redu_conv = ConvModule(in_channels, channels, 1, norm=norm, act=act)
        self.input_redu_conv = ConvModule(in_channels, channels, 1, norm=norm, act=act)
        self.global_info = ConvModule(channels, channels, 1, norm=norm, act=act)
        self.gla = nn.Conv2d(channels, pool_scale ** 2, 1)
        self.residual_conv = ConvModule(channels, channels, 1, norm=norm, act=act)
        self.fusion_conv = ConvModule(channels, channels, 1, norm=norm, act=act) if fusion else None

    def forward(self, x):
        pooled = self.pooled_redu_conv(adaptive_avg_pool(x, self.pool_scale))
        x = self.input_redu_conv(x)
        n = x.shape[0]
        pooled = pooled.reshape(n, self.channels, -1).transpose(1, 2)
        # mmseg resizes the 1x1 global context with its default align_corners=False
        glob = resize_to(self.global_info(x.mean(dim=(2, 3), keepdim=True)), x, False)
        affinity = torch.sigmoid(self.gla(x + glob).permute(0, 2, 3, 1).reshape(n, -1, self.pool_scale ** 2))
        z = torch.matmul(affinity, pooled).transpose(1, 2).reshape(n, self.channels, x.shape[2], x.shape[3])
        z = F.relu(self.residual_conv(z) + x)
        return z if self.fusion_conv is None else self.fusion_conv(z)


class APCHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, pool_scales=(1, 2, 3, 6), fusion=True, in_index=-1,
                 align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.acm_modules = nn.ModuleList([ACM(s, fusion, in_channels, channels, norm, act) for s in pool_scales])
        self.bottleneck = self.conv(in_channels + len(pool_scales) * channels, channels, 3, 1)

    def features(self, inputs):
        x = self.select(inputs)
        return self.bottleneck(torch.cat([x] + [m(x) for m in self.acm_modules], dim=1))


class DCM(nn.Module):
    """Dynamic convolution: a per-image depthwise filter generated from pooled features. The
    filtering is written as a sum of shifted copies (filter_size^2 terms) rather than a conv
    with a runtime weight, so every backend runs it."""

    def __init__(self, filter_size, fusion, in_channels, channels, norm, act):
        super().__init__()
        self.filter_size = filter_size
        self.filter_gen_conv = nn.Conv2d(in_channels, channels, 1)
        self.input_redu_conv = ConvModule(in_channels, channels, 1, norm=norm, act=act)
        if norm is not None:
            self.norm = norm_layer(norm, channels)
        else:
            self.norm = None
        self.activate = activation(act)
        self.fusion_conv = ConvModule(channels, channels, 1, norm=norm, act=act) if fusion else None

    def forward(self, x):
        k = self.filter_size
        filt = self.filter_gen_conv(adaptive_avg_pool(x, k))  # [n, c, k, k]
        x = self.input_redu_conv(x)
        h, w = x.shape[2], x.shape[3]
        pad = (k - 1) // 2
        before = pad + 1 if (k - 1) % 2 else pad  # mmseg pads one more at the top/left for even k
        xp = F.pad(x, (before, pad, before, pad))
        out = None
        for i in range(k):
            for j in range(k):
                term = xp[:, :, i:i + h, j:j + w] * filt[:, :, i:i + 1, j:j + 1]
                out = term if out is None else out + term
        if self.norm is not None:
            out = self.norm(out)
        out = self.activate(out)
        return out if self.fusion_conv is None else self.fusion_conv(out)


class DMHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, filter_sizes=(1, 3, 5, 7), fusion=False, in_index=-1,
                 align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.dcm_modules = nn.ModuleList([DCM(s, fusion, in_channels, channels, norm, act) for s in filter_sizes])
        self.bottleneck = self.conv(in_channels + len(filter_sizes) * channels, channels, 3, 1)

    def features(self, inputs):
        x = self.select(inputs)
        return self.bottleneck(torch.cat([x] + [m(x) for m in self.dcm_modules], dim=1))


# --------------------------------------------------------------------------- ISANet

class ISABlock(SelfAttentionBlock):
    def __init__(self, in_channels, channels, norm, act):
        super().__init__(in_channels, in_channels, channels, in_channels, key_query_num_convs=2, value_out_num_convs=1,
                         key_query_norm=True, value_out_norm=False, matmul_norm=True, with_out=False, norm=norm,
                         act=act)
        self.output_project = ConvModule(in_channels, in_channels, 1, norm=norm, act=act)

    def forward(self, x):
        return self.output_project(super().forward(x, x))


class ISAHead(DecodeHead):
    """Interlaced sparse self-attention: attention among pixels a `down_factor` apart (global),
    then within each down_factor block (local); the map is padded (centred) to whole blocks."""

    def __init__(self, in_channels, channels, num_classes, *, isa_channels, down_factor=(8, 8), in_index=-1,
                 align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.down_factor = tuple(down_factor)
        self.in_conv = self.conv(in_channels, channels, 3, 1)
        self.global_relation = ISABlock(channels, isa_channels, norm, act)
        self.local_relation = ISABlock(channels, isa_channels, norm, act)
        self.out_conv = self.conv(channels * 2, channels, 1)

    def features(self, inputs):
        x = self.in_conv(self.select(inputs))
        residual = x
        n, c, h, w = x.shape
        lh, lw = self.down_factor
        gh, gw = (h + lh - 1) // lh, (w + lw - 1) // lw
        ph, pw = gh * lh - h, gw * lw - w
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        x = x.reshape(n, c, gh, lh, gw, lw).permute(0, 3, 5, 1, 2, 4).reshape(-1, c, gh, gw)
        x = self.global_relation(x)
        x = x.reshape(n, lh, lw, c, gh, gw).permute(0, 4, 5, 3, 1, 2).reshape(-1, c, lh, lw)
        x = self.local_relation(x)
        x = x.reshape(n, gh, gw, c, lh, lw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * lh, gw * lw)
        x = x[:, :, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        return self.out_conv(torch.cat([x, residual], dim=1))


# --------------------------------------------------------------------------- PSANet

def psa_mask(y, mask_h: int, mask_w: int, distribute: bool):
    """mmcv's PSAMask without the compiled op. `y`: [n, mask_h*mask_w, h, w], the mask of every
    position p over a window centred on it. Returns [n, h*w, h, w]:
    collect:    out[n, q, p] = y[n, window offset of q from p, p] (0 outside the window);
    distribute: out[n, p, q] = the same value (the transpose)."""
    n, _, h, w = y.shape
    hh, hw_ = (mask_h - 1) // 2, (mask_w - 1) // 2
    ys = torch.arange(h, device=y.device)
    xs = torch.arange(w, device=y.device)
    # offsets of q relative to p, as window indices: [q_h, q_w, p_h, p_w]
    dy = ys[:, None, None, None] - ys[None, None, :, None] + hh
    dx = xs[None, :, None, None] - xs[None, None, None, :] + hw_
    inside = (dy >= 0) & (dy < mask_h) & (dx >= 0) & (dx < mask_w)
    k = torch.where(inside, dy * mask_w + dx, torch.zeros_like(dy))  # [qh, qw, ph, pw]
    k = k.reshape(1, -1, h * w).expand(n, -1, -1)  # [n, q, p]
    flat = y.reshape(n, mask_h * mask_w, h * w)
    out = torch.gather(flat, 1, k) * inside.reshape(1, -1, h * w).to(y.dtype)  # [n, q, p]
    if distribute:
        out = out.transpose(1, 2)
    return out.reshape(n, h * w, h, w)


class PSAHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, mask_size, psa_type="bi-direction", compact=False,
                 shrink_factor=2, normalization_factor=1.0, psa_softmax=True, in_index=-1, align_corners=False,
                 input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        if psa_type not in ("collect", "distribute", "bi-direction"):
            raise ValueError(f"PSAHead psa_type {psa_type!r} is not supported")
        in_channels = in_channels_of(in_channels, input_transform)
        self.psa_type, self.compact, self.shrink_factor = psa_type, compact, shrink_factor
        self.mask_size = tuple(mask_size)
        mh, mw = self.mask_size
        self.psa_softmax = psa_softmax
        self.normalization_factor = mh * mw if normalization_factor is None else normalization_factor
        self.reduce = self.conv(in_channels, channels, 1)
        self.attention = nn.Sequential(self.conv(channels, channels, 1), nn.Conv2d(channels, mh * mw, 1, bias=False))
        if psa_type == "bi-direction":
            self.reduce_p = self.conv(in_channels, channels, 1)
            self.attention_p = nn.Sequential(self.conv(channels, channels, 1),
                                             nn.Conv2d(channels, mh * mw, 1, bias=False))
        self.proj = self.conv(channels * (2 if psa_type == "bi-direction" else 1), in_channels, 1, padding=1)
        self.bottleneck = self.conv(in_channels * 2, channels, 3, 1)

    def shrink_plan(self, x):
        """mmseg's shrink: to (h-1)//f+1 with align_corners=True when neither side is a multiple
        of f, else to h//f with align_corners=False. Kept as tensors (the choice included), so one
        exported graph follows mmseg at every input size."""
        h, w = torch._shape_as_tensor(x)[2], torch._shape_as_tensor(x)[3]
        f = self.shrink_factor
        if f == 1:
            return h, w, torch.tensor(self.align_corners)
        odd = (h % f != 0) & (w % f != 0)
        sh = torch.where(odd, torch.div(h - 1, f, rounding_mode="floor") + 1, torch.div(h, f, rounding_mode="floor"))
        sw = torch.where(odd, torch.div(w - 1, f, rounding_mode="floor") + 1, torch.div(w, f, rounding_mode="floor"))
        return sh, sw, odd

    def mask(self, y, h, w, kind):
        n = y.shape[0]
        if not self.compact:
            return psa_mask(y, self.mask_size[0], self.mask_size[1], kind == "distribute")
        # mmseg transposes the compact mask of 'collect' alone and of 'distribute' in bi-direction
        if (self.psa_type == "collect") or (self.psa_type == "bi-direction" and kind == "distribute"):
            return y.reshape(n, h * w, h * w).transpose(1, 2).reshape(n, h * w, h, w)
        return y

    def attend(self, x, y, h, w, kind):
        n, c = x.shape[0], x.shape[1]
        y = self.mask(y, h, w, kind)
        if self.psa_softmax:
            y = y.softmax(dim=1)
        out = torch.bmm(x.reshape(n, c, -1), y.reshape(n, h * w, h * w))
        return out.reshape(n, c, h, w) * (1.0 / self.normalization_factor)

    def features(self, inputs):
        x = self.select(inputs)
        identity = x
        h, w, ac = self.shrink_plan(x)
        if self.shrink_factor == 1:
            ac = None  # no shrink: mmseg's final resize uses the head's own align_corners
        if self.psa_type == "bi-direction":
            col = bilinear(self.reduce(x), h, w, ac)
            dis = bilinear(self.reduce_p(x), h, w, ac)
            out = torch.cat([self.attend(col, self.attention(col), h, w, "collect"),
                             self.attend(dis, self.attention_p(dis), h, w, "distribute")], 1)
        else:
            red = bilinear(self.reduce(x), h, w, ac)
            out = self.attend(red, self.attention(red), h, w, self.psa_type)
        out = self.proj(out)
        out = bilinear(out, identity.shape[2], identity.shape[3], ac) if ac is not None else \
            resize_to(out, identity, self.align_corners)
        return self.bottleneck(torch.cat([identity, out], dim=1))


def _interp_matrix(n_in, n_out, align_corners, dtype):
    """[n_out, n_in] matrix of PyTorch's 1-D linear interpolation for a size-given resize;
    `align_corners` may be a bool tensor (decided at run time)."""
    i = torch.arange(n_out).to(dtype)
    n_in_f, n_out_f = n_in.to(dtype), n_out.to(dtype)
    src_ac = i * (n_in_f - 1) / torch.clamp(n_out_f - 1, min=1)
    src_hp = torch.clamp((i + 0.5) * n_in_f / n_out_f - 0.5, min=0)
    src = torch.where(align_corners, src_ac, src_hp)
    i0 = torch.clamp(torch.floor(src), max=n_in_f - 1)
    i1 = torch.clamp(i0 + 1, max=n_in_f - 1)
    lam = src - i0
    j = torch.arange(n_in).to(dtype)[None, :]
    return (j == i0[:, None]).to(dtype) * (1 - lam)[:, None] + (j == i1[:, None]).to(dtype) * lam[:, None]


def bilinear(x, h, w, align_corners):
    """Bilinear resize of [n, c, H, W] to (h, w) by two matrix products; h, w and align_corners
    may be tensors, so the size and the mode stay decisions of the graph."""
    h_in, w_in = torch._shape_as_tensor(x)[2], torch._shape_as_tensor(x)[3]
    h, w = torch.as_tensor(h), torch.as_tensor(w)
    ac = torch.as_tensor(align_corners)
    return _interp_matrix(h_in, h, ac, x.dtype) @ x @ _interp_matrix(w_in, w, ac, x.dtype).transpose(0, 1)


# --------------------------------------------------------------------------- EncNet

class Encoding(nn.Module):
    """mmseg's Encoding layer: soft-assignment of pixels to `num_codes` learned codewords,
    aggregated residuals [n, num_codes, channels]."""

    def __init__(self, channels, num_codes):
        super().__init__()
        self.codewords = nn.Parameter(torch.empty(num_codes, channels).uniform_(-1, 1) / (num_codes * channels) ** 0.5)
        self.scale = nn.Parameter(torch.empty(num_codes).uniform_(-1, 0))

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        x = x.reshape(n, c, -1).transpose(1, 2)  # [n, hw, c]
        # ||x - code||^2 = |x|^2 - 2 x.code + |code|^2, without the [n, hw, K, c] tensor
        dist = (x * x).sum(-1, keepdim=True) - 2 * torch.matmul(x, self.codewords.t()) \
            + (self.codewords * self.codewords).sum(-1)[None, None, :]
        weights = (self.scale[None, None, :] * dist).softmax(dim=2)  # [n, hw, K]
        # sum_i w_ik (x_i - c_k) = (w^T x)_k - (sum_i w_ik) c_k
        return torch.bmm(weights.transpose(1, 2), x) - weights.sum(1)[:, :, None] * self.codewords[None]


class EncModule(nn.Module):
    def __init__(self, in_channels, num_codes, norm, act):
        super().__init__()
        self.encoding_project = ConvModule(in_channels, in_channels, 1, norm=norm, act=act)
        enc_norm = dict(norm or {"type": "BN"})
        bn1d = nn.BatchNorm1d(num_codes, eps=enc_norm.get("eps", 1e-5)) if enc_norm["type"] in ("BN", "SyncBN") \
            else None
        if bn1d is None:
            raise ValueError(f"EncHead with norm {enc_norm['type']!r} is not supported")
        self.encoding = nn.Sequential(Encoding(in_channels, num_codes), bn1d, nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(in_channels, in_channels), nn.Sigmoid())

    def forward(self, x):
        feat = self.encoding(self.encoding_project(x)).mean(dim=1)
        gamma = self.fc(feat).reshape(x.shape[0], x.shape[1], 1, 1)
        return F.relu(x + x * gamma)


class EncHead(DecodeHead):
    """EncNet; the SE-loss classifier (`se_layer`) only trains and is kept for the weights."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, num_codes=32, use_se_loss=True,
                 add_lateral=False, in_index=(1, 2, 3), align_corners=False, norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        self.bottleneck = self.conv(in_channels[-1], channels, 3, 1)
        self.add_lateral = add_lateral
        if add_lateral:
            self.lateral_convs = nn.ModuleList([self.conv(c, channels, 1) for c in in_channels[:-1]])
            self.fusion = self.conv(len(in_channels) * channels, channels, 3, 1)
        self.enc_module = EncModule(channels, num_codes, norm, act)
        self.se_layer: Optional[nn.Linear] = nn.Linear(channels, num_classes) if use_se_loss else None

    def features(self, inputs):
        inputs = self.select(inputs)
        feat = self.bottleneck(inputs[-1])
        if self.add_lateral:
            laterals = [resize_to(conv(inputs[i]), feat, self.align_corners) for i, conv in
                        enumerate(self.lateral_convs)]
            feat = self.fusion(torch.cat([feat, *laterals], 1))
        return self.enc_module(feat)
