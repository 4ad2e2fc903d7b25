"""The vdeploy backend wrapper against a bare onnxruntime InferenceSession on the same input.

usage: python benchmarks/wrapper_overhead.py [BUNDLE] [--iters N]
Without BUNDLE, exports torchvision:resnet50 at 224x224 into a temporary folder first. Both are
timed interleaved (A, B, A, B, ...) so that machine load hits both alike; prints the medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--iters", type=int, default=100)
    args = ap.parse_args()
    import onnxruntime as ort

    from vdeploy.runtime.backends import create_backend
    from vdeploy.bundle import load_bundle
    from vdeploy.runtime.synthetic import synthetic_image
    from vdeploy.runtime.predictor import Predictor

    path = args.bundle
    if path is None:
        from vdeploy.export import export_bundle
        from vdeploy.frameworks import build_model

        path = tempfile.mkdtemp() + "/resnet50"
        export_bundle(build_model("torchvision:resnet50", None), path, ["onnx"], verify=False, log=lambda *a: None)
    bundle = load_bundle(path)
    feed = Predictor(bundle, "onnxruntime").preprocess(synthetic_image(480, 640)).inputs
    wrapped = create_backend("onnxruntime", bundle).load()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    bare = ort.InferenceSession(str(bundle.model_file("onnx")), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in bare.get_outputs()]
    for _ in range(5):
        wrapped.infer(feed)
        bare.run(names, feed)
    tw, tb = [], []
    for _ in range(args.iters):
        t = time.perf_counter(); wrapped.infer(feed); tw.append(time.perf_counter() - t)
        t = time.perf_counter(); bare.run(names, feed); tb.append(time.perf_counter() - t)
    mw, mb = statistics.median(tw) * 1e3, statistics.median(tb) * 1e3
    print(f"vdeploy OnnxRuntimeBackend p50 {mw:.2f} ms, bare InferenceSession.run p50 {mb:.2f} ms: overhead {mw / mb - 1:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
