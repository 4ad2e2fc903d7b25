"""`make demo`: the main job on the embedded default model, through the same CLI a user runs.

detectron2 Mask R-CNN R50-FPN (its own config, the stand-in checkpoint of demo/) -> onnx and
openvino bundle, verified against PyTorch -> predictions with pictures on sample photos -> a
short end-to-end benchmark.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "demo" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"


def vdeploy(*args) -> None:
    cmd = [sys.executable, "-m", "vdeploy", *map(str, args)]
    print("\n$ vdeploy " + " ".join(map(str, args)), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  ({time.time() - t:.0f} s)", flush=True)


def sample_photos(folder: Path) -> list[Path]:
    """scikit-image's public-domain sample photos, written as PNG files."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        p = folder / f"{name}.png"
        cv2.imwrite(str(p), getattr(data, name)()[:, :, ::-1])
        out.append(p)
    return out


def summary(results: Path, photos: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    res = json.loads(results.read_text())
    t = Table(title="predictions (onnxruntime bundle)")
    for c in ("image", "detections", "score >= 0.5", "top classes"):
        t.add_column(c)
    for p in photos:
        rows = [r for r in res if r["file_name"] == p.name]
        good = [r for r in rows if r["score"] >= 0.5]
        names = {}
        for r in good:
            names[r["category_name"]] = names.get(r["category_name"], 0) + 1
        top = ", ".join(f"{n} x{c}" for n, c in sorted(names.items(), key=lambda x: -x[1])[:4])
        t.add_row(p.name, str(len(rows)), str(len(good)), top)
    Console(width=140).print(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "model_final.pth"
    subprocess.run([sys.executable, str(ROOT / "demo" / "standin_weights.py"), str(ckpt)], check=True)
    photos = sample_photos(out / "images")
    bundle = out / "mask_rcnn_R_50_FPN_3x"
    vdeploy("export", CONFIG, "--weights", ckpt, "--format", "onnx,openvino", "--out", bundle, "--images", photos[0])
    vdeploy("predict", bundle, *photos, "--backend", "onnxruntime", "--out", out / "results.json", "--save-vis", out / "vis")
    summary(out / "results.json", photos)
    vdeploy("bench", bundle, "--backends", "torch,onnxruntime,openvino", "--mode", "e2e", "--iters", args.iters,
            "--warmup", 1, "--images", *photos, "--json", out / "bench.json", "--plot", out / "bench.png")
    print(f"\ndemo done: bundle {bundle}, results {out / 'results.json'}, pictures {out / 'vis'}, benchmark {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
