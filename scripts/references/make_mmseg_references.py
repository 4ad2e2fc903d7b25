"""Reference label maps of the real MMSegmentation 1.2.2 for the ViT family (ViT, BEiT, MAE backbones;
UPerHead with MultiLevelNeck, SETR-UP, SETR-MLA with MLANeck, Segmenter, DPT, UPerHead with
Feature2Pyramid) for tests/test_mmseg_vit.py. Run it beside the project, in a scratch virtualenv
with mmseg 1.2.2 and mmcv-lite (never a project dependency):

    python make_mmseg_references.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

Grown from ../shared/reference/make_mmseg_goldens.py, with these changes:
- each case names `overrides` of its zoo config (dotted keys; `test_resize` sets the test
  pipeline's Resize scale): fewer transformer layers, a smaller test size and sliding window, so
  that the whole case runs in seconds on a CPU; the tests apply the same overrides to the
  project's config reader;
- integer buffers of the state dict (BEiT's `relative_position_index`) are not weights: the
  stand-in generator would fill them with floats, so their real values go to `bn_stats.npz`,
  the file of overrides that `../shared/acceptance/make_ckpt.py` applies after the stand-ins;
- Segmenter has no `conv_seg`: its class scores are cosine similarities of patch and class
  tokens LayerNorm-ed over the classes (`mask_norm`). Its stand-in class embeddings (He-scaled
  over 150 x 192, std 0.008) are multiplied by 100 to a trained model's size, else all classes
  look alike and one wins everywhere, and `mask_norm.weight` by 4 as `conv_seg` is in weights.py
  (`scaled` in the manifest);
- per image only the label map (compressed), the mean logit per class and margin statistics are
  kept; the manifest records the fairness of each case (classes present, the share of pixels
  whose top-two margin is tiny, and the label agreement when the backbone's output is perturbed
  by 1e-4 relative noise).
"""
import json, os
import numpy as np
import torch
import cv2
from mmengine.config import Config
from mmseg.apis import init_model

from mmseg_reference_common import (IMAGES, calibrate_bn, dataset_classes, golden_state_dict_from, parse_args,
                                    prepare_config, stand_in_weights, write_references)
SMALL = {"test_resize": [512, 128]}
SMALL_SLIDE = lambda crop, stride: {"test_resize": [4 * crop, crop], "model.test_cfg.crop_size": [crop, crop],  # noqa
                                    "model.test_cfg.stride": [stride, stride]}
SHALLOW_L = {"model.backbone.num_layers": 4, "model.backbone.out_indices": [0, 1, 2, 3]}
CASES = {
    "vit_upernet_mln": ("vit/vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py",
                        dict(SMALL, **{"model.backbone.num_layers": 4, "model.backbone.out_indices": [0, 1, 2, 3]}),
                        {}),
    "setr_pup": ("setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py", dict(SMALL_SLIDE(256, 170), **SHALLOW_L), {}),
    "setr_mla": ("setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py", dict(SMALL_SLIDE(256, 170), **SHALLOW_L), {}),
    "segmenter_mask": ("segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py", SMALL_SLIDE(256, 240),
                       {"decode_head.cls_emb": 100.0, "decode_head.mask_norm.weight": 4.0}),
    "dpt": ("dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py", dict(SMALL), {}),
    "beit_upernet": ("beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py",
                     dict(SMALL_SLIDE(128, 85), **{"model.backbone.img_size": [128, 128]}), {}),
    "mae_upernet": ("mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py",
                    dict(SMALL_SLIDE(128, 85), **{"model.backbone.img_size": [128, 128]}), {}),
}


def make_case(name, zoo, goldens, out_dir):
    config, overrides, scaled = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    prepare_config(cfg, overrides)
    model = init_model(cfg, None, device="cpu").eval()
    sd_model = model.state_dict()
    manifest, sd, sha = stand_in_weights(model, golden_state_dict_from(goldens))
    overrides_sd = {k: v.numpy().copy() for k, v in sd_model.items() if not v.is_floating_point()
                    and not k.endswith("num_batches_tracked")}
    for key, factor in scaled.items():
        overrides_sd[key] = sd[key] * np.float32(factor)
    sd.update(overrides_sd)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)

    img_dir = os.path.join(goldens, "images")
    stats = dict(overrides_sd)
    stats.update(calibrate_bn(model, cv2.imread(os.path.join(img_dir, IMAGES[0]))))
    case_dir, fair = write_references(model, name, stats, img_dir, IMAGES, out_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": dataset_classes(cfg), "scaled": scaled,
                   "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)


if __name__ == "__main__":
    args = parse_args(__doc__, CASES)
    for case in args.cases or sorted(CASES):
        make_case(case, args.zoo, args.goldens, args.out_dir)
