"""MMSegmentation's context-aggregation decode heads for inference, in plain PyTorch that exports
to stock ONNX: ANN, EMANet, APCNet, DMNet, ISANet."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention_heads import SelfAttentionBlock
from .heads import BN, RELU, DecodeHead, in_channels_of
from .layers import ConvModule, activation, adaptive_avg_pool, norm_layer, resize_to


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
