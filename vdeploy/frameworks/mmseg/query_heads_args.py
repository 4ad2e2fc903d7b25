"""Config -> keyword arguments of the query-based decode heads: mmseg's MaskFormerHead and
Mask2FormerHead (mmdet 3.x heads; their pixel decoders and DETR-style transformer decoders).

Everything inference uses is read here and checked; what only training reads (losses, the
assigner, dropout) is ignored. A setting that would change the computation and is not
implemented is refused in one line.
"""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .args_common import act_spec, norm_spec

HEADS = ("MaskFormerHead", "Mask2FormerHead")
_PIXEL_DECODERS = {"MaskFormerHead": ("PixelDecoder",), "Mask2FormerHead": ("MSDeformAttnPixelDecoder",)}
_GN32 = {"type": "GN", "num_groups": 32}


def _dict(part: dict, key: str, where: str, default=None) -> dict:
    value = part.get(key, default)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.{key} must be a dict")
    return value


def _int(part: dict, key: str, where: str, default=None) -> int:
    value = part.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key} must be a positive int, got {value!r}")
    return value


def _ints(part: dict, key: str, where: str) -> tuple:
    value = part.get(key)
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and v > 0 for v in value)):
        raise ConfigError(f"{where}.{key} must be a list of positive ints, got {value!r}")
    return tuple(value)


def _kind(part: dict) -> str:
    return str(part.get("type", "")).rpartition(".")[2]  # "mmdet.PixelDecoder" -> PixelDecoder


def _norm(part: dict, where: str, default) -> Any:
    return norm_spec(part, where, default)


def _act(part: dict, where: str, default) -> Any:
    return act_spec(part, where, default)


def _positional(part: dict, where: str) -> dict:
    pe = _dict(part, "positional_encoding", where, {"num_feats": 128, "normalize": True})
    extra = set(pe) - {"num_feats", "normalize", "temperature", "scale", "eps", "offset", "type", "init_cfg"}
    if extra or _kind(pe) not in ("", "SinePositionalEncoding"):
        raise ConfigError(f"{where}.positional_encoding {pe!r} is not supported (SinePositionalEncoding)")
    return {k: pe[k] for k in ("num_feats", "normalize", "temperature", "scale", "eps", "offset") if k in pe}


def _ffn(ffn: dict, where: str, embed_dims: int) -> dict:
    if ffn.get("num_fcs", 2) != 2 or not ffn.get("add_identity", True):
        raise ConfigError(f"{where}: only two-layer FFNs with the identity added are supported")
    if ffn.get("embed_dims", embed_dims) != embed_dims:
        raise ConfigError(f"{where}.embed_dims must equal the attention's embed_dims")
    return {"feedforward_channels": _int(ffn, "feedforward_channels", where, 1024),
            "act": _act(ffn, where, {"type": "ReLU"})}


def _attention(att: dict, where: str) -> tuple[int, int]:
    if att.get("batch_first", True) is not True and att.get("batch_first") is not False:
        raise ConfigError(f"{where}.batch_first must be a bool")
    return _int(att, "embed_dims", where, 256), _int(att, "num_heads", where, 8)


def _decoder(head: dict, where: str) -> dict:
    dec = _dict(head, "transformer_decoder", where)
    where = f"{where}.transformer_decoder"
    if (dec.get("post_norm_cfg") or {"type": "LN"}).get("type") != "LN":
        raise ConfigError(f"{where}.post_norm_cfg must be LN")
    layer = _dict(dec, "layer_cfg", where)
    w = f"{where}.layer_cfg"
    embed, heads = _attention(_dict(layer, "self_attn_cfg", w), f"{w}.self_attn_cfg")
    if _attention(_dict(layer, "cross_attn_cfg", w), f"{w}.cross_attn_cfg") != (embed, heads):
        raise ConfigError(f"{w}: self- and cross-attention must have the same embed_dims and num_heads")
    if embed % heads:
        raise ConfigError(f"{w}: embed_dims {embed} is not divisible by num_heads {heads}")
    return dict(_ffn(_dict(layer, "ffn_cfg", w), f"{w}.ffn_cfg", embed), num_layers=_int(dec, "num_layers", where),
                embed_dims=embed, num_heads=heads)


def _encoder(pd: dict, where: str) -> dict:
    enc = _dict(pd, "encoder", where)
    where = f"{where}.encoder"
    layer = _dict(enc, "layer_cfg", where)
    att = _dict(layer, "self_attn_cfg", f"{where}.layer_cfg")
    w = f"{where}.layer_cfg.self_attn_cfg"
    if att.get("value_proj_ratio", 1.0) != 1.0:
        raise ConfigError(f"{w}.value_proj_ratio other than 1.0 is not supported")
    embed, heads = _attention(att, w)
    if embed % heads:
        raise ConfigError(f"{w}: embed_dims {embed} is not divisible by num_heads {heads}")
    return dict(_ffn(_dict(layer, "ffn_cfg", f"{where}.layer_cfg"), f"{where}.layer_cfg.ffn_cfg", embed),
                num_layers=_int(enc, "num_layers", where), embed_dims=embed, num_heads=heads,
                num_levels=_int(att, "num_levels", w, 4), num_points=_int(att, "num_points", w, 4))


def head_kwargs(head: dict, where: str) -> dict:
    kind = head["type"]
    for key in ("in_channels", "num_classes", "feat_channels", "out_channels", "num_queries"):
        if key not in head:
            raise ConfigError(f"{where} ({kind}) needs `{key}`")
    in_channels = _ints(head, "in_channels", where)
    feat, out = _int(head, "feat_channels", where), _int(head, "out_channels", where)
    pd = _dict(head, "pixel_decoder", where)
    pw = f"{where}.pixel_decoder"
    if _kind(pd) not in _PIXEL_DECODERS[kind]:
        raise ConfigError(f"{pw} type {pd.get('type')!r} is not supported with {kind}; "
                          f"expected {_PIXEL_DECODERS[kind][0]}")
    decoder = _decoder(head, where)
    kw: dict[str, Any] = {"type": kind, "in_channels": in_channels, "feat_channels": feat, "out_channels": out,
                          "num_classes": _int(head, "num_classes", where), "num_queries": _int(head, "num_queries", where),
                          "decoder": decoder, "positional_encoding": _positional(head, where),
                          "enforce_decoder_input_project": bool(head.get("enforce_decoder_input_project", False)),
                          "align_corners": bool(head.get("align_corners", False))}
    pixel = {"norm": _norm(pd, pw, _GN32), "act": _act(pd, pw, {"type": "ReLU"})}
    if kind == "Mask2FormerHead":
        strides = _ints(head, "strides", where) if "strides" in head else (4, 8, 16, 32)
        encoder = _encoder(pd, pw)
        levels = _int(head, "num_transformer_feat_level", where, 3)
        if len(strides) != len(in_channels):
            raise ConfigError(f"{where}: strides and in_channels need the same length")
        if not levels <= encoder["num_levels"] <= len(in_channels):
            raise ConfigError(f"{pw}: the encoder's num_levels must lie between num_transformer_feat_level and "
                              "the number of inputs")
        if pd.get("num_outs", 3) != levels:
            raise ConfigError(f"{pw}.num_outs must equal num_transformer_feat_level")
        if encoder["embed_dims"] != feat or decoder["embed_dims"] != feat:
            raise ConfigError(f"{where}: the encoder's and decoder's embed_dims must equal feat_channels")
        pixel.update(strides=strides, num_outs=levels, encoder=encoder, positional_encoding=_positional(pd, pw))
        kw["num_transformer_feat_level"] = levels
    elif decoder["embed_dims"] != feat:
        raise ConfigError(f"{where}: the decoder's embed_dims must equal feat_channels")
    kw["pixel_decoder"] = pixel
    return kw


def build(kw: dict):
    from ...models import mmseg as M

    kw = dict(kw)
    cls = getattr(M, kw.pop("type"))
    return cls(kw.pop("in_channels"), kw.pop("feat_channels"), kw.pop("out_channels"), kw.pop("num_classes"), **kw)
