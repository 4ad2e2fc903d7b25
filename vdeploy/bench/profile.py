"""Where the time of one backend goes, operator type by operator type, from the engine's own profiler
(OpenVINO's get_profiling_info, onnxruntime's session profiling): which kernels ran in int8 / bf16,
and which operators stayed in float and what they cost. The evidence behind a speed-up that falls
short of its target (docs/precision.md).

    python -m vdeploy.bench.profile BUNDLE --backend openvino-int8 [--image-size HxW] [--iters 5]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile


def _feed(bundle_path: str, backend: str, hw):
    from ..runtime.predictor import Predictor
    from ..runtime.synthetic import synthetic_image
    from ..runtime.tasks import get_task

    pred = Predictor(bundle_path, backend)
    if hw is None:
        hw = tuple(pred.bundle.meta["input_size"]) if pred.bundle.meta.get("input_size") else get_task(pred.bundle.task).bench_hw
    return pred.bundle, pred.preprocess(synthetic_image(*hw, seed=0)).inputs


def profile_openvino(bundle, precision: str, feed: dict, iters: int) -> list[dict]:
    import openvino as ov

    path = bundle.model_file("openvino", precision)
    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    names = {n for p in compiled.inputs for n in p.get_names()}
    req = compiled.create_infer_request()
    feed = {k: v for k, v in feed.items() if k in names}
    req.infer(feed)
    totals: dict = collections.defaultdict(float)
    for _ in range(iters):
        req.infer(feed)
        for p in req.get_profiling_info():
            if p.status == p.Status.EXECUTED:
                totals[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e3 / iters
    return _rows(totals)


def profile_onnxruntime(bundle, precision: str, feed: dict, iters: int) -> list[dict]:
    import onnxruntime as ort

    path = bundle.model_file("onnx", precision)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        feed = {k: v for k, v in feed.items() if k in names}
        for _ in range(iters + 1):
            sess.run(None, feed)
        events = json.load(open(sess.end_profiling()))
    totals: dict = collections.defaultdict(float)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    skip_until = runs[0]["ts"] + runs[0]["dur"] if runs else 0  # the first run is warm-up
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= skip_until:
            args = e.get("args", {})
            totals[(args.get("op_name", "?"), args.get("provider", "").replace("ExecutionProvider", ""))] += e["dur"] / 1e3 / iters
    return _rows(totals)


def _rows(totals: dict) -> list[dict]:
    whole = sum(totals.values()) or 1.0
    rows = [{"op": op, "kernel": kernel, "ms": ms, "share": ms / whole} for (op, kernel), ms in totals.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def main(argv=None) -> int:
    from ..runtime.backends import split_name

    p = argparse.ArgumentParser(prog="python -m vdeploy.bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--backend", required=True, help="onnxruntime[-int8] or openvino[-bf16|-int8]")
    p.add_argument("--image-size", help="HxW of the synthetic image (default: the bundle's or the task's)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    hw = tuple(int(x) for x in args.image_size.lower().split("x")) if args.image_size else None
    entry, precision = split_name(args.backend)
    bundle, feed = _feed(args.bundle, args.backend, hw)
    fn = {"openvino": profile_openvino, "onnxruntime": profile_onnxruntime}.get(entry.name)
    if fn is None:
        raise SystemExit(f"no profiler for {entry.name}")
    rows = fn(bundle, precision, feed, args.iters)
    total = sum(r["ms"] for r in rows)
    print(f"{args.backend}: {total:.1f} ms per inference in the engine's operators (mean of {args.iters})")
    for r in rows[:args.top]:
        print(f"  {r['op']:<24} {r['kernel']:<36} {r['ms']:8.2f} ms  {100 * r['share']:5.1f} %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
