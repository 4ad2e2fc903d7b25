"""MMSegmentation's K-Net decode head (`IterativeDecodeHead`) for inference, in plain PyTorch that
exports to stock ONNX.

A kernel-generate head (FCN, PSP, ASPP or UPerNet) gives features and first logits; its 1x1
`conv_seg` weights are the first kernels, one per class. Each `KernelUpdateHead` stage then
- assembles one feature vector per class: the feature map summed over the pixels, weighted by the
  softmax (over classes) of the previous logits;
- updates the kernels from those vectors through the gated `KernelUpdator`, then lets the kernels
  attend to each other (multi-head self-attention with a residual, LayerNorm) and runs an FFN;
- derives mask kernels from them (Linear/LN/act blocks, `fc_mask`) and convolves the feature map
  with them: the stage's logits. The updated kernels (before the mask blocks) feed the next stage.
At inference mmseg returns the last stage's logits.

K-Net's kernels are 1x1 (mmseg seeds them from the 1x1 `conv_seg`), so the dynamic convolution is
a batched matrix product [N, classes, C] x [N, C, H*W]; the class assembling is one too. Dropout
is an identity at inference and is left out. Parameter names are mmseg's
(`decode_head.kernel_generate_head.*`, `decode_head.kernel_update_head.{i}.*`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import DecodeHead
from .layers import FFN, LN, RELU, ConvModule, MultiheadAttention, activation


def _ln(norm: dict, channels: int) -> nn.LayerNorm:
    return nn.LayerNorm(channels, eps=norm.get("eps", 1e-5))


class KernelUpdator(nn.Module):
    """mmseg's KernelUpdator: kernels (`update`, [M, C]) and their assembled features (`inputs`,
    [M, L, C]) each give an "in" and an "out" part; their product gates how much of each out part
    makes the new kernel, then a Linear, LN and the activation. mmseg runs it only with
    in_channels == feat_channels == out_channels (the config edge checks that)."""

    def __init__(self, in_channels: int = 256, feat_channels: int = 64, out_channels: Optional[int] = None, *,
                 gate_sigmoid: bool = True, gate_norm_act: bool = False, activate_out: bool = False,
                 norm: dict = LN, act: Optional[dict] = RELU):
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.feat_channels = in_channels, feat_channels
        self.gate_sigmoid, self.activate_out = gate_sigmoid, activate_out
        self.dynamic_layer = nn.Linear(in_channels, 2 * feat_channels)
        self.input_layer = nn.Linear(in_channels, 2 * feat_channels)
        self.input_gate = nn.Linear(in_channels, feat_channels)
        self.update_gate = nn.Linear(in_channels, feat_channels)
        self.gate_norm = _ln(norm, feat_channels) if gate_norm_act else None
        self.norm_in = _ln(norm, feat_channels)
        self.norm_out = _ln(norm, feat_channels)
        self.input_norm_in = _ln(norm, feat_channels)
        self.input_norm_out = _ln(norm, feat_channels)
        self.activation = activation(act, out_channels)
        self.fc_layer = nn.Linear(feat_channels, out_channels)
        self.fc_norm = _ln(norm, out_channels)

    def forward(self, update, inputs):
        f = self.feat_channels
        update = update.reshape(-1, self.in_channels)
        params = self.dynamic_layer(update)
        param_in, param_out = params[:, :f], params[:, -f:]
        feats = self.input_layer(inputs.reshape(update.shape[0], -1, f))
        input_in, input_out = feats[..., :f], feats[..., -f:]
        gate = input_in * param_in.unsqueeze(-2)
        if self.gate_norm is not None:
            gate = self.activation(self.gate_norm(gate))
        input_gate = self.input_norm_in(self.input_gate(gate))
        update_gate = self.norm_in(self.update_gate(gate))
        if self.gate_sigmoid:
            input_gate, update_gate = input_gate.sigmoid(), update_gate.sigmoid()
        param_out = self.norm_out(param_out)
        input_out = self.input_norm_out(input_out)
        if self.activate_out:
            param_out, input_out = self.activation(param_out), self.activation(input_out)
        out = update_gate * param_out.unsqueeze(-2) + input_gate * input_out
        return self.activation(self.fc_norm(self.fc_layer(out)))


class KernelUpdateHead(nn.Module):
    """One K-Net stage (mmseg's KernelUpdateHead with 1x1 kernels).

    `forward(x [N, C, H, W], kernels [N, K, C], logits [N, K, h, w])` -> (new logits [N, K, H', W'],
    new kernels [N, K, C]). `feat_transform`: None or {"kernel_size", "norm", "act"} of the
    ConvModule mmseg applies to the features first (stride `feat_gather_stride`, padding
    stride // 2, as mmseg pads it); `mask_transform_stride` 2 convolves half-size features and
    upsamples the logits 2x. `updator`: KernelUpdator's keyword arguments.
    """

    def __init__(self, in_channels: int = 256, out_channels: int = 256, *, num_heads: int = 8,
                 num_mask_fcs: int = 3, feedforward_channels: int = 2048, with_ffn: bool = True,
                 act: Optional[dict] = RELU, ffn_act: Optional[dict] = RELU, feat_transform: Optional[dict] = None,
                 feat_gather_stride: int = 1, mask_transform_stride: int = 1, updator: Optional[dict] = None):
        super().__init__()
        if out_channels != in_channels:
            raise ValueError("KernelUpdateHead: out_channels must equal in_channels (1x1 mask kernels)")
        self.in_channels = in_channels
        self.feat_gather_stride, self.mask_transform_stride = feat_gather_stride, mask_transform_stride
        self.attention = MultiheadAttention(in_channels, num_heads)
        self.attention_norm = nn.LayerNorm(in_channels)
        self.kernel_update_conv = KernelUpdator(**(updator or {}))
        self.feat_transform = None
        resizes = mask_transform_stride != 1
        if feat_transform is not None:
            k = feat_transform.get("kernel_size", 1)
            self.feat_transform = ConvModule(in_channels, in_channels, k, feat_gather_stride, feat_gather_stride // 2,
                                             norm=feat_transform.get("norm"), act=feat_transform.get("act", RELU))
            resizes = resizes or k != 1 or feat_gather_stride != 1
        # When the features' size may differ from the logits' (a strided or unpadded transform, the
        # half-size mask path), the logits are always resized to it: a bilinear resize to the same
        # size is the identity, and the traced graph then fits every input size.
        self.resize_logits = resizes
        self.ffn = FFN(in_channels, feedforward_channels, act=ffn_act) if with_ffn else None
        self.ffn_norm = nn.LayerNorm(in_channels) if with_ffn else None
        blocks: list[nn.Module] = []
        for _ in range(num_mask_fcs):
            blocks += [nn.Linear(in_channels, in_channels, bias=False), nn.LayerNorm(in_channels),
                       activation(act, in_channels)]
        self.mask_fcs = nn.ModuleList(blocks)
        self.fc_mask = nn.Linear(in_channels, out_channels)

    def forward(self, x, kernels, logits):
        n, k = kernels.shape[:2]
        if self.feat_transform is not None:
            x = self.feat_transform(x)
        if self.resize_logits:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        # group feature assembling: per class, the features weighted by its softmax share
        weights = logits.softmax(dim=1).flatten(2)                      # [N, K, HW]
        assembled = torch.matmul(weights, x.flatten(2).transpose(1, 2))  # [N, K, C]
        # the updator works on channel groups of its own width (mmseg reshapes to [-1, width])
        width = self.kernel_update_conv.in_channels
        kernels = self.kernel_update_conv(assembled, kernels.reshape(-1, 1, width)).reshape(n, k, self.in_channels)
        kernels = self.attention_norm(self.attention(kernels))
        if self.ffn is not None:
            kernels = self.ffn_norm(self.ffn(kernels))
        mask = kernels
        for layer in self.mask_fcs:
            mask = layer(mask)
        mask = self.fc_mask(mask)                                       # [N, K, C]
        feats = x
        if self.mask_transform_stride == 2 and self.feat_gather_stride == 1:
            feats = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        h, w = feats.shape[-2], feats.shape[-1]
        out = torch.matmul(mask, feats.flatten(2)).reshape(n, k, h, w)  # the 1x1 dynamic convolution
        if self.mask_transform_stride == 2:
            out = F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=False)
        return out, kernels


class IterativeDecodeHead(nn.Module):
    """K-Net: the kernel-generate head's features and logits, refined by each KernelUpdateHead
    stage in turn; the last stage's logits (at the features' resolution)."""

    def __init__(self, kernel_generate_head: DecodeHead, kernel_update_head: Sequence[dict]):
        super().__init__()
        if kernel_generate_head.conv_seg is None or kernel_generate_head.conv_seg.kernel_size != (1, 1):
            raise ValueError("IterativeDecodeHead: the kernel-generate head needs a 1x1 conv_seg")
        self.kernel_generate_head = kernel_generate_head
        self.kernel_update_head = nn.ModuleList([KernelUpdateHead(**kw) for kw in kernel_update_head])
        self.align_corners = kernel_generate_head.align_corners
        for stage in self.kernel_update_head:
            if stage.in_channels != kernel_generate_head.channels:
                raise ValueError("IterativeDecodeHead: each KernelUpdateHead's in_channels must equal the "
                                 "kernel-generate head's channels")

    def forward(self, inputs):
        head = self.kernel_generate_head
        feats = head.features(inputs)
        logits = head.conv_seg(feats)
        kernels = head.conv_seg.weight.flatten(1)[None].expand(feats.shape[0], -1, -1)  # [N, K, C]
        for stage in self.kernel_update_head:
            logits, kernels = stage(feats, kernels, logits)
        return logits
