"""Small labelled datasets for trying `vdeploy eval`: the synthetic shapes scenes, or a folder of
photos labelled by a bundle's predictions (pseudo-labels: they measure agreement with that model,
for example of another backend or precision, not accuracy)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write
from . import synthetic

SYNTHETIC = {"coco": synthetic.make_coco, "semantic": synthetic.make_semantic,
             "imagefolder": synthetic.make_imagefolder, "market1501": synthetic.make_market1501}


def _fresh(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)


def make_synthetic(out: Path, kind: str, n: int, seed: int) -> Path:
    if kind not in SYNTHETIC:
        raise UserError(f"--synthetic {kind!r}: choose from {', '.join(SYNTHETIC)}")
    if n <= 0:
        raise UserError("--n must be a positive number of images (per class for imagefolder, identities for market1501)")
    _fresh(out)
    first_arg = {"coco": "n", "semantic": "n", "imagefolder": "per_class", "market1501": "identities"}[kind]
    return Path(SYNTHETIC[kind](out, **{first_arg: n, "seed": seed}))


def make_from_predictions(out: Path, photos: list[Path], predictor, score_threshold: float,
                          progress: Callable[[Path], None] = lambda p: None) -> Path:
    """Label `photos` with `predictor`: COCO json for detectors, images/ + labels/ for semantic
    segmentation, images/ + depth/ (16-bit PNGs of millimetres, 0 = no depth) for depth
    estimation, class folders for classifiers. Returns what `vdeploy eval --dataset` takes."""
    from ..runtime.io import atomic_write_image, read_image
    from ..runtime.results import encode_rle, label_map_array

    task, classes = predictor.task, predictor.classes
    if task not in ("detection", "instance_segmentation", "semantic_segmentation", "classification",
                    "depth_estimation"):
        raise UserError(f"a {task} model cannot label a dataset here (detection, segmentation, depth estimation and "
                        "classification can)")
    if not 0.0 <= score_threshold <= 1.0:
        raise UserError("--score-thr must be in [0, 1]")
    _fresh(out)
    images, anns = [], []
    names = _distinct_names(photos)
    for i, (path, name) in enumerate(zip(photos, names)):
        progress(path)
        img = read_image(path)
        pred = predictor.predict(img)
        h, w = img.shape[:2]
        if task in ("detection", "instance_segmentation"):
            shutil.copyfile(path, _parent(out / "images" / name))
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            keep = np.nonzero(pred.scores >= score_threshold)[0]
            rles = encode_rle(pred.masks[keep]) if pred.masks is not None else None
            for j, k in enumerate(keep):
                x1, y1, x2, y2 = (float(v) for v in pred.boxes[k])
                a = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(pred.classes[k]) + 1,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                if rles is not None:
                    a["segmentation"], a["area"] = rles[j], float(pred.masks[k].sum())
                anns.append(a)
        elif task == "semantic_segmentation":
            shutil.copyfile(path, _parent(out / "images" / name))
            atomic_write_image(out / "labels" / f"{Path(name).stem}.png", label_map_array(pred.label_map))
        elif task == "depth_estimation":
            from ..runtime.tasks.depth_estimation import depth_png_array

            # millimetres, as `vdeploy eval`'s default --depth-scale reads them (65.535 m at most)
            shutil.copyfile(path, _parent(out / "images" / name))
            atomic_write_image(out / "depth" / f"{Path(name).stem}.png", depth_png_array(pred.depth_map))
        else:
            k = int(pred.probs.argmax())
            shutil.copyfile(path, _parent(out / (classes[k] if k < len(classes) else str(k)) / name))
    if task in ("detection", "instance_segmentation"):
        cats = [{"id": c + 1, "name": n} for c, n in enumerate(classes)]
        path = out / "annotations.json"
        atomic_write(path, json.dumps({"images": images, "annotations": anns, "categories": cats}))
        return path
    return out


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _distinct_names(photos: list[Path]) -> list[str]:
    """File names, made distinct (photos from several folders may share one)."""
    seen: dict[str, int] = {}
    out = []
    for p in photos:
        n = seen.get(p.name, 0)
        seen[p.name] = n + 1
        out.append(p.name if n == 0 else f"{p.stem}-{n}{p.suffix}")
    return out
