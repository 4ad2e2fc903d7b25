"""Reference label maps of the real MMSegmentation 1.2.2 for ResNeSt, the real-time nets
(MobileNetV3 + LRASPPHead, STDC, PIDNet + PIDHead, DDRNet + DDRHead, CGNet, ERFNet, Fast-SCNN +
DepthwiseSeparableFCNHead) and PointRend (PointHead on semantic FPN), for
tests/test_mmseg_families_b.py. Run it beside the project, in a scratch virtualenv
with mmseg 1.2.2 and mmcv-lite (never a project dependency):

    python make_mmseg_references_realtime.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

The case layout is make_mmseg_references.py's: per case `manifest.json` (state-dict keys and
shapes, config, overrides, stand-in weights' SHA-256, fairness), `bn_stats.npz` (BatchNorm
statistics calibrated on the first image, layer by layer in forward order) and per image a
compressed npz with the label map, the mean logit per class and top-two margin quantiles.
`test_resize` overrides the test pipeline's Resize scale (a smaller test size, so that a case
runs in seconds on a CPU); the stand-ins' `conv_seg` is scaled by ../shared/goldens/weights.py
(x4 weight, x60 bias) so that a few classes win per image; the manifest records, per image, the
classes present, the share of pixels with a top-two margin under 1e-3 and the label agreement
when the backbone's output is perturbed by 1e-4 relative noise.
"""
from mmseg_reference_common import make_case, parse_args

SMALL = {"test_resize": [512, 256]}
# DDRNet / PIDNet add stride-8 maps to maps resized to (h // 8, w // 8): mmseg fails unless the
# input size is a multiple of 8, so these cases resize to a fixed 512x256
FIXED = {"test_resize": [512, 256], "test_keep_ratio": False}
CASES = {
    # ResNeSt-50 in the S-101 config (the maths of every block, half the weights and time)
    "resnest_deeplabv3plus": ("resnest/resnest_s101-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024.py",
                              {"test_resize": [384, 192], "model.backbone.depth": 50}),
    # LRASPP pools 49x49 windows of the stride-8 features: images need >= 392 pixels a side
    "mobilenet_v3_large_lraspp": ("mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py",
                                  {"test_resize": [1024, 400]}),
    "mobilenet_v3_small_lraspp": ("mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py",
                                  {"test_resize": [1024, 400]}),
    "stdc1": ("stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py", SMALL),
    "stdc2": ("stdc/stdc2_4xb12-80k_cityscapes-512x1024.py", SMALL),
    "pidnet_s": ("pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py", FIXED),
    "pidnet_l": ("pidnet/pidnet-l_2xb6-120k_1024x1024-cityscapes.py", FIXED),
    "ddrnet_23_slim": ("ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py", FIXED),
    "cgnet": ("cgnet/cgnet_fcn_4xb8-60k_cityscapes-512x1024.py", SMALL),
    "erfnet": ("erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py", SMALL),
    "fastscnn": ("fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py", SMALL),
    # PointRend: both subdivision steps pick 8196 of 96x144 / 192x288 points (the top-k path)
    "pointrend_r50": ("point_rend/pointrend_r50_4xb2-80k_cityscapes-512x1024.py", {"test_resize": [384, 192]}),
}


if __name__ == "__main__":
    args = parse_args(__doc__, CASES)
    for case in args.cases or sorted(CASES):
        make_case(case, *CASES[case], args.zoo, args.goldens, args.out_dir)
