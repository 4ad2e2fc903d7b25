"""Monocular depth: DS/images/<stem>.<ext> with DS/depth/<stem>.png, or MMSegmentation's NYU layout
DS/images/{train,test}/ with DS/annotations/{train,test}/. Ground truth is a 16-bit single-channel
PNG; value * depth_scale = metres (NYU: millimetres, 1e-3), 0 = no depth. Scored with
MMSegmentation's DepthMetric (vdeploy.runtime.metrics.depth)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import UserError
from ...runtime.metrics.depth import CROPS, METRICS, NYU_CROP_MIN_HW, mean_metrics, prediction_floor, score_image
from . import IMAGE_SUFFIXES, FORMATS, DatasetFormat, DatasetOptions, Sample, Scores, image_size, list_images

DEPTH_CROPS = ("auto",) + CROPS   # auto: nyu for the NYU layout (as mmseg's NYU config), else none
DEFAULT_SPLITS = ("test", "val", "validation")  # mmseg's NYU config evaluates images/test
PNG_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # Pillow's modes of a 16-bit grey PNG ("I" before Pillow 10)
RECORD_DEPTH_SCALE = 1e-3  # a record without depth_scale, or a folder PNG: millimetres, as `vdeploy predict` writes


def read_depth_png(path: Path, scale: float, what: str = "depth map") -> np.ndarray:
    """A 16-bit single-channel PNG -> H x W float32 metres (value * scale, in float32 as mmseg)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise UserError(f"{path}: a {what} must be a 16-bit single-channel PNG, this is {im.format}")
            if im.mode not in PNG_16BIT_MODES:
                raise UserError(f"{path}: a {what} must be a 16-bit single-channel PNG, this one is "
                                f"{_describe_mode(im.mode)}")
            raw = np.asarray(im)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable PNG ({e})") from None
    depth = raw.astype(np.float32)
    depth *= np.float32(scale)
    return depth


def _describe_mode(mode: str) -> str:
    return {"L": "8-bit grey", "P": "8-bit palette", "1": "1-bit", "LA": "grey with alpha", "RGB": "RGB",
            "RGBA": "RGBA", "F": "32-bit float"}.get(mode, f"mode {mode}")


def _png_header(path: Path) -> tuple[int, int, str, Optional[str]]:
    """(height, width, mode, format) from the header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width, im.mode, im.format
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


class DepthDataset:
    format = "depth"

    def __init__(self, root: Path, layout: str, samples: list[Sample], depths: dict[str, Path],
                 options: DatasetOptions, crop: str):
        self.root = root
        self.layout = layout
        self.samples = samples
        self.depths = depths
        self.min_depth = options.min_depth
        self.max_depth = options.max_depth
        self.depth_scale = options.depth_scale
        self.crop = crop

    def describe(self) -> dict:
        return {"format": self.format, "root": str(self.root), "layout": self.layout, "images": len(self.samples),
                "min_depth": self.min_depth, "max_depth": self.max_depth, "crop": self.crop,
                "depth_scale": self.depth_scale}

    def load_depth(self, key: str, hw: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The ground truth of `key` in metres (0 = no depth), checked against the prediction's size."""
        path = self.depths[key]
        gt = read_depth_png(path, self.depth_scale, "ground-truth depth map")
        if hw is not None and gt.shape != tuple(hw):
            raise UserError(f"{path}: ground-truth depth is {gt.shape[1]}x{gt.shape[0]} but the predicted depth "
                            f"map is {hw[1]}x{hw[0]}")
        return gt

    def score(self, records: dict[str, dict], classes: list[str]) -> Scores:
        per_image: list[Optional[dict]] = []
        empty, floored, pixels = [], 0, 0
        for key, rec in records.items():
            pred = _record_depth(rec)
            gt = self.load_depth(key, pred.shape)
            s = score_image(gt, pred, self.min_depth, self.max_depth, self.crop)
            per_image.append(s.metrics)
            if s.metrics is None:
                empty.append(key)
            floored, pixels = floored + s.floored, pixels + s.pixels
        notes = []
        if empty:
            notes.append(f"{len(empty)} images have no ground-truth depth inside ({self.min_depth}, {self.max_depth}) m"
                         + (" and the nyu crop" if self.crop == "nyu" else "") + " and are not scored: "
                         + ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else ""))
        if floored:
            notes.append(f"{floored} of {pixels} scored pixels have no predicted depth (0 or less) and count as "
                         f"{prediction_floor(self.min_depth)} m")
        return Scores(mean_metrics(per_image), notes=notes)


def _record_depth(rec: dict) -> np.ndarray:
    """A depth record's map in metres: {"depth_map": PNG path (absolute once resolved), "depth_scale": s}."""
    if "depth_map" not in rec:
        got = ", ".join(k for k in rec if k != "image") or "nothing"
        raise UserError(f"the prediction of {rec.get('image')!r} is not a depth record (it has {got}; expected "
                        "depth_map): were these predictions made by a depth_estimation model?")
    scale = rec.get("depth_scale", RECORD_DEPTH_SCALE)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise UserError(f"the prediction of {rec.get('image')!r} has depth_scale {scale!r}; expected a positive number")
    return read_depth_png(Path(rec["depth_map"]), float(scale), "predicted depth map")


# (images, depth maps) folder pairs in the order they are looked for: vdeploy's own, then
# MMSegmentation's NYU layout (which ADE20K's semantic layout shares: see _detect).
LAYOUTS = (("images", "depth", "images/depth"), ("images", "annotations", "nyu"))


def _layout(spec: Path) -> Optional[tuple[Path, Path, str]]:
    for images, depth, name in LAYOUTS:
        if (spec / images).is_dir() and (spec / depth).is_dir():
            return spec / images, spec / depth, name
    return None


def _first_png(folder: Path, levels: int = 3) -> Optional[Path]:
    """A PNG in `folder` or up to `levels - 1` folders below (sorted; cheap on big folders)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    for e in entries:
        if e.is_file() and e.name.lower().endswith(".png"):
            return Path(e.path)
    if levels > 1:
        for e in entries:
            if e.is_dir():
                found = _first_png(Path(e.path), levels - 1)
                if found is not None:
                    return found
    return None


def _detect(spec: Path) -> bool:
    """images/ + depth/; or images/ + annotations/ whose PNGs are 16-bit (NYU's depth in mm), which
    ADE20K's 8-bit label maps in the same folder names are not."""
    if not spec.is_dir():
        return False
    layout = _layout(spec)
    if layout is None:
        return False
    if layout[2] != "nyu":
        return True
    png = _first_png(layout[1])
    if png is None:
        return False
    try:
        return _png_header(png)[2] in PNG_16BIT_MODES
    except UserError:
        return False


def _split_dirs(images: Path, depth: Path, split: Optional[str], spec: Path) -> tuple[Path, Path]:
    if split:
        if not (images / split).is_dir() or not (depth / split).is_dir():
            raise UserError(f"{spec}: no split {split!r} (expected {images / split} and {depth / split})")
        return images / split, depth / split
    if list_images(images):
        return images, depth
    for name in DEFAULT_SPLITS:
        if (images / name).is_dir() and (depth / name).is_dir():
            return images / name, depth / name
    splits = sorted(d.name for d in images.iterdir() if d.is_dir())
    raise UserError(f"{images}: no images directly inside; give --split (one of: {', '.join(splits) or 'none'})")


def check_options(options: DatasetOptions) -> None:
    """One clear line for each bad depth option."""
    lo, hi, scale = options.min_depth, options.max_depth, options.depth_scale
    if not math.isfinite(lo) or lo < 0:
        raise UserError(f"--min-depth must be a finite number of metres >= 0, got {lo}")
    if math.isnan(hi) or hi <= lo:
        raise UserError(f"--max-depth must be a number of metres above --min-depth ({lo}), got {hi}")
    if not math.isfinite(scale) or scale <= 0:
        raise UserError(f"--depth-scale must be a positive number of metres per ground-truth unit (0.001 = mm), "
                        f"got {scale}")
    if options.depth_crop not in DEPTH_CROPS:
        raise UserError(f"unknown depth crop {options.depth_crop!r}; choose from {', '.join(DEPTH_CROPS)}")


def open_depth(spec: Path, options: DatasetOptions) -> DepthDataset:
    check_options(options)
    layout = _layout(spec) if spec.is_dir() else None
    if layout is None:
        raise UserError(f"{spec}: a depth dataset needs one of these folder pairs: "
                        + ", ".join(f"{i}/ + {d}/" for i, d, _ in LAYOUTS))
    images_root, depth_root, layout_name = layout
    crop = options.depth_crop if options.depth_crop != "auto" else ("nyu" if layout_name == "nyu" else "none")
    image_dir, depth_dir = _split_dirs(images_root, depth_root, options.split, spec)
    samples, depths = [], {}
    # images may sit in sub-folders: the key is the path below the split, without its suffix
    for img in sorted(p for p in image_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        key = img.relative_to(image_dir).with_suffix("").as_posix()
        gt = depth_dir / f"{key}.png"
        if not gt.is_file():
            raise UserError(f"{img}: has no ground-truth depth map {gt}")
        if key in depths:
            raise UserError(f"{img}: two images share the name {key!r}")
        # from the headers: a wrong-size or 8-bit ground truth is reported before any inference runs
        gh, gw, mode, fmt = _png_header(gt)
        if fmt != "PNG" or mode not in PNG_16BIT_MODES:
            raise UserError(f"{gt}: a ground-truth depth map must be a 16-bit single-channel PNG, this one is "
                            + (str(fmt) if fmt != "PNG" else _describe_mode(mode)))
        ih, iw = image_size(img)
        if (gh, gw) != (ih, iw):
            raise UserError(f"{gt}: ground-truth depth is {gw}x{gh} but its image {img.name} is {iw}x{ih}")
        if crop == "nyu" and (gh < NYU_CROP_MIN_HW[0] or gw < NYU_CROP_MIN_HW[1]):
            raise UserError(f"{gt}: is {gw}x{gh}, smaller than the nyu crop (rows 45:471, columns 41:601 of "
                            "NYU's 640x480); give --depth-crop none")
        samples.append(Sample(key, img))
        depths[key] = gt
    return DepthDataset(spec, layout_name, samples, depths, options, crop)


# Before semantic (30): the NYU layout's folder names are ADE20K's too.
FORMATS.register("depth", DatasetFormat("depth", _detect, open_depth, ("depth_estimation",), detect_order=25))

__all__ = ["DepthDataset", "METRICS", "read_depth_png", "open_depth", "check_options"]
