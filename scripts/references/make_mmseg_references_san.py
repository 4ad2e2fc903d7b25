"""Reference label maps of the real MMSegmentation 1.2.2 for SAN (MultimodalEncoderDecoder: a CLIP
ViT image encoder, CLIPTextEncoder, SideAdapterCLIPHead), for tests/test_mmseg_san.py, plus the
tables vdeploy reads for SAN's class names. Run it beside the project, in the scratch virtualenv
of make_mmseg_references_query.py (mmseg 1.2.2, mmdet 3.3.0, mmcv-lite 2.1.0, `ftfy` and `regex`
for mmseg's tokenizer; never a project dependency):

    python make_mmseg_references_san.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]
    python make_mmseg_references_san.py --tables VOCAB_JSON KEYS_JSON_GZ ZOO_DIR

`--tables` writes mmseg's class names per dataset, its dataset aliases and its prompt template
sets (vdeploy/frameworks/mmseg/text_vocabularies.json) and the state-dict keys and shapes of
every SAN zoo config (tests/data/references/mmseg/san_zoo_keys.json.gz).

Stand-in weights (../shared/goldens/weights.py) alone are no bar: the class logits are cosines
times exp(stand-in logit_scale ~ 0) ~ 1, the text embeddings of all classes share one direction
(cosine 0.96: the prompts share most tokens and a random text transformer keeps what they share)
and the 100 queries share another (cosine 0.99, the class token they all start from), so one or
two classes cover a photo; and the mask decoder's stand-in layers make mask logits of +-1000, whose
sigmoid is exactly 0 for every class on a fifth of the pixels (labels there are float noise: an
engine's sigmoid decides them). So the last layers of the mask decoder's three MLPs are scaled
x0.1 (`scaled_keys`: mask logits of about +-10, attention biases of about +-200), and three tensors
are set as a trained CLIP / SAN would have them and stored in `bn_stats.npz` (applied after the
stand-ins):
- `text_encoder.logit_scale` = ln(100), what CLIP learns (the cap its training clips it to);
- `text_encoder.text_projection` with the prompts' mean end-of-text feature direction projected
  out (text cosines 0.015);
- `decode_head.rec_with_attnbias.proj.weight` with the queries' mean ln_post direction on the
  first image projected out (the calibration the query heads' references do for their biases).
Measured on astronaut: 5 classes over 1% of the photo (4 in the 0.7 case), 1.2% of its pixels
with a top-two margin under 1e-3 (8%), mmseg's own map stable to 0.9996 (0.998) under 1e-4 noise.
The query direction is the first image's: on chelsea and coffee the queries stay alike (cosine
0.98) and the maps have 1-3 classes, so only astronaut is a bar (the tests read the fairness
figures). The test size is 320 px on the short side
(`test_shortest_edge`); the second case sets `encoder_resolution` to 0.7 (the ViT-L/14 configs'
value) on the ViT-B/16 model, so that CLIP's grid is no longer half the side adapter's and the
attention biases are max-pooled over uneven bins.
"""
import argparse
import gzip
import json
import math
import os
import sys

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmseg.apis import inference_model, init_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmseg_reference_common as common  # noqa: E402

CONFIG = "san/san-vit-b16_coco-stuff164k-640x640.py"
SMALL = {"test_shortest_edge": 320}
CASES = {
    "san_vit_b16": (CONFIG, SMALL),
    "san_vit_b16_res07": (CONFIG, dict(SMALL, **{"model.encoder_resolution": 0.7})),
}
SET = {"text_encoder.logit_scale": math.log(100.0)}
MASK_DECODER = "decode_head.side_adapter_network.mask_decoder."
SCALED = {MASK_DECODER + mlp + ".layers.2.weight": 0.1 for mlp in ("query_mlp", "pix_mlp", "attn_mlp")}
CALIBRATED = ("text_encoder.text_projection", "decode_head.rec_with_attnbias.proj.weight")


def without(direction, matrix, side):
    """`matrix` with `direction` (a unit vector) projected out of its input side."""
    if side == "rows":  # x @ matrix: x's component along the direction removed
        return matrix - torch.outer(direction, direction @ matrix)
    return matrix - torch.outer(matrix @ direction, direction)  # matrix @ x


@torch.no_grad()
def end_of_text_features(text_encoder):
    """ln_final output at every prompt's end-of-text token (what text_projection maps)."""
    from mmseg.utils import get_classes, tokenizer

    names = get_classes(text_encoder.dataset_name)
    names = names[1:] if names[0] == "background" else names
    feats = []
    for template in text_encoder.templates:
        tokens = tokenizer.tokenize([template.format(n) for n in names])
        x = text_encoder.token_embedding(tokens) + text_encoder.positional_embedding
        x = x.permute(1, 0, 2)
        for block in text_encoder.transformer:
            x = block(query=x, attn_masks=text_encoder.attn_mask)
        x = text_encoder.ln_final(x.permute(1, 0, 2))
        feats.append(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])
    return torch.cat(feats)


@torch.no_grad()
def calibrate(model, bgr):
    text = model.text_encoder
    u = end_of_text_features(text).mean(dim=0)
    text.text_projection.copy_(without(u / u.norm(), text.text_projection, "rows"))
    text.cache = {}
    rec = model.decode_head.rec_with_attnbias
    seen = {}
    hook = rec.ln_post.register_forward_hook(lambda mod, inp, out: seen.__setitem__("x", out))
    inference_model(model, bgr)
    hook.remove()
    v = seen["x"][0].mean(dim=0)
    rec.proj.weight.copy_(without(v / v.norm(), rec.proj.weight, "columns"))


def make_case(name, zoo, goldens, out_dir):
    config, overrides = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    common.prepare_config(cfg, overrides)
    model = init_model(cfg, None, device="cpu").eval()
    manifest, sd, sha = common.stand_in_weights(model, common.golden_state_dict_from(goldens))
    sd.update({k: np.float32(v).reshape(np.shape(sd[k])) for k, v in SET.items()})
    sd.update({k: sd[k] * np.float32(f) for k, f in SCALED.items()})
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    model.text_encoder.cache = {}  # class embeddings are cached on first use: none made before these weights
    img_dir = os.path.join(goldens, "images")
    calibrate(model, cv2.imread(os.path.join(img_dir, common.IMAGES[0])))
    state = model.state_dict()
    stats = {k: state[k].numpy().copy() for k in (*SET, *CALIBRATED)}
    case_dir, fair = common.write_references(model, name, stats, img_dir, common.IMAGES, out_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": common.dataset_classes(cfg, model),
                   "scaled": "text_encoder.logit_scale set to ln(100) (trained CLIP's); text_projection and "
                             "rec_with_attnbias.proj.weight with the prompts' / the first image's queries' mean "
                             "direction projected out; all three in bn_stats.npz",
                   "scaled_keys": SCALED, "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)


def write_tables(vocab_path, keys_path, zoo):
    from mmseg.utils import class_names as names
    from mmseg.utils.get_templates import PREDEFINED_TEMPLATES

    classes = {name: list(getattr(names, name + "_classes")()) for name in names.dataset_aliases}
    aliases = {alias: name for name, group in names.dataset_aliases.items() for alias in group}
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump({"_comment": "CLIPTextEncoder's vocabularies as MMSegmentation 1.2.2 names them (mmseg.utils."
                               "get_classes, its dataset aliases, get_predefined_templates); made by "
                               "scripts/references/make_mmseg_references_san.py --tables",
                   "aliases": aliases, "classes": classes, "templates": PREDEFINED_TEMPLATES},
                  f, indent=1, ensure_ascii=False)
    keys = {}
    for config in sorted(p for p in os.listdir(os.path.join(zoo, "san")) if p.endswith(".py")):
        cfg = Config.fromfile(os.path.join(zoo, "san", config))
        common.prepare_config(cfg, {})
        model = init_model(cfg, None, device="cpu")
        keys["san/" + config] = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        print(config, len(keys["san/" + config]), flush=True)
        del model
    with gzip.open(keys_path, "wt") as f:
        json.dump({"mmseg": "1.2.2", "keys": keys}, f)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tables":
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--tables", nargs=2, metavar=("VOCAB_JSON", "KEYS_JSON_GZ"))
        parser.add_argument("zoo")
        a = parser.parse_args()
        write_tables(a.tables[0], a.tables[1], a.zoo)
    else:
        args = common.parse_args(__doc__, CASES)
        for case in args.cases or list(CASES):
            make_case(case, args.zoo, args.goldens, args.out_dir)
