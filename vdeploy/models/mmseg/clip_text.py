"""CLIP's text transformer as mmseg's CLIPTextEncoder uses it: class names, written into prompt
templates and tokenized by the config edge, become one embedding per class.

The embeddings depend on the weights and the vocabulary only, never on the image, so they are
computed once (as mmseg's `cache_feature` does) and kept in the non-persistent buffer
`embeddings`; the segmentor's graph reads that buffer, so an exported graph holds the classes'
embeddings as a constant, not the text transformer. They are recomputed whenever a weight of the
encoder has changed since (loading a checkpoint copies into the parameters in place, which moves
their version counters).

Causal attention lets no position see a later one, so the end-of-text token (where CLIP reads
the embedding) never depends on the padding after it: prompts, sorted by length, run in batches
cut after each batch's longest prompt, which gives the same embeddings several times faster than
mmseg's 77 positions.

Names follow mmseg: `token_embedding`, `positional_embedding`, `transformer.i` (mmcv's
BaseTransformerLayer: `attentions.0.attn.*`, `norms.0/1`, `ffns.0.layers.*`), `ln_final`,
`text_projection`, `logit_scale`, `bg_embed`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, _TorchMHAWeights

QUICK_GELU = {"type": "QuickGELU"}


def biased_attention(x, weights: _TorchMHAWeights, num_heads: int, bias: Optional[torch.Tensor] = None):
    """Self-attention of batch-first tokens [n, L, C] with nn.MultiheadAttention's additive float
    mask: [L, L], or [n * heads, L, L] ordered batch first."""
    n, length, c = x.shape
    d = c // num_heads
    wq, wk, wv = weights.in_proj_weight.chunk(3)
    bq, bk, bv = weights.in_proj_bias.chunk(3) if weights.in_proj_bias is not None else (None, None, None)
    q = F.linear(x, wq, bq).reshape(n, length, num_heads, d).transpose(1, 2)
    k = F.linear(x, wk, bk).reshape(n, length, num_heads, d).transpose(1, 2)
    v = F.linear(x, wv, bv).reshape(n, length, num_heads, d).transpose(1, 2)
    scores = torch.matmul(q * d ** -0.5, k.transpose(-2, -1))
    if bias is not None:
        scores = scores + (bias if bias.dim() == 2 else bias.reshape(n, num_heads, length, length))
    out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(n, length, c)
    return weights.out_proj(out)


class _AttentionWeights(nn.Module):
    """mmcv's MultiheadAttention wrapper: the torch attention's weights under `attn`."""

    def __init__(self, embed_dims: int, bias: bool):
        super().__init__()
        self.attn = _TorchMHAWeights(embed_dims, bias)


class PreNormTransformerLayer(nn.Module):
    """mmcv's BaseTransformerLayer with operation_order ('norm', 'self_attn', 'norm', 'ffn'):
    x + MHA(LN(x)) with an optional additive mask, then x + FFN(LN(x))."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, *, act: dict = QUICK_GELU,
                 norm_eps: float = 1e-5, qkv_bias: bool = True):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not a multiple of num_heads {num_heads}")
        self.attentions = nn.ModuleList([_AttentionWeights(embed_dims, qkv_bias)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims, eps=norm_eps), nn.LayerNorm(embed_dims, eps=norm_eps)])
        self.ffns = nn.ModuleList([FFN(embed_dims, feedforward_channels, act)])
        self.num_heads = num_heads

    def forward(self, x, bias=None):
        x = x + biased_attention(self.norms[0](x), self.attentions[0].attn, self.num_heads, bias)
        return self.ffns[0](self.norms[1](x), identity=x)


class CLIPTextEncoder(nn.Module):
    """`tokens`: [templates, classes, context_length] CLIP token ids of every class name in every
    prompt template. `class_embeddings()` -> [classes (+1 background), output_dims], scaled by
    exp(logit_scale) as mmseg returns them."""

    def __init__(self, tokens: torch.Tensor, *, total_vocab_size: int = 49408, context_length: int = 77,
                 embed_dims: int = 512, num_layers: int = 12, num_heads: int = 8, mlp_ratio: int = 4,
                 output_dims: int = 512, cat_bg: bool = True, norm_eps: float = 1e-5, batch: int = 256):
        super().__init__()
        if tokens.dim() != 3 or tokens.shape[-1] != context_length:
            raise ValueError(f"tokens must be [templates, classes, {context_length}], got {tuple(tokens.shape)}")
        self.token_embedding = nn.Embedding(total_vocab_size, embed_dims)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, embed_dims))
        self.text_projection = nn.Parameter(torch.zeros(embed_dims, output_dims))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.transformer = nn.ModuleList(
            PreNormTransformerLayer(embed_dims, num_heads, mlp_ratio * embed_dims, norm_eps=norm_eps)
            for _ in range(num_layers))
        self.ln_final = nn.LayerNorm(embed_dims, eps=norm_eps)
        if cat_bg:
            self.bg_embed = nn.Parameter(torch.zeros(1, output_dims))
        self.cat_bg = cat_bg
        self.batch = batch
        # CLIP's and mmseg's initialisation, so that a model built without weights computes finite,
        # distinct embeddings (a zero projection would normalise 0 / 0)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=embed_dims ** -0.5)
        if cat_bg:
            nn.init.normal_(self.bg_embed, std=output_dims ** -0.5)
        self.register_buffer("tokens", tokens.long(), persistent=False)
        self.register_buffer("embeddings", torch.zeros(0, output_dims), persistent=False)
        self._embedded_with = None

    def _weights_state(self) -> tuple:
        return tuple((id(p), p._version) for p in self.parameters())

    def class_embeddings(self) -> torch.Tensor:
        state = self._weights_state()
        if state != self._embedded_with:
            if torch.jit.is_tracing():
                # an internal ordering bug, not a user error: tracing this would put the whole
                # text transformer into the exported graph
                raise RuntimeError("CLIPTextEncoder: class embeddings are stale while tracing; call "
                                   "class_embeddings() once before exporting")
            self.embeddings = self._encode()
            self._embedded_with = state
        return self.embeddings

    @torch.no_grad()
    def _encode(self) -> torch.Tensor:
        templates, classes, _ = self.tokens.shape
        flat = self.tokens.reshape(templates * classes, -1)
        end = flat.argmax(dim=-1)  # the end-of-text token has the largest id
        order = torch.argsort(end)  # batches of similar lengths, each cut after its longest prompt
        out = torch.empty(flat.shape[0], self.text_projection.shape[1])
        for start in range(0, flat.shape[0], self.batch):
            rows = order[start:start + self.batch]
            length = int(end[rows].max()) + 1
            mask = torch.full((length, length), float("-inf")).triu(1)
            x = self.token_embedding(flat[rows, :length]) + self.positional_embedding[:length]
            for layer in self.transformer:
                x = layer(x, mask)
            x = self.ln_final(x)
            out[rows] = x[torch.arange(len(rows)), end[rows]] @ self.text_projection
        text = F.normalize(out, dim=-1).reshape(templates, classes, -1).mean(dim=0)
        text = text / text.norm(dim=-1, keepdim=True)
        if self.cat_bg:
            text = F.normalize(torch.cat([text, self.bg_embed]), p=2, dim=-1)
        return self.logit_scale.exp() * text
