"""Reference outputs of the real detectron2 / centermask2 for architectures the shared goldens do
not cover (deformable convs, CenterMask-Lite). Run beside the project, in the scratch virtualenv
that has detectron2 (../shared/reference/README.md), never as a project dependency:

    python make_d2_references.py SHARED_REFERENCE_DIR SRC OUT_DIR IMAGES CASE...

OUT_DIR/../images must hold the images; IMAGES are their names, comma-separated.

It runs ../shared/reference/make_d2_goldens.py's `run_case` (same weights, calibration and file
layout) on the cases below. detectron2's ModulatedDeformConv has no CPU kernel ("Not implemented
on the CPU"), so on CPU it is replaced by torchvision's `deform_conv2d` with the mask, the op that
detectron2's own DeformConv (v1) calls on CPU and whose DCNv2 semantics are the same (bilinear
sampling, zeros outside, mask multiplies each sample).
"""
import json
import os
import sys

ref_dir, src, out_dir, images = sys.argv[1:5]
sys.path.insert(0, ref_dir)
import make_d2_goldens as base  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from detectron2.layers import deform_conv as d2_deform  # noqa: E402


def _modulated_on_cpu(self, x, offset, mask):
    x = torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                      mask)
    if self.norm is not None:
        x = self.norm(x)
    return self.activation(x) if self.activation is not None else x


d2_deform.ModulatedDeformConv.forward = _modulated_on_cpu

# The stand-in weights give the offset convs offsets of 3-5 pixels on average (20+ at most), far
# more than a trained DCN predicts; sampling that far off makes every deformable block multiply
# float32 rounding by ~6 (measured), so after a dozen blocks no implementation could match and
# the reference would not be a fair bar. The offset convs' weights and biases are multiplied by
# OFFSET_SCALE (offsets of about a pixel), a power of two so that a consumer reproduces them
# exactly: manifest.json records it as "offset_scale", to apply after make_ckpt.py (storing the
# scaled tensors as overrides would take megabytes).
OFFSET_SCALE = 0.25
OFFSET_KEYS = (".conv2_offset.", "/conv_offset.")
_build = base.build


def _build_scaled(*args, **kwargs):
    cfg, model, manifest = _build(*args, **kwargs)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if any(s in k for s in OFFSET_KEYS):
                v.mul_(OFFSET_SCALE)
    return cfg, model, manifest


base.build = _build_scaled

CASES = {
    "mask_rcnn_R_50_FPN_1x_dconv_c3-c5": ("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml", []),
    "centermask_V_39_eSE_dcn_FPN_ms_3x": ("centermask/centermask_V_39_eSE_dcn_FPN_ms_3x.yaml", []),
    "centermask_lite_Mv2_FPN_ms_4x": ("centermask/centermask_lite_Mv2_FPN_ms_4x.yaml", []),
}
for name in sys.argv[5:]:
    config, overrides = CASES[name]
    base.run_case(src, out_dir, name, config, overrides, images.split(","))
    path = os.path.join(out_dir, name, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["offset_scale"] = {"scale": OFFSET_SCALE, "keys_containing": list(OFFSET_KEYS)}
    with open(path, "w") as f:
        json.dump(manifest, f, indent=0)
