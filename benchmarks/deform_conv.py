"""Deformable conv export forms: accuracy against PyTorch and latency on onnxruntime / OpenVINO.

usage: python benchmarks/deform_conv.py [--channels 256] [--size 50x68] [--modulated] [--runs 20]

One detectron2 deformable 3x3 conv (offset conv + deformable conv, the res4 block of an R-50 at
800 x 1088 by default) is exported twice:
- `deformconv`: ONNX's DeformConv operator (opset 19), through a symbolic registered here for the
  measurement only (torchvision registers none);
- `sampled`: what vdeploy's bundles contain (vdeploy.models.detectron2.deform_conv), GridSample +
  Conv at opset 17.
Each form runs where it can; a runtime that cannot load it is reported as such.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _register_deformconv_symbolic():
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx import symbolic_helper as sh

    @sh.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
    def symbolic(g, x, weight, offset, mask, bias, sh_, sw, ph, pw, dh, dw, groups, offset_groups, use_mask):
        kh, kw = sh._get_tensor_sizes(weight)[-2:]
        inputs = [x, weight, offset, bias] + ([mask] if use_mask else [])
        return g.op("DeformConv", *inputs, dilations_i=[dh, dw], group_i=groups, kernel_shape_i=[kh, kw],
                    offset_group_i=offset_groups, pads_i=[ph, pw, ph, pw], strides_i=[sh_, sw])

    register_custom_op_symbolic("torchvision::deform_conv2d", symbolic, 19)


class Block(torch.nn.Module):
    def __init__(self, channels: int, modulated: bool, force_torchvision: bool):
        super().__init__()
        from vdeploy.models.detectron2.deform_conv import DeformConv

        self.modulated, self.force_torchvision = modulated, force_torchvision
        self.offset = torch.nn.Conv2d(channels, 27 if modulated else 18, 3, 1, 1)
        torch.nn.init.normal_(self.offset.weight, std=0.01)  # offsets of about a pixel, as trained
        self.conv = DeformConv(channels, channels, 3, padding=1)

    def forward(self, x):
        from torchvision.ops import deform_conv2d

        from vdeploy.models.detectron2.deform_conv import split_offset_mask

        offset, mask = split_offset_mask(self.offset(x), self.modulated)
        if self.force_torchvision:  # traced as torchvision::deform_conv2d -> ONNX DeformConv
            return deform_conv2d(x, offset, self.conv.weight, None, 1, 1, 1, mask)
        return self.conv(x, offset, mask)


def _time(fn, runs):
    fn()
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return 1000 * float(np.median(t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--size", default="50x68")
    ap.add_argument("--modulated", action="store_true")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    h, w = map(int, a.size.split("x"))
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    x = torch.randn(1, a.channels, h, w)
    block = Block(a.channels, a.modulated, False).eval()
    with torch.no_grad():
        want = block(x).numpy()
        print(f"torch (torchvision deform_conv2d): {_time(lambda: block(x), a.runs):.1f} ms")
    _register_deformconv_symbolic()
    tmp = Path(tempfile.mkdtemp())
    import onnxruntime as ort
    import openvino as ov

    for form, opset in (("deformconv", 19), ("sampled", 17)):
        block.force_torchvision = form == "deformconv"
        path = tmp / f"{form}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(block, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        runners = {}
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            runners["onnxruntime"] = lambda: sess.run(None, {"x": x.numpy()})[0]
        except Exception as e:  # noqa: BLE001 - the point is to report what does not load
            print(f"{form} / onnxruntime: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
        try:
            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                  "INFERENCE_NUM_THREADS": a.threads})
            runners["openvino"] = lambda: compiled({"x": x.numpy()})[0]
        except Exception as e:  # noqa: BLE001
            print(f"{form} / openvino: cannot load ({str(e).strip().splitlines()[-1][:100]})")
        for name, run in runners.items():
            got = run()
            err = float(np.abs(got - want).max() / np.abs(want).max())
            print(f"{form} / {name}: {_time(run, a.runs):.1f} ms, max error {err:.1e} of the output's range")


if __name__ == "__main__":
    main()
