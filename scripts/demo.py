"""`make demo`: the main job, through the same CLI a user runs, on two detectron2 Mask R-CNNs.

1. A small Mask R-CNN trained here (demo/shapes/: detectron2's own config format on its
   Base-RCNN-FPN, checkpoint made by scripts/train_maskrcnn.py) on generated shapes scenes:
   export to onnx + openvino (verified against PyTorch), pictures of its predictions on held-out
   scenes, and COCO AP against the scenes' ground truth per backend, side by side.
2. detectron2's full-size Mask R-CNN R50-FPN config on deterministic stand-in weights (no trained
   COCO checkpoint can be downloaded here): export, pictures on sample photos, and an end-to-end
   benchmark of every backend.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "demo" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"
SHAPES_CONFIG = ROOT / "demo" / "shapes" / "mask_rcnn_R_50_narrow_FPN_shapes.yaml"
SHAPES_WEIGHTS = SHAPES_CONFIG.with_name("model_final.pth")
SHAPES_SEED = 2024  # held-out scenes: the training stream (scripts/train_maskrcnn.py) uses another seed


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


def summary(results: Path, photos: list[Path], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    res = json.loads(results.read_text())
    t = Table(title=title)
    for c in ("image", "detections", "score >= 0.5", "classes (score >= 0.5)"):
        t.add_column(c)
    for p in photos:
        rows = [r for r in res if r["file_name"] == p.name]
        good = [r for r in rows if r["score"] >= 0.5]
        counts = {}
        for r in good:
            counts[r["category_name"]] = counts.get(r["category_name"], 0) + 1
        top = ", ".join(f"{n} x{c}" for n, c in sorted(counts.items(), key=lambda x: -x[1])[:4])
        t.add_row(p.name, str(len(rows)), str(len(good)), top)
    Console(width=140).print(t)


def shapes_part(out: Path) -> Path:
    """The trained shapes Mask R-CNN: export, pictures, AP per backend against ground truth."""
    from vdeploy.eval.synthetic import SHAPES, make_coco

    ann = make_coco(out / "shapes_val", n=24, seed=SHAPES_SEED, size=(256, 256), hard=True)
    gt = json.loads(ann.read_text())
    scenes = [ann.parent / "images" / im["file_name"] for im in gt["images"][:6]]
    bundle = out / "mask_rcnn_shapes"
    print("\n== 1. a small detectron2 Mask R-CNN trained from scratch on generated shapes scenes by "
          "scripts/train_maskrcnn.py (demo/shapes/: config, checkpoint, train_log.txt)", flush=True)
    # detectron2 configs carry no class names (detectron2 takes them from its dataset registry):
    # they are given at export, in the order the training script numbered the shapes.
    vdeploy("export", SHAPES_CONFIG, "--weights", SHAPES_WEIGHTS, "--format", "onnx,openvino", "--out", bundle,
            "--images", scenes[0], "--classes", ",".join(SHAPES))
    vdeploy("predict", bundle, *scenes, "--backend", "onnxruntime", "--out", out / "shapes_results.json",
            "--save-vis", out / "vis" / "shapes", "--score-thr", 0.5)
    summary(out / "shapes_results.json", scenes, "shapes predictions (onnxruntime bundle)")
    vdeploy("eval", bundle, "--dataset", ann, "--backends", "torch,onnxruntime,openvino", "--out", out / "shapes_eval",
            "--no-progress")
    return bundle


def fullsize_part(out: Path, iters: int) -> Path:
    """detectron2's R50-FPN Mask R-CNN on stand-in weights: export, pictures on photos, benchmark."""
    print("\n== 2. detectron2's full-size Mask R-CNN R50-FPN (demo/COCO-InstanceSegmentation/)", flush=True)
    print("Its weights are a deterministic STAND-IN (demo/standin_weights.py: seeded random tensors with "
          "realistic scales), not a trained COCO checkpoint, which cannot be downloaded here: its detections on "
          "the photos are meaningless; the model is here for its size (export, verification, speed).", flush=True)
    ckpt = out / "model_final.pth"
    subprocess.run([sys.executable, str(ROOT / "demo" / "standin_weights.py"), str(ckpt)], check=True)
    photos = sample_photos(out / "images")
    bundle = out / "mask_rcnn_R_50_FPN_3x"
    vdeploy("export", CONFIG, "--weights", ckpt, "--format", "onnx,openvino", "--out", bundle, "--images", photos[0])
    vdeploy("predict", bundle, *photos, "--backend", "onnxruntime", "--out", out / "results.json",
            "--save-vis", out / "vis" / "standin")
    summary(out / "results.json", photos, "stand-in weights on photos (onnxruntime bundle; detections meaningless)")
    # The deployed backends only: PyTorch on the full-size model costs the demo more than all the rest
    # (eval of the shapes model above gives torch's speed beside theirs).
    vdeploy("bench", bundle, "--backends", "onnxruntime,openvino", "--mode", "e2e", "--iters", iters,
            "--warmup", 1, "--images", *photos, "--json", out / "bench.json", "--plot", out / "bench.png")
    return bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--iters", type=int, default=3, help="benchmark iterations of the full-size model")
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    shapes = shapes_part(out)
    full = fullsize_part(out, args.iters)
    print(f"\ndemo done in {time.time() - t0:.0f} s: bundles {shapes} and {full}; pictures {out / 'vis'}; "
          f"shapes AP per backend {out / 'shapes_eval' / 'report.md'}; benchmark {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
