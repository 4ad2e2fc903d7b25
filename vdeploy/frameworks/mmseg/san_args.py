"""Config -> keyword arguments of mmseg's MultimodalEncoderDecoder (SAN): a CLIP VisionTransformer
image encoder, a CLIPTextEncoder of the class names and a SideAdapterCLIPHead.

The class names are mmseg's `get_classes(dataset_name)` (its dataset aliases; a leading
'background' dropped) or the config's own `vocabulary`; each is written into every prompt
template ('vild', 'imagenet' or a list) and tokenized with CLIP's BPE tokenizer (open_clip's,
token for token mmseg's). The tables come from mmseg 1.2.2 (text_vocabularies.json, made by
scripts/references/make_mmseg_references_san.py).

Everything inference uses is read and checked here; training-only keys (losses, assigner,
deep_supervision_idxs, frozen_exclude, pretrained, cache_feature) change nothing at inference.
A setting that would change the computation and is not implemented is refused in one line.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from .args_common import _section, act_spec

@lru_cache(maxsize=1)
def vocabularies() -> dict:
    return json.loads(Path(__file__).with_name("text_vocabularies.json").read_text(encoding="utf-8"))


def _int(part: dict, key: str, where: str, default) -> int:
    value = part.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key} must be a positive int, got {value!r}")
    return value


def _bool(part: dict, key: str, where: str, default: bool) -> bool:
    value = part.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be True or False, got {value!r}")
    return value


def _ln_eps(part: dict, where: str, default: float) -> float:
    norm = part.get("norm_cfg", {"type": "LN", "eps": default})
    if not isinstance(norm, dict) or norm.get("type") != "LN":
        raise ConfigError(f"{where}.norm_cfg must be LN, got {norm!r}")
    return float(norm.get("eps", 1e-5))


def class_names(text: dict, where: str) -> list[str]:
    dataset, vocabulary = text.get("dataset_name"), text.get("vocabulary")
    if (dataset is None) == (vocabulary is None):
        raise ConfigError(f"{where} needs exactly one of dataset_name and vocabulary")
    if vocabulary is not None:
        if not (isinstance(vocabulary, (list, tuple)) and vocabulary and all(isinstance(v, str) and v.strip()
                                                                             for v in vocabulary)):
            raise ConfigError(f"{where}.vocabulary must be a non-empty list of class names")
        return list(vocabulary)
    table = vocabularies()
    name = table["aliases"].get(dataset) if isinstance(dataset, str) else None
    if name is None:
        raise ConfigError(f"{where}.dataset_name {dataset!r} is not one of mmseg's datasets "
                          f"({', '.join(sorted(table['aliases']))}); give `vocabulary` instead")
    names = list(table["classes"][name])
    return names[1:] if names[0] == "background" else names


def templates(text: dict, where: str) -> list[str]:
    value = text.get("templates", "vild")
    if isinstance(value, str):
        known = vocabularies()["templates"]
        if value not in known:
            raise ConfigError(f"{where}.templates {value!r} is not one of {sorted(known)} (or a list of templates)")
        return list(known[value])
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(t, str) and t.count("{}") == 1
                                                               for t in value)):
        raise ConfigError(f"{where}.templates must name a template set or list strings with one '{{}}'")
    return list(value)


def text_encoder_kwargs(text: dict, where: str) -> dict:
    if text.get("type") != "CLIPTextEncoder":
        raise ConfigError(f"{where} type {text.get('type')!r} is not supported; expected 'CLIPTextEncoder'")
    kw = {k: _int(text, k, where, d) for k, d in (("total_vocab_size", 49408), ("context_length", 77),
                                                   ("embed_dims", 512), ("num_layers", 12), ("num_heads", 8),
                                                   ("mlp_ratio", 4), ("output_dims", 512))}
    if kw["embed_dims"] % kw["num_heads"]:
        raise ConfigError(f"{where}: embed_dims must be a multiple of num_heads")
    return dict(kw, cat_bg=_bool(text, "cat_bg", where, True), norm_eps=_ln_eps(text, where, 1e-5),
                classes=class_names(text, where), templates=templates(text, where))


def _san(san: dict, where: str, image: dict) -> dict:
    enc = san.get("cfg_encoder") or {}
    dec = san.get("cfg_decoder") or {}
    if not isinstance(enc, dict) or not isinstance(dec, dict):
        raise ConfigError(f"{where}.cfg_encoder and cfg_decoder must be dicts")
    patch = _int(san, "patch_size", where, 16)
    fusion = san.get("fusion_index", [0, 1, 2, 3])
    layers = _int(enc, "num_encode_layer", f"{where}.cfg_encoder", 8)
    if not (isinstance(fusion, (list, tuple)) and fusion and all(isinstance(i, int) and not isinstance(i, bool)
                                                                 for i in fusion)
            and list(fusion) == sorted(set(fusion)) and 0 <= fusion[0] and fusion[-1] <= layers):
        raise ConfigError(f"{where}.fusion_index {fusion!r} must be increasing layer numbers within 0..{layers}")
    outputs = int(image["out_origin"]) + len(image["out_indices"])
    if len(fusion) != outputs:
        raise ConfigError(f"{where}.fusion_index has {len(fusion)} entries but the image encoder gives {outputs} "
                          "feature maps")
    if _int(san, "clip_channels", where, 768) != image["embed_dims"]:
        raise ConfigError(f"{where}.clip_channels must equal the image encoder's embed_dims {image['embed_dims']}")
    embed = _int(san, "embed_dims", where, 240)
    heads = _int(enc, "num_heads", f"{where}.cfg_encoder", 6)
    if embed % heads:
        raise ConfigError(f"{where}: embed_dims must be a multiple of cfg_encoder.num_heads")
    decoder = {"total_heads": _int(dec, "num_heads", f"{where}.cfg_decoder", 1),
               "total_layers": _int(dec, "num_layers", f"{where}.cfg_decoder", 1),
               "embed_channels": _int(dec, "embed_channels", f"{where}.cfg_decoder", 256),
               "mlp_channels": _int(dec, "mlp_channels", f"{where}.cfg_decoder", 256),
               "mlp_num_layers": _int(dec, "num_mlp", f"{where}.cfg_decoder", 3),
               "rescale_attn_bias": _bool(dec, "rescale", f"{where}.cfg_decoder", False)}
    # mmseg's side adapter learns its position embedding for a 640x640 input (a fixed PatchEmbed input_size)
    grid = (640 - patch) // patch + 1
    return {"in_channels": _int(san, "in_channels", where, 3), "clip_channels": image["embed_dims"],
            "embed_dims": embed, "patch_size": patch, "patch_bias": _bool(san, "patch_bias", where, True),
            "num_queries": _int(san, "num_queries", where, 100), "fusion_index": tuple(fusion),
            "num_encode_layer": layers, "num_heads": heads, "mlp_ratio": _int(enc, "mlp_ratio", where, 4),
            "norm_eps": _ln_eps(san, where, 1e-5), "decoder": decoder, "pos_grid": (grid, grid)}


def _maskgen(gen: dict, where: str, image: dict, text: dict, san: dict) -> dict:
    if gen.get("sos_token_format", "cls_token") != "cls_token":
        raise ConfigError(f"{where}.sos_token_format {gen.get('sos_token_format')!r} is not supported ('cls_token')")
    if _bool(gen, "cross_attn", where, False):
        raise ConfigError(f"{where}.cross_attn=True is not supported")
    if gen.get("num_fcs", 2) != 2:
        raise ConfigError(f"{where}.num_fcs must be 2")
    kw = {k: _int(gen, k, where, d) for k, d in (("sos_token_num", 100), ("num_layers", 3), ("embed_dims", 768),
                                                  ("num_heads", 12), ("mlp_ratio", 4), ("out_dims", 512))}
    if kw["embed_dims"] != image["embed_dims"] or kw["embed_dims"] % kw["num_heads"]:
        raise ConfigError(f"{where}.embed_dims must equal the image encoder's ({image['embed_dims']}) and be a "
                          "multiple of num_heads")
    if kw["out_dims"] != text["output_dims"]:
        raise ConfigError(f"{where}.out_dims must equal the text encoder's output_dims {text['output_dims']}")
    if kw["sos_token_num"] != san["num_queries"]:
        raise ConfigError(f"{where}.sos_token_num must equal san_cfg.num_queries {san['num_queries']}")
    if san["decoder"]["total_heads"] not in (1, kw["num_heads"]):
        raise ConfigError(f"san_cfg.cfg_decoder.num_heads must be 1 or maskgen_cfg.num_heads {kw['num_heads']}")
    if san["decoder"]["total_layers"] not in (1, kw["num_layers"]):
        raise ConfigError(f"san_cfg.cfg_decoder.num_layers must be 1 or maskgen_cfg.num_layers {kw['num_layers']}")
    return dict(kw, qkv_bias=_bool(gen, "qkv_bias", where, True), final_norm=_bool(gen, "final_norm", where, True),
                act=act_spec(gen, where, {"type": "GELU"}), norm_eps=_ln_eps(gen, where, 1e-5))


def head_kwargs(head: dict, where: str, image: dict, text: dict) -> dict:
    if head.get("type") != "SideAdapterCLIPHead":
        raise ConfigError(f"{where} type {head.get('type')!r} is not supported with a MultimodalEncoderDecoder; "
                          "expected 'SideAdapterCLIPHead'")
    num_classes = _int(head, "num_classes", where, None)
    if num_classes != len(text["classes"]):
        raise ConfigError(f"{where}.num_classes is {num_classes} but the text encoder's vocabulary has "
                          f"{len(text['classes'])} classes")
    san = _san(_section(head, "san_cfg", f"{where}."), f"{where}.san_cfg", image)
    if san["in_channels"] != 3:
        raise ConfigError(f"{where}.san_cfg.in_channels must be 3 (the image)")
    maskgen = _maskgen(_section(head, "maskgen_cfg", f"{where}."), f"{where}.maskgen_cfg", image, text, san)
    return {"type": "SideAdapterCLIPHead", "num_classes": num_classes, "san": san, "maskgen": maskgen,
            "align_corners": _bool(head, "align_corners", where, False)}


def model_kwargs(model: dict, image: dict) -> dict[str, Any]:
    """The MultimodalEncoderDecoder parts of the kwargs (`image`: the image encoder's backbone kwargs)."""
    if image["type"] != "VisionTransformer":
        raise ConfigError(f"model.image_encoder type {image['type']!r} is not supported; expected 'VisionTransformer'")
    if not (image["with_cls_token"] and image["output_cls_token"]):
        raise ConfigError("model.image_encoder must output its class token (with_cls_token, output_cls_token)")
    text = text_encoder_kwargs(_section(model, "text_encoder", "model."), "model.text_encoder")
    head = head_kwargs(_section(model, "decode_head", "model."), "model.decode_head", image, text)
    resolution = None
    if _bool(model, "asymetric_input", "model", True):
        resolution = model.get("encoder_resolution")
        if isinstance(resolution, bool) or not isinstance(resolution, (int, float)) or not 0 < resolution <= 4:
            raise ConfigError(f"model.encoder_resolution must be a number in (0, 4] with asymetric_input, "
                              f"got {resolution!r}")
        resolution = float(resolution)
    return {"type": "MultimodalEncoderDecoder", "image_encoder": image, "text": text, "head": head,
            "heads": [head], "encoder_resolution": resolution}


def clip_tokens(texts: list[str], context_length: int):
    """CLIP's BPE token ids [len(texts), context_length] (open_clip's tokenizer, as mmseg's)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise ConfigError("SAN's text encoder needs CLIP's tokenizer: pip install 'vdeploy[openvocab]' "
                          "(open_clip_torch)") from None
    return SimpleTokenizer(context_length=context_length)(texts, context_length=context_length)


def build(kw: dict, mean, std, mode: str, size_divisor: int, crop_size=None, stride=None):
    from ...models import mmseg as M

    text = dict(kw["text"])
    classes, prompts = text.pop("classes"), text.pop("templates")
    tokens = clip_tokens([t.format(c) for t in prompts for c in classes], text["context_length"])
    image = {k: v for k, v in kw["image_encoder"].items() if k != "type"}
    head = {k: v for k, v in kw["head"].items() if k not in ("type", "num_classes")}
    return M.MultimodalEncoderDecoder(
        M.VisionTransformer(**image), M.CLIPTextEncoder(tokens.reshape(len(prompts), len(classes), -1), **text),
        M.SideAdapterCLIPHead(kw["head"]["num_classes"], **head), mean=mean, std=std,
        encoder_resolution=kw["encoder_resolution"], size_divisor=size_divisor, mode=mode, crop_size=crop_size,
        stride=stride)
