"""Reference label maps of the real MMSegmentation 1.2.2 for the families vdeploy built first
(SegFormer / MiT, UPerNet on Swin, OCRNet on HRNet, BiSeNetV2, the attention and context heads on
ResNet-50: DANet, ISANet, EMANet, DNLNet, GCNet, ANN, APCNet, DMNet, EncNet, CCNet, PSANet;
UNet, ICNet, BiSeNetV1, MobileNetV2), for tests/test_mmseg_classic_references.py. Run it beside
the project, in a scratch virtualenv with mmseg 1.2.2 and mmcv-lite (never a project dependency):

    python make_mmseg_references_classic.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

The case layout is the other make_mmseg_references*.py scripts': per case `manifest.json`
(state-dict keys and shapes, config, overrides, stand-in weights' SHA-256, fairness per image),
`bn_stats.npz` (BatchNorm statistics calibrated on the first image, layer by layer in forward
order) and per image a compressed npz with the label map, the mean logit per class and top-two
margin quantiles; all of it made by mmseg_reference_common.py, but for the statistics of a shared
BatchNorm, written here under each of its names (`with_shared_aliases`). `test_resize` sets the test
pipeline's Resize scale (a smaller test size, so that a case runs in seconds on a CPU); the
stand-in weights are used as ../shared/goldens/weights.py makes them (it scales `conv_seg`).
CCNet's criss-cross attention is plain PyTorch in mmcv 2.1 (importable with the
`mmcv/_ext.py` stand-in of make_mmseg_references_query.py). PSANet's head calls the compiled mmcv
op `psamask_forward`, which mmcv-lite lacks: mmcv 2.1.0's own C++ for it (sdist from PyPI;
mmcv/ops/csrc/pytorch/psamask.cpp, pytorch/cpu/psamask.cpp, the header-only device registry in
csrc/common, and the two declarations and `m.def`s copied verbatim from pytorch/pybind.cpp into a
minimal pybind module) is built for CPU with torch.utils.cpp_extension.load against the venv's
torch, and the `mmcv/_ext.py` stand-in binds `psamask_forward` / `psamask_backward` to that
module, every other op still raising. No PSA mask is written in Python on the reference side.
"""
import json
import os
import sys

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmseg.apis import init_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmseg_reference_common as common  # noqa: E402

IMAGES = ("astronaut.png", "chelsea.png", "coffee.png")
SMALL = {"test_resize": [512, 256]}      # astronaut / coffee 512 px -> 256 px a side
SMALLER = {"test_resize": [384, 192]}    # the ResNet-50 d8 heads: 2048 channels at stride 8
# UNet refuses inputs whose sides are not multiples of 16 (chelsea is 451 x 300): a fixed size
FIXED = {"test_resize": [512, 256], "test_keep_ratio": False}
CASES = {
    "segformer_b0": ("segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py", SMALL),
    "upernet_swin_t": ("swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py", SMALL),
    "ocrnet_hr18s": ("ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py", SMALL),
    "bisenetv2": ("bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py", SMALL),
    "danet_r50": ("danet/danet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "isanet_r50": ("isanet/isanet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "emanet_r50": ("emanet/emanet_r50-d8_4xb2-80k_cityscapes-512x1024.py", SMALLER),
    "dnlnet_r50": ("dnlnet/dnl_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "gcnet_r50": ("gcnet/gcnet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "ann_r50": ("ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "apcnet_r50": ("apcnet/apcnet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "dmnet_r50": ("dmnet/dmnet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "encnet_r50": ("encnet/encnet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    "unet_s5_d16_fcn": ("unet/unet-s5-d16_fcn_4xb4-160k_cityscapes-512x1024.py", FIXED),
    "icnet_r50": ("icnet/icnet_r50-d8_4xb2-160k_cityscapes-832x832.py", SMALL),
    "bisenetv1_r18": ("bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py", SMALL),
    "mobilenet_v2_deeplabv3plus": ("mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py", SMALL),
    # mmcv's CrissCrossAttention is plain PyTorch, but lives in mmcv.ops, which mmcv-lite cannot
    # import without the `mmcv/_ext.py` stand-in described in make_mmseg_references_query.py
    "ccnet_r50": ("ccnet/ccnet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
    # PSAHead's PSAMask runs mmcv's own C++ op, built for CPU as the docstring says
    "psanet_r50": ("psanet/psanet_r50-d8_4xb2-40k_cityscapes-512x1024.py", SMALLER),
}


def with_shared_aliases(model, stats):
    """calibrate_bn names each BatchNorm once, but a module shared by two attributes (ANN's APNB
    shares its key and query projection) is in the state dict under both names, and the later
    name's stand-in statistics would overwrite the calibrated ones when the checkpoint is rebuilt:
    the statistics go under every name."""
    first = {m: n for n, m in model.named_modules()}
    for name, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, torch.nn.BatchNorm2d) and first[mod] != name:
            for buf in ("running_mean", "running_var"):
                stats[f"{name}.{buf}"] = stats[f"{first[mod]}.{buf}"]
    return stats


def make_case(name, zoo, goldens, out_dir):
    config, overrides = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    common.prepare_config(cfg, overrides)
    model = init_model(cfg, None, device="cpu").eval()
    manifest, sd, sha = common.stand_in_weights(model, common.golden_state_dict_from(goldens))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    stats = with_shared_aliases(model, common.calibrate_bn(model, cv2.imread(os.path.join(img_dir, IMAGES[0]))))
    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    np.savez_compressed(os.path.join(case_dir, "bn_stats.npz"), **stats)
    fair = common.label_map_references(model, name, img_dir, IMAGES, case_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": common.dataset_classes(cfg, model),
                   "scaled": "conv_seg as ../shared/goldens/weights.py scales it (weight x4, bias x60)",
                   "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)


if __name__ == "__main__":
    args = common.parse_args(__doc__, CASES)
    for case in args.cases or list(CASES):
        make_case(case, args.zoo, args.goldens, args.out_dir)
