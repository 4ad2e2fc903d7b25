"""Reference outputs of the real detectron2 / centermask2 for architectures the shared goldens do
not cover (deformable convs, CenterMask-Lite). Run beside the project, in the scratch virtualenv
that has detectron2 (../shared/reference/README.md), never as a project dependency:

    python make_d2_references.py SHARED_REFERENCE_DIR SRC OUT_DIR IMAGES CASE...

It runs ../shared/reference/make_d2_goldens.py's `run_case` (same weights, calibration and file
layout) on the cases below. detectron2's ModulatedDeformConv has no CPU kernel ("Not implemented
on the CPU"), so on CPU it is replaced by torchvision's `deform_conv2d` with the mask, the op that
detectron2's own DeformConv (v1) calls on CPU and whose DCNv2 semantics are the same (bilinear
sampling, zeros outside, mask multiplies each sample).
"""
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

CASES = {
    "mask_rcnn_R_50_FPN_1x_dconv_c3-c5": ("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml", []),
    "centermask_V_39_eSE_dcn_FPN_ms_3x": ("centermask/centermask_V_39_eSE_dcn_FPN_ms_3x.yaml", []),
    "centermask_lite_Mv2_FPN_ms_4x": ("centermask/centermask_lite_Mv2_FPN_ms_4x.yaml", []),
}
for name in sys.argv[5:]:
    config, overrides = CASES[name]
    base.run_case(src, out_dir, name, config, overrides, images.split(","))
