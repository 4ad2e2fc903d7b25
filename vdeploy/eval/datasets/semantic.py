"""Semantic segmentation: DS/images/<stem>.<ext> with DS/labels/<stem>.png (class index per
pixel, `ignore_index` not scored), or MMSegmentation's layouts (img_dir/ann_dir, ADE20K's
images/annotations, with split sub-folders). Cityscapes label ids can be mapped to train ids, and ADE20K's
"0 = other" convention (reduce_zero_label) applied."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from ...runtime.metrics.segmentation import confusion, segmentation_metrics
from . import IMAGE_SUFFIXES, FORMATS, DatasetFormat, DatasetOptions, Sample, Scores, image_size, list_images

# Cityscapes label id -> train id (cityscapesScripts' labels.py); every other id is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LABEL_TRANSFORMS = ("none", "cityscapes", "reduce_zero_label")


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel PNG (8- or 16-bit, palette PNGs by index) -> H x W int64."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
                raise UserError(f"{path}: a label map must be a single-channel PNG of class indices, this one is {im.mode}")
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise UserError(f"{path}: no such label file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable PNG ({e})") from None


def transform_labels(label: np.ndarray, kind: str, ignore_index: int) -> np.ndarray:
    if kind == "cityscapes":
        lut = np.full(max(256, int(label.max()) + 1), ignore_index, np.int64)
        for k, v in CITYSCAPES_TRAIN_IDS.items():
            lut[k] = v
        return lut[np.clip(label, 0, None)]
    if kind == "reduce_zero_label":
        # MMSegmentation's ReduceZeroLabel: 0 (unlabelled) -> ignore, 1..N -> 0..N-1
        out = label - 1
        out[label == 0] = ignore_index
        out[label == ignore_index] = ignore_index
        return out
    return label


class SemanticDataset:
    format = "semantic"

    def __init__(self, root: Path, samples: list[Sample], labels: dict[str, Path], options: DatasetOptions):
        self.root = root
        self.samples = samples
        self.labels = labels
        self.ignore_index = options.ignore_index
        self.label_transform = options.label_transform

    def describe(self) -> dict:
        return {"format": self.format, "root": str(self.root), "images": len(self.samples),
                "ignore_index": self.ignore_index, "label_transform": self.label_transform}

    def load_label(self, key: str, hw: tuple[int, int]) -> np.ndarray:
        path = self.labels[key]
        label = read_label_png(path)
        if label.shape != tuple(hw):
            raise UserError(f"{path}: label map is {label.shape[1]}x{label.shape[0]} but its image is {hw[1]}x{hw[0]}")
        return transform_labels(label, self.label_transform, self.ignore_index)

    def score(self, records: dict[str, dict], classes: list[str]) -> Scores:
        n = len(classes)
        cm = np.zeros((n, n + 1), np.int64)
        for key, rec in records.items():
            pred = read_label_png(Path(rec["label_map"]))
            cm += confusion(pred, self.load_label(key, pred.shape), n, self.ignore_index)
        summary, per_class = segmentation_metrics(cm, classes)
        return Scores(summary, tables={"per-class": per_class})


# (images, label maps) folder pairs, in the order they are looked for: vdeploy's own, then
# MMSegmentation's standard layouts (`img_dir/<split>` + `ann_dir/<split>`; ADE20K's
# `images/<split>` + `annotations/<split>`).
LAYOUTS = (("images", "labels"), ("img_dir", "ann_dir"), ("images", "annotations"))
DEFAULT_SPLITS = ("val", "validation", "test")


def _layout(spec: Path) -> tuple[Path, Path] | None:
    for images, labels in LAYOUTS:
        if (spec / images).is_dir() and (spec / labels).is_dir():
            return spec / images, spec / labels
    return None


def _split_dirs(images: Path, labels: Path, split: str | None, spec: Path) -> tuple[Path, Path]:
    """The split's folders when the layout has split sub-folders (mmseg's), else the folders themselves."""
    if split:
        if not (images / split).is_dir() or not (labels / split).is_dir():
            raise UserError(f"{spec}: no split {split!r} (expected {images / split} and {labels / split})")
        return images / split, labels / split
    if list_images(images):
        return images, labels
    for name in DEFAULT_SPLITS:
        if (images / name).is_dir() and (labels / name).is_dir():
            return images / name, labels / name
    splits = sorted(d.name for d in images.iterdir() if d.is_dir())
    raise UserError(f"{images}: no images directly inside; give --split (one of: {', '.join(splits) or 'none'})")


def _detect(spec: Path) -> bool:
    return spec.is_dir() and _layout(spec) is not None


def open_semantic(spec: Path, options: DatasetOptions) -> SemanticDataset:
    if options.label_transform not in LABEL_TRANSFORMS:
        raise UserError(f"unknown label transform {options.label_transform!r}; choose from {', '.join(LABEL_TRANSFORMS)}")
    layout = _layout(spec) if spec.is_dir() else None
    if layout is None:
        raise UserError(f"{spec}: a semantic segmentation dataset needs one of these folder pairs: "
                        + ", ".join(f"{i}/ + {lab}/" for i, lab in LAYOUTS))
    image_dir, label_dir = _split_dirs(*layout, options.split, spec)
    samples, labels = [], {}
    # images may sit in sub-folders (Cityscapes' cities): the key is the path below the split
    for img in sorted(p for p in image_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        key = img.relative_to(image_dir).with_suffix("").as_posix()
        lab = label_dir / f"{key}.png"
        if not lab.is_file():
            raise UserError(f"{img}: has no label map {lab}")
        if key in labels:
            raise UserError(f"{img}: two images share the name {key!r}")
        # sizes from the headers: a wrong-size label is reported before any inference runs
        if image_size(lab) != image_size(img):
            lh, lw = image_size(lab)
            ih, iw = image_size(img)
            raise UserError(f"{lab}: label map is {lw}x{lh} but its image {img.name} is {iw}x{ih}")
        samples.append(Sample(key, img))
        labels[key] = lab
    return SemanticDataset(spec, samples, labels, options)


FORMATS.register("semantic", DatasetFormat("semantic", _detect, open_semantic, ("semantic_segmentation",), detect_order=30))
