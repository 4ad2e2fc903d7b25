"""Reference label maps of the real MMSegmentation 1.2.2 for the Twins (PCPVT, SVT), ConvNeXt,
PoolFormer and SegNeXt (MSCAN + LightHamHead) conformance tests (tests/test_mmseg_families_a.py).
Run it beside the project, in a scratch virtualenv with mmsegmentation 1.2.2, mmcv-lite and
mmpretrain (never a project dependency):

    python make_mmseg_references_cnn.py ZOO_DIR GOLDENS_DIR OUT_DIR

Per case, OUT_DIR/<case>/ gets
- manifest.json: the config (relative to ZOO_DIR), the test size override, mmseg's state-dict
  keys and shapes, the SHA-256 of the stand-in weights (GOLDENS_DIR/weights.py) and the fairness
  figures measured here;
- bn_stats.npz: BatchNorm statistics calibrated on the first image (forward pre-hooks, as
  ../shared/reference/make_mmseg_goldens.py), applied after the stand-in weights;
- <image>.npz: mmseg's label map at the original size (compressed), the per-class mean of its
  logits; the manifest's `fairness` counts the classes present and the share of pixels whose two
  best logits are closer than 1e-3 / 1e-5 of the logits' spread (1e-5: float32 noise could flip them).

Test size: each config's test `Resize` scale becomes (2048, 160) (keep_ratio), so that a CPU
test runs in seconds; 160x240 for the goldens' photos, not a multiple of 32 (the SegNeXt padding
and PoolFormer resize-to-multiple paths are exercised).

LightHamHead draws its starting NMF bases with torch.rand on every forward; torch.manual_seed(0)
right before each inference makes mmseg draw what vdeploy's fixed bases hold (seed 0).
"""
import json, os
import numpy as np
import torch
import cv2
import mmpretrain.models  # noqa: F401  (registers mmpretrain.ConvNeXt / PoolFormer)
from mmengine.config import Config
from mmseg.apis import init_model, inference_model

from mmseg_reference_common import calibrate_bn, golden_state_dict_from, parse_args, prepare_config, stand_in_weights

CASES = {
    "twins_pcpvt_fpn": "twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py",
    "twins_svt_uperhead": "twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py",
    "convnext_upernet": "convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py",
    "poolformer_fpn": "poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py",
    "segnext_mscan_ham": "segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py",
}
IMAGES = ("chelsea", "coffee")
TEST_SCALE = (2048, 160)


def run_case(name, rel, zoo, goldens, out_dir):
    cfg = Config.fromfile(os.path.join(zoo, rel))
    prepare_config(cfg, {"test_resize": TEST_SCALE})
    model = init_model(cfg, None, device="cpu").eval()
    manifest, sd, sha = stand_in_weights(model, golden_state_dict_from(goldens))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    stats = calibrate_bn(model, cv2.imread(os.path.join(img_dir, IMAGES[0] + ".png")), seed=0)
    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    np.savez_compressed(os.path.join(case_dir, "bn_stats.npz"), **stats)
    fairness = {}
    for img in IMAGES:
        bgr = cv2.imread(os.path.join(img_dir, img + ".png"))
        with torch.no_grad():
            torch.manual_seed(0)
            res = inference_model(model, bgr)
        label = res.pred_sem_seg.data[0].numpy().astype(np.uint8)
        logits = res.seg_logits.data.numpy()
        top2 = np.sort(logits, axis=0)[-2:]
        spread = float(logits.max() - logits.min())
        margin = top2[1] - top2[0]
        classes, counts = np.unique(label, return_counts=True)
        fairness[img] = {"classes_present": int(len(classes)),
                         "classes_over_1_percent": int((counts > 0.01 * label.size).sum()),
                         "share_top2_margin_below_1e-3_of_spread": float((margin < 1e-3 * spread).mean()),
                         "share_top2_margin_below_1e-5_of_spread": float((margin < 1e-5 * spread).mean()),
                         "median_top2_margin": float(np.median(top2[1] - top2[0])), "logit_spread": spread}
        np.savez_compressed(os.path.join(case_dir, img + ".npz"), label_map=label,
                            seg_logits_mean_c=logits.mean(axis=(1, 2)).astype(np.float32))
        print(name, img, fairness[img], flush=True)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": rel, "framework": "mmsegmentation 1.2.2 + mmpretrain (SyncBN -> BN)",
                   "test_resize_scale": list(TEST_SCALE), "images": list(IMAGES), "ham_seed": 0,
                   "weights": "goldens/weights.py golden_state_dict(keys), then bn_stats.npz",
                   "weights_sha256": sha, "fairness": fairness, "keys": manifest}, f, indent=0)


if __name__ == "__main__":
    args = parse_args(__doc__, CASES)
    for name, rel in CASES.items():
        if not args.cases or name in args.cases:
            run_case(name, rel, args.zoo, args.goldens, args.out_dir)
