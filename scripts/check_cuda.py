"""The GPU paths, checked on a machine that has one: every bundle backend that takes `--device
cuda` against the same backend on the CPU, judged by the task's gates (what `vdeploy verify`
uses), plus what onnxruntime says when asked for CUDA.

    python scripts/check_cuda.py OUT_DIR

Exports small bundles (the tiny trained models, and the demo's detectron2 Mask R-CNN config at
random initialisation) on the CPU, runs them on CPU and on CUDA, and writes OUT_DIR/cuda.json.
Exits 1 when a backend disagrees, 2 when there is no CUDA device.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["tiny:shapes_det", "tiny:shapes_seg", "tiny:shapes_cls",
           str(ROOT / "demo" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml")]


def main(out: Path) -> int:
    import torch

    from vdeploy.errors import UserError
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model
    from vdeploy.runtime.predictor import Predictor
    from vdeploy.runtime.synthetic import synthetic_image
    from vdeploy.runtime.tasks import get_task

    if not torch.cuda.is_available():
        print("no CUDA device here")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cases": []}
    images = [synthetic_image(h, w, seed=s) for s, (h, w) in enumerate(((480, 640), (512, 384), (360, 500)))]
    failed = False
    for source in SOURCES:
        bundle = export_bundle(build_model(source), out / Path(source).stem.replace(":", "_"), ["onnx", "torchscript"],
                               verify=False, log=lambda *a: None)
        task = get_task(bundle.task)
        for backend in ("torch", "torchscript", "onnxruntime"):
            row = {"source": source, "backend": backend}
            try:
                cpu = Predictor(bundle, backend, device="cpu").load()
                gpu = Predictor(bundle, backend, device="cuda").load()
                refs = [cpu.predict(im) for im in images]
                gpu.predict(images[0])  # warm-up (cuDNN autotuning, lazy loading)
                t = time.perf_counter()
                gots = [gpu.predict(im) for im in images]
                row["cuda_ms_per_image"] = (time.perf_counter() - t) * 1e3 / len(images)
            except UserError as e:
                row["refused"] = str(e)
                print(f"{source} {backend}: refused: {e}")
                report["cases"].append(row)
                continue
            agreement = task.agreement(refs, gots, bundle.meta)
            gates = task.resolve_gates()
            row["metrics"] = agreement.metrics
            row["passed"] = all(g.passes(agreement.metrics.get(g.metric)) for g in gates)
            failed |= not row["passed"]
            print(f"{source} {backend} cuda vs cpu: {'PASS' if row['passed'] else 'FAIL'} {agreement.metrics} "
                  f"({row['cuda_ms_per_image']:.1f} ms/image)")
            report["cases"].append(row)
    (out / "cuda.json").write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "cuda-check")))
