"""Reference label maps of the real MMSegmentation 1.2.2 for K-Net (`IterativeDecodeHead`: an FCN or
UPerNet kernel-generate head, then three KernelUpdateHead stages) on ResNet-50 and Swin-T, for
tests/test_mmseg_knet.py. Run it beside the project, in a scratch virtualenv with mmseg 1.2.2 and
mmcv-lite (never a project dependency):

    python make_mmseg_references_knet.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...] [--keys KEYS.json.gz]

`--keys` also records the state-dict keys and shapes of mmseg's own model for every zoo K-Net
config (tests/data/references/mmseg_knet_state_dict_keys.json.gz, in the format of
mmseg_state_dict_keys.json.gz).

mmseg's K-Net modules use only mmcv's Python bricks (ConvModule, MultiheadAttention, FFN), so
mmcv-lite builds and runs them as they are: nothing is patched (with the `mmcv/_ext.py` stand-in
that the CCNet / PSANet references install, the files come out byte-identical).

The case layout is the other make_mmseg_references*.py scripts' (mmseg_reference_common.py): per
case `manifest.json` (state-dict keys and shapes, config, overrides, `scaled`, stand-in weights'
SHA-256, fairness per image), `bn_stats.npz` (BatchNorm statistics calibrated on the first image,
layer by layer in forward order, the scaled tensors and Swin's integer `relative_position_index`
buffers, which the stand-in generator would fill with floats) and per image a compressed npz with the
label map, the mean logit per class and top-two margin quantiles. `test_resize` sets the test
pipeline's Resize scale (a case runs in seconds on a CPU).

`scaled`: in every stage but the last, the mask kernels' part that depends on the updated kernels is
multiplied by 0.25, through the LayerNorm in front of `fc_mask` (`mask_fcs.1`, weight and bias:
through the ReLU after it this is `fc_mask.weight` x 0.25 and `fc_mask.bias` unchanged, with 4 KB
in bn_stats.npz instead of 2 MB). weights.py scales the kernel-generate head's `conv_seg`
so that its logits spread as a trained model's (std about 5 here); the He-scaled stand-in mask
kernels give the later stages logits four times that spread (std 16-22), whose softmax, the weights
of the next stage's feature assembling, is then nearly one-hot, so that each stage amplified a
perturbation several-fold: mmseg's own map moved on up to 0.6% of the pixels under 1e-4 relative
backbone noise (agreement 0.9938-0.9986; the bar asks 0.999). Scaled, the logits that weigh a next
stage spread as the first head's; the last stage's logits are the output, whose scale changes no
label, and stay as the stand-ins make them (scaling them too would only divide the top-two margins
by four).
"""
import gzip
import json
import os
import sys

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmseg.apis import init_model

from mmseg_reference_common import (IMAGES, calibrate_bn, dataset_classes, golden_state_dict_from, parse_args,
                                    prepare_config, stand_in_weights, write_references)

NUM_STAGES = 3  # the zoo configs' num_stages
# the zoo configs' num_mask_fcs=1 block: Linear, LayerNorm (`mask_fcs.1`), ReLU
SCALED = {f"decode_head.kernel_update_head.{i}.mask_fcs.1.{p}": 0.25 for i in range(NUM_STAGES - 1)
          for p in ("weight", "bias")}
CASES = {
    # ResNet-50 d8: 2048 channels at stride 8, so a 192 px short side
    "knet_r50_fcn": ("knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py", {"test_resize": [384, 192]}),
    "knet_swin_t_upernet": ("knet/knet-s3_swin-t_upernet_8xb2-adamw-80k_ade20k-512x512.py",
                            {"test_resize": [512, 256]}),
}


def make_case(name, zoo, goldens, out_dir):
    config, overrides = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    prepare_config(cfg, overrides)
    model = init_model(cfg, None, device="cpu").eval()
    # integer buffers (Swin's relative_position_index) are no weights: their real values, not the
    # stand-in generator's floats, as make_mmseg_references.py keeps them
    buffers = {k: v.numpy().copy() for k, v in model.state_dict().items()
               if not v.is_floating_point() and not k.endswith("num_batches_tracked")}
    manifest, sd, sha = stand_in_weights(model, golden_state_dict_from(goldens))
    overrides_sd = dict(buffers, **{key: sd[key] * np.float32(factor) for key, factor in SCALED.items()})
    sd.update(overrides_sd)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    stats = dict(overrides_sd)
    stats.update(calibrate_bn(model, cv2.imread(os.path.join(img_dir, IMAGES[0]))))
    case_dir, fair = write_references(model, name, stats, img_dir, IMAGES, out_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": dataset_classes(cfg, model), "scaled": SCALED,
                   "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)


def record_keys(zoo, path):
    """{"source", "keys": {config: [[key, shape], ...]}} of mmseg's model for each zoo K-Net config."""
    keys = {}
    for name in sorted(os.listdir(os.path.join(zoo, "knet"))):
        if name.endswith(".py"):
            cfg = Config.fromfile(os.path.join(zoo, "knet", name))
            prepare_config(cfg, {})
            model = init_model(cfg, None, device="cpu")
            keys[f"knet/{name}"] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
            del model
    with gzip.open(path, "wt") as f:
        json.dump({"source": "mmsegmentation 1.2.2 (init_model of the zoo config, SyncBN->BN)", "keys": keys}, f)


if __name__ == "__main__":
    keys_out = None
    if "--keys" in sys.argv:  # taken out before the shared command line is parsed
        at = sys.argv.index("--keys")
        keys_out = sys.argv[at + 1]
        del sys.argv[at:at + 2]
    args = parse_args(__doc__, CASES)
    if keys_out:
        record_keys(args.zoo, keys_out)
    for case in args.cases or list(CASES):
        make_case(case, args.zoo, args.goldens, args.out_dir)
