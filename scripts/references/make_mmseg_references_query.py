"""Reference label maps of the real MMSegmentation 1.2.2 for the query-based heads (MaskFormer and
Mask2Former on ResNet-50 and Swin-T), for tests/test_mmseg_query_heads.py. Run it
beside the project, in a scratch virtualenv with mmseg 1.2.2, mmdet 3.3.0 and mmcv-lite 2.1.0
(never a project dependency):

    python make_mmseg_references_query.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

mmcv-lite has no compiled ops, and `import mmcv.ops` (which mmdet's heads and mmseg's CCHead
need) fails on its missing `mmcv._ext`. Put a module `mmcv/_ext.py` into the scratch venv whose
every attribute is a function raising NotImplementedError: everything imports, and a reference
can never run a fake kernel. These cases call none: on CPU mmcv's MultiScaleDeformableAttention
runs its own PyTorch path (`multi_scale_deformable_attn_pytorch`).

Stand-in weights (../shared/goldens/weights.py) and BatchNorm statistics calibrated on the first
image, as in mmseg_reference_common.make_case. For the query heads that alone is no bar: with
He-initialised attention and FFN weights the decoder's residual updates swamp the queries, all
100 collapse onto one vector (cosine 0.99998) and one class covers every photo. A trained decoder
keeps its queries distinct, each with its own class and mask. So, recorded under `scaled` and
listed key by key under `scaled_keys` (the stand-in multiplied by the factor): the decoder's attention
output projections x0.05 and its FFNs' second layers x0.3, `cls_embed.weight` x8; then, on the
first image, the mask features' bias centred (each channel's mean removed, as BatchNorm
calibration does) and the class bias shifted by minus the mean class logit over the queries (both
stored in `bn_stats.npz`, the overrides applied after the stand-ins).
Measured (Mask2Former): 7-13 classes over 1% of each photo, mmseg's own map agreeing with itself on
99.8-99.99% of the pixels under 1e-4 backbone noise. MaskFormer's decoder starts from zero queries
told apart only by their positions, and stays less diverse: on ResNet-50 astronaut and chelsea
are a bar (6 and 2 classes), coffee is one class; MaskFormer-Swin paints two of three photos with
one class and is left out (its head is MaskFormer-R50's, its backbone Mask2Former-Swin-T's).
The test size is 256 px on the short side.
"""
import json
import os
import sys

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmseg.apis import inference_model, init_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmseg_reference_common as common  # noqa: E402

SMALL = {"test_resize": [512, 256]}
CASES = {
    "mask2former_r50": ("mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py", SMALL),
    "mask2former_swin_t": ("mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py", SMALL),
    "maskformer_r50": ("maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py", SMALL),
}
DECODER = "decode_head.transformer_decoder.layers."
SCALED = {"decoder attention out_proj.weight": 0.05, "decoder ffn.layers.1.weight": 0.3, "cls_embed.weight": 8.0}


def query_head_scaling(sd):
    """{key: factor} for a MaskFormer / Mask2Former stand-in state dict (see the docstring)."""
    factors = {}
    for key in sd:
        if key.startswith(DECODER) and key.endswith("out_proj.weight"):
            factors[key] = 0.05
        elif key.startswith(DECODER) and key.endswith("ffn.layers.1.weight"):
            factors[key] = 0.3
    factors["decode_head.cls_embed.weight"] = 8.0
    return factors


def centre_on(model, bgr, module, reduce_dims):
    """Subtract from `module.bias` the mean of its output over `reduce_dims` on one image."""
    seen = {}
    def keep(mod, inp, out):
        out = out[-1] if out.dim() == 4 and reduce_dims == (0, 1) else out  # MaskFormer: its last layer's
        seen["mean"] = out.mean(dim=reduce_dims)

    hook = module.register_forward_hook(keep)
    with torch.no_grad():
        inference_model(model, bgr)
        module.bias -= seen["mean"]
    hook.remove()


def make_case(name, zoo, goldens, out_dir):
    config, overrides = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    common.prepare_config(cfg, overrides)
    model = init_model(cfg, None, device="cpu").eval()
    manifest, sd, sha = common.stand_in_weights(model, common.golden_state_dict_from(goldens))
    query = hasattr(model.decode_head, "cls_embed")
    scaled = query_head_scaling(sd) if query else {}
    sd.update({k: sd[k] * np.float32(f) for k, f in scaled.items()})
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    first = cv2.imread(os.path.join(img_dir, common.IMAGES[0]))
    stats = common.calibrate_bn(model, first)
    if query:
        head = model.decode_head
        centre_on(model, first, head.pixel_decoder.mask_feature, (0, 2, 3))
        centre_on(model, first, head.cls_embed, (0, 1))
        for key in ("pixel_decoder.mask_feature.bias", "cls_embed.bias"):
            stats["decode_head." + key] = model.state_dict()["decode_head." + key].numpy().copy()
    case_dir, fair = common.write_references(model, name, stats, img_dir, common.IMAGES, out_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": common.dataset_classes(cfg, model),
                   "scaled": (dict(SCALED, calibrated="mask_feature.bias centred, cls_embed.bias minus the mean "
                                                      "class logit, on the first image") if query else
                              "conv_seg as ../shared/goldens/weights.py scales it (weight x4, bias x60)"),
                   "scaled_keys": scaled, "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)


if __name__ == "__main__":
    args = common.parse_args(__doc__, CASES)
    for case in args.cases or list(CASES):
        make_case(case, args.zoo, args.goldens, args.out_dir)
