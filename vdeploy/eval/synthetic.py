"""Small deterministic datasets of coloured shapes in every format `vdeploy eval` reads, for
tests and for training the tiny models (scripts/train_tiny.py). Same seed, same bytes.

Shapes: circle, square, triangle, on a noisy background. `scene` never overlaps them, so each
instance mask is exactly the shape drawn; `hard_scene` (the Mask R-CNN of demo/shapes is trained
and evaluated on it) adds overlaps, clutter and a wide range of scales."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")


def draw_shape(canvas: np.ndarray, kind: str, cx: int, cy: int, r: int, color) -> np.ndarray:
    """Draw one filled shape; returns its mask (H x W bool)."""
    import cv2

    mask = np.zeros(canvas.shape[:2], np.uint8)
    if kind == "circle":
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif kind == "square":
        cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    canvas[mask.astype(bool)] = color
    return mask.astype(bool)


def background(rng: np.random.Generator, h: int, w: int, level: int = 90) -> np.ndarray:
    base = rng.integers(level - 40, level + 40, size=3)
    noise = rng.normal(0, 12, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    # far from the background's grey so shapes stand out
    c = rng.integers(0, 256, size=3)
    c[rng.integers(0, 3)] = rng.choice([20, 235])
    return tuple(int(v) for v in c)


def scene(rng: np.random.Generator, h: int = 96, w: int = 96, max_shapes: int = 3):
    """One image with 1..max_shapes shapes: (BGR image, [(class index, mask)])."""
    img = background(rng, h, w)
    taken = np.zeros((h, w), bool)
    objects = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _try in range(20):
            r = int(rng.integers(8, min(h, w) // 4))
            cx, cy = int(rng.integers(r + 1, w - r - 1)), int(rng.integers(r + 1, h - r - 1))
            if not taken[max(cy - r - 2, 0):cy + r + 3, max(cx - r - 2, 0):cx + r + 3].any():
                break
        else:
            continue
        k = int(rng.integers(0, len(SHAPES)))
        mask = draw_shape(img, SHAPES[k], cx, cy, r, random_color(rng))
        taken |= mask
        objects.append((k, mask))
    return img, objects


def hard_scene(rng: np.random.Generator, h: int = 256, w: int = 256, max_shapes: int = 8,
               min_r: int = 6, max_r: int = 64):
    """A harder scene: (BGR image, [(class index, mask)]), 1..max_shapes shapes.

    - background: a colour gradient plus noise, and clutter that is not an object (lines, dots),
      drawn first so that it never changes a mask;
    - scale range: radii log-uniform in [min_r, max_r];
    - overlaps: a later shape occludes earlier ones, whose masks keep their visible part. A
      placement that would leave an earlier shape less than 60 % visible is redrawn, so every
      annotated instance is still recognisable; an overlapping shape gets a colour far from the
      ones it covers, so that the boundary between them is visible.
    """
    import cv2

    img = background(rng, h, w).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    slope = rng.normal(0, 40, size=(2, 3))
    img = np.clip(img + (xx / w - 0.5)[..., None] * slope[0] + (yy / h - 0.5)[..., None] * slope[1], 0, 255)
    img = img.astype(np.uint8)
    for _ in range(int(rng.integers(2, 9))):
        p1, p2 = rng.integers(0, [w, h], size=2), rng.integers(0, [w, h], size=2)
        tone = tuple(int(v) for v in rng.integers(30, 200, size=3))
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), tone, int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 15))):
        c = tuple(int(v) for v in rng.integers(0, [w, h], size=2))
        cv2.circle(img, c, int(rng.integers(1, 3)), tuple(int(v) for v in rng.integers(0, 256, size=3)), -1)

    objects: list[tuple[int, np.ndarray, tuple]] = []  # (class, visible mask, colour)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _try in range(20):
            r = int(np.exp(rng.uniform(np.log(min_r), np.log(min(max_r, min(h, w) // 2 - 2)))))
            cx, cy = int(rng.integers(r + 1, w - r - 1)), int(rng.integers(r + 1, h - r - 1))
            k = int(rng.integers(0, len(SHAPES)))
            mask = draw_shape(np.zeros((h, w, 1), np.uint8), SHAPES[k], cx, cy, r, 1)
            covered = [i for i, (_, m, _) in enumerate(objects) if (m & mask).any()]
            if all((objects[i][1] & ~mask).sum() >= 0.6 * objects[i][1].sum() for i in covered):
                break
        else:
            continue
        for _c in range(20):
            color = random_color(rng)
            if all(np.abs(np.subtract(color, objects[i][2])).sum() > 150 for i in covered):
                break
        img[mask] = color
        objects = [(c, m & ~mask, col) for c, m, col in objects]
        objects.append((k, mask, color))
    return img, [(k, m) for k, m, _ in objects]


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def make_coco(out: Path, n: int = 24, seed: int = 0, size=(96, 96), hard: bool = False) -> Path:
    """out/annotations.json + out/images/NNNN.png; returns the json path. `hard`: `hard_scene`s."""
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        img, objects = (hard_scene if hard else scene)(rng, *size)
        name = f"{i:04d}.png"
        _write_png(out / "images" / name, img)
        images.append({"id": i + 1, "file_name": name, "height": size[0], "width": size[1]})
        for k, mask in objects:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 10 * (k + 1), "bbox": [x, y, w, h],
                         "area": float(mask.sum()), "iscrowd": 0, "segmentation": rle})
    # category ids deliberately not 0..K-1: mapping by name must be exercised
    cats = [{"id": 10 * (k + 1), "name": s} for k, s in enumerate(SHAPES)]
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def make_semantic(out: Path, n: int = 16, seed: int = 1, size=(96, 96)) -> Path:
    """out/images/NNNN.png + out/labels/NNNN.png: 0 background, 1 + shape index."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, objects = scene(rng, *size)
        label = np.zeros(size, np.uint8)
        for k, mask in objects:
            label[mask] = k + 1
        _write_png(out / "images" / f"{i:04d}.png", img)
        _write_png(out / "labels" / f"{i:04d}.png", label)
    return out


def make_imagefolder(out: Path, per_class: int = 8, seed: int = 2, size=(64, 64)) -> Path:
    """out/<shape>/NNNN.png with one shape per image."""
    rng = np.random.default_rng(seed)
    for k, s in enumerate(SHAPES):
        for i in range(per_class):
            img = background(rng, *size)
            r = int(rng.integers(10, 20))
            cx, cy = (int(rng.integers(r + 1, d - r - 1)) for d in (size[1], size[0]))
            draw_shape(img, s, cx, cy, r, random_color(rng))
            _write_png(out / s / f"{i:04d}.png", img)
    return out


def make_market1501(out: Path, identities: int = 6, seed: int = 3, size=(64, 32)) -> Path:
    """out/query + out/bounding_box_test: an identity is a (shape, colour) pair; cameras differ
    in background and position. One query per identity (camera 1), gallery images from cameras
    1 and 2, plus distractors (id 0000) and junk (id -1)."""
    rng = np.random.default_rng(seed)

    def crop(kind, color, cam):
        img = background(rng, *size, level=60 + 50 * cam)
        draw_shape(img, kind, size[1] // 2 + int(rng.integers(-2, 3)), size[0] // 2 + int(rng.integers(-4, 5)), 10, color)
        return img

    for pid in range(1, identities + 1):
        kind, color = SHAPES[pid % len(SHAPES)], random_color(rng)
        _write_png(out / "query" / f"{pid:04d}_c1s1_{pid:06d}_00.jpg", crop(kind, color, 1))
        for j, cam in enumerate((1, 2, 2)):
            _write_png(out / "bounding_box_test" / f"{pid:04d}_c{cam}s1_{pid * 10 + j:06d}_00.jpg", crop(kind, color, cam))
    for j in range(3):
        _write_png(out / "bounding_box_test" / f"0000_c{j % 2 + 1}s1_{900 + j:06d}_00.jpg",
                   crop(SHAPES[j % 3], random_color(rng), j % 2 + 1))
        _write_png(out / "bounding_box_test" / f"-1_c1s1_{950 + j:06d}_00.jpg", crop("circle", random_color(rng), 1))
    return out
