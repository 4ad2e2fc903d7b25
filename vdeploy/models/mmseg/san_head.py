"""MMSegmentation 1.2.2's SideAdapterCLIPHead (SAN, open-vocabulary segmentation) at inference,
with mmseg's parameter names.

- `side_adapter_network`: a small ViT on the full-resolution image whose first tokens are
  `num_queries` learned queries; after chosen layers it adds the frozen CLIP encoder's features
  (LayerNorm2d + 1x1 conv, resized to its own grid). Its MLP mask decoder turns the last layer
  into mask proposals (query . pixel embeddings) and attention biases (query . per-head pixel
  embeddings, optionally rescaled by a 1x1 Linear).
- `rec_with_attnbias`: CLIP's remaining layers run on [query copies of the class token, class
  token, image tokens]; each query may attend only to itself, softly (-100) not to the others
  nor to the class token, and to the image through its attention bias, max-pooled to CLIP's
  grid. The queries, normalised, classify by their dot product with the text embeddings of the
  class names (plus a background entry).
- Scores, as mmseg's `predict_by_feat`: mask proposals resized to the network input (bilinear),
  sigmoid, weighted by softmax(class logits) without the background entry. The head takes the
  input size and returns scores at that size (`takes_input_size`).

Only the last side-adapter layer's predictions are computed (`deep_supervision_idxs` are
training outputs).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..detectron2.layer_norm import LayerNorm2d  # mmseg's san_layers.LayerNorm2d: the same arithmetic
from .clip_text import QUICK_GELU, PreNormTransformerLayer
from .layers import GELU, ConvModule, PatchEmbed
from .query_heads import semantic_scores
from .vit import TransformerEncoderLayer


class MLP(nn.Module):
    """`layers.i`: Linear (or 1x1 conv) layers with ReLU between them."""

    def __init__(self, cin: int, hidden: int, cout: int, num_layers: int, conv: bool = False):
        super().__init__()
        sizes = [cin] + [hidden] * (num_layers - 1) + [cout]
        make = (lambda a, b: nn.Conv2d(a, b, 1)) if conv else nn.Linear
        self.layers = nn.ModuleList(make(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MLPMaskDecoder(nn.Module):
    def __init__(self, in_channels: int, *, total_heads: int, total_layers: int, embed_channels: int,
                 mlp_channels: int, mlp_num_layers: int, rescale_attn_bias: bool):
        super().__init__()
        self.total_heads, self.total_layers = total_heads, total_layers
        self.query_mlp = MLP(in_channels, mlp_channels, embed_channels, mlp_num_layers)
        self.pix_mlp = MLP(in_channels, mlp_channels, embed_channels, mlp_num_layers, conv=True)
        self.attn_mlp = MLP(in_channels, mlp_channels, embed_channels * total_heads * total_layers, mlp_num_layers,
                            conv=True)
        self.bias_scaling = nn.Linear(1, 1) if rescale_attn_bias else nn.Identity()

    def forward(self, query, x):
        """query [b, q, c], x [b, c, h, w] -> masks [b, q, h, w], biases: one [b, heads, q, h, w] per layer."""
        query = self.query_mlp(query)
        pix = self.pix_mlp(x)
        b, c, h, w = pix.shape
        masks = torch.einsum("bqc,bchw->bqhw", query, pix)
        attn = self.attn_mlp(x).reshape(b, self.total_layers, self.total_heads, c, h, w)
        bias = torch.einsum("bqc,blnchw->blnqhw", query, attn)
        bias = self.bias_scaling(bias[..., None]).squeeze(-1)
        return masks, [bias[:, i] for i in range(self.total_layers)]


class SideAdapterNetwork(nn.Module):
    def __init__(self, *, in_channels: int = 3, clip_channels: int = 768, embed_dims: int = 240, patch_size: int = 16,
                 patch_bias: bool = True, num_queries: int = 100, fusion_index: Sequence[int] = (0, 1, 2, 3),
                 num_encode_layer: int = 8, num_heads: int = 6, mlp_ratio: int = 4, norm_eps: float = 1e-6,
                 decoder: dict, pos_grid: tuple = (40, 40)):
        super().__init__()
        fusion_index = tuple(fusion_index)
        if list(fusion_index) != sorted(set(fusion_index)) or fusion_index[-1] > num_encode_layer:
            raise ValueError(f"fusion_index {fusion_index} must be increasing layer numbers up to {num_encode_layer}")
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_size, 0, bias=patch_bias)
        self.pos_grid = tuple(pos_grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dims))
        self.query_pos_embed = nn.Parameter(torch.zeros(1, num_queries, embed_dims))
        self.query_embed = nn.Parameter(torch.zeros(1, num_queries, embed_dims))
        norm = {"type": "LN", "eps": norm_eps}
        self.encode_layers = nn.ModuleList(
            TransformerEncoderLayer(embed_dims, num_heads, mlp_ratio * embed_dims, True, GELU, norm)
            for _ in range(num_encode_layer))
        self.conv_clips = nn.ModuleList(
            nn.Sequential(LayerNorm2d(clip_channels), ConvModule(clip_channels, embed_dims, 1, norm=None, act=None))
            for _ in fusion_index)
        self.fusion_index = fusion_index
        self.mask_decoder = MLPMaskDecoder(embed_dims, **decoder)
        for embedding in (self.pos_embed, self.query_pos_embed, self.query_embed):  # mmseg's initialisation
            nn.init.normal_(embedding, std=0.02)

    def position_embedding(self, hw):
        """The learned grid resized (bicubic) to the token grid `hw`; an identity on its own grid.
        (mmseg resizes only when the token counts differ: a non-square grid with as many tokens
        would take the embedding unresized there.)"""
        grid = self.pos_embed.reshape(1, self.pos_grid[0], self.pos_grid[1], -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=hw, mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def fuse(self, i: int, x, clip_feature, hw):
        fused = F.interpolate(self.conv_clips[i](clip_feature), size=hw, mode="bilinear", align_corners=False)
        length = hw[0] * hw[1]
        return torch.cat([x[:, :-length], x[:, -length:] + fused.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, image, clip_features):
        """image [b, 3, H, W], clip_features: (map, class token) per fusion -> masks, biases."""
        x, hw = self.patch_embed(image)
        b = x.shape[0]
        pos = torch.cat([self.query_pos_embed.expand(b, -1, -1), self.position_embedding(hw).expand(b, -1, -1)], 1)
        x = torch.cat([self.query_embed.expand(b, -1, -1), x], dim=1) + pos
        fused = 0
        if self.fusion_index[0] == 0:
            x = self.fuse(0, x, clip_features[0][0], hw)
            fused = 1
        last = len(self.encode_layers)
        for index, layer in enumerate(self.encode_layers, start=1):
            x = layer(x)
            if fused < len(self.fusion_index) and index == self.fusion_index[fused]:
                x = self.fuse(fused, x, clip_features[fused][0], hw)
                fused += 1
            if index < last:
                x = x + pos
        length = hw[0] * hw[1]
        feat = x[:, -length:].transpose(1, 2).reshape(b, x.shape[-1], hw[0], hw[1])
        return self.mask_decoder(x[:, :-length], feat)


def _bins(n_in, n_out):
    """Membership [n_out, n_in] of adaptive pooling's bins: [floor(i n_in / n_out), ceil((i+1) n_in / n_out))."""
    i = torch.arange(n_out)
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = -torch.div(-(i + 1) * n_in, n_out, rounding_mode="floor")
    j = torch.arange(n_in)
    return (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])


def adaptive_max_pool(x, size):
    """F.adaptive_max_pool2d(x, size) for any sizes (ONNX's exporter takes only output sizes
    dividing the input): masked maxima over each bin's rows, then its columns."""
    low = torch.finfo(x.dtype).min
    rows = _bins(x.shape[-2], size[0])  # [oh, H]
    x = torch.where(rows[None, None, :, :, None], x[:, :, None], torch.full_like(x[:, :, None], low)).amax(dim=3)
    cols = _bins(x.shape[-1], size[1])  # [ow, W]
    return torch.where(cols[None, None, None], x[:, :, :, None], torch.full_like(x[:, :, :, None], low)).amax(dim=4)


class RecWithAttnbias(nn.Module):
    def __init__(self, *, sos_token_num: int = 100, num_layers: int = 3, embed_dims: int = 768, num_heads: int = 12,
                 mlp_ratio: int = 4, qkv_bias: bool = True, out_dims: int = 512, final_norm: bool = True,
                 act: dict = QUICK_GELU, norm_eps: float = 1e-5):
        super().__init__()
        self.sos_token_num, self.num_heads, self.final_norm = sos_token_num, num_heads, final_norm
        self.layers = nn.ModuleList(
            PreNormTransformerLayer(embed_dims, num_heads, mlp_ratio * embed_dims, act=act, norm_eps=norm_eps,
                                    qkv_bias=qkv_bias) for _ in range(num_layers))
        self.ln_post = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.proj = nn.Linear(embed_dims, out_dims, bias=False)

    def attention_bias(self, bias, hw):
        """[b, 1 or heads, q, h', w'] -> [b * heads, q + 1 + L, q + 1 + L] for CLIP's tokens."""
        b, heads, q = bias.shape[0], bias.shape[1], bias.shape[2]
        bias = adaptive_max_pool(bias.reshape(b, heads * q, bias.shape[3], bias.shape[4]), hw)
        bias = bias.reshape(b, heads, q, -1).expand(b, self.num_heads, q, -1)  # one head: the same for all
        length = bias.shape[-1]
        eye = torch.eye(q, dtype=bias.dtype, device=bias.device)
        queries = torch.cat([(eye - 1) * 100, torch.full_like(eye[:, :1], -100.0)], dim=1)  # [q, q + 1]
        queries = torch.cat([queries.expand(b, self.num_heads, q, q + 1), bias], dim=3)
        others = torch.cat([torch.full_like(bias[:, :, :1, :1], -100.0).expand(b, self.num_heads, 1 + length, q),
                            torch.zeros_like(bias[:, :, :1, :1]).expand(b, self.num_heads, 1 + length, 1 + length)],
                           dim=3)
        return torch.cat([queries, others], dim=2).reshape(b * self.num_heads, q + 1 + length, q + 1 + length)

    def forward(self, biases, clip_feature):
        """biases: one per layer, or one for all of them; clip_feature: CLIP's last (map, class token)."""
        feature, cls_token = clip_feature
        b, c, h, w = feature.shape
        x = torch.cat([cls_token[:, None].expand(b, self.sos_token_num, c), cls_token[:, None],
                       feature.flatten(2).transpose(1, 2)], dim=1)
        masks = [self.attention_bias(bias, (h, w)) for bias in biases]
        for i, layer in enumerate(self.layers):
            x = layer(x, masks[0] if len(masks) == 1 else masks[i])
        x = self.proj(self.ln_post(x[:, :self.sos_token_num]))
        return F.normalize(x, dim=-1) if self.final_norm else x


class SideAdapterCLIPHead(nn.Module):
    takes_input_size = True

    def __init__(self, num_classes: int, *, san: dict, maskgen: dict, align_corners: bool = False):
        super().__init__()
        if san.get("num_queries", 100) != maskgen.get("sos_token_num", 100):
            raise ValueError("san num_queries must equal maskgen sos_token_num")
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.side_adapter_network = SideAdapterNetwork(**san)
        self.rec_with_attnbias = RecWithAttnbias(**maskgen)

    def forward(self, image, clip_features, class_embeds, size):
        """Normalised image, CLIP features (map, class token) per level, [classes + 1, C] text
        embeddings -> per-class scores [b, classes, *size]."""
        masks, biases = self.side_adapter_network(image, clip_features)
        queries = self.rec_with_attnbias(biases, clip_features[-1])
        logits = torch.einsum("bqc,nc->bqn", queries, class_embeds)
        return semantic_scores(logits, masks, size)
