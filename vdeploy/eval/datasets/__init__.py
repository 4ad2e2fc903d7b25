"""Evaluation datasets, one module per on-disk format, all in one strict registry.

A dataset lists its images as `Sample`s (a stable key + the file) and scores a backend's
stored prediction records (see `vdeploy.eval.records`). Which format a SPEC is in is
decided from what is on disk (`detect_format`), or forced with `--format`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import UserError
from ...registry import Registry

from ...runtime.io import IMAGE_SUFFIXES  # noqa: E402,F401  (the reader decides the image types, once)


@dataclass(frozen=True)
class Sample:
    key: str    # stable id of the image inside the dataset (a relative path), the resume key
    path: Path  # where the image file is


@dataclass
class Scores:
    metrics: dict[str, Optional[float]]
    # named tables of row -> column -> value, e.g. {"per-class": {"road": {"IoU": .9, "Acc": .95}}}
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetOptions:
    """Every format's options, read once from the command line."""
    class_map: Optional[Path] = None      # COCO / ImageFolder: model class -> dataset category
    images_dir: Optional[Path] = None     # COCO: where the json's file_name entries live
    ignore_index: int = 255               # semantic: label value that is not scored
    label_transform: str = "none"         # semantic: none | cityscapes | reduce_zero_label
    split: Optional[str] = None           # semantic, depth: the split sub-folder of an mmseg layout
    min_depth: float = 1e-3               # depth: ground truth scored where min_depth < gt < max_depth (metres),
    max_depth: float = 10.0               #   mmseg's NYU config
    depth_crop: str = "auto"              # depth: none | nyu | auto (nyu for the NYU layout, else none)
    depth_scale: float = 1e-3             # depth: metres per unit of the ground-truth PNGs (1e-3: millimetres)


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    detect: Callable[[Path], bool]                       # does this folder/file look like it?
    open: Callable[[Path, DatasetOptions], "object"]     # -> a dataset object
    tasks: tuple[str, ...]                               # model tasks it can score
    # Formats are tried in this order, lowest first: a semantic folder (images/ + labels/) also
    # has class-like sub-folders, so ImageFolder, which takes any folder of folders, comes last.
    detect_order: int = 50


FORMATS: Registry[DatasetFormat] = Registry("dataset format")
_MODULES = ("coco", "coco_panoptic", "market1501", "semantic", "depth", "imagefolder")  # each registers one format


def _load_all() -> None:
    for m in _MODULES:
        importlib.import_module(f"{__name__}.{m}")


def format_names() -> list[str]:
    _load_all()
    return list(FORMATS)


def detect_format(spec: Path) -> str:
    _load_all()
    for _, fmt in sorted(FORMATS.items(), key=lambda item: (item[1].detect_order, item[0])):
        if fmt.detect(spec):
            return fmt.name
    if not spec.exists():
        raise UserError(f"{spec}: no such dataset file or folder")
    raise UserError(f"{spec}: cannot tell the dataset format; expected a COCO .json, a folder with images/ and "
                    "labels/ (semantic), images/ and depth/ (depth), query/ and bounding_box_test/ (Market-1501 "
                    "re-ID) or class sub-folders (ImageFolder); or give --format")


def open_dataset(spec: str | Path, fmt: Optional[str] = None, options: DatasetOptions = DatasetOptions()):
    spec = Path(spec)
    _load_all()
    name = fmt or detect_format(spec)
    if not spec.exists():
        raise UserError(f"{spec}: no such dataset file or folder")
    ds = FORMATS.get(name).open(spec, options)
    if not ds.samples:
        raise UserError(f"{spec}: the dataset has no images")
    return ds


def check_task(fmt: str, task: str) -> None:
    _load_all()
    f = FORMATS.get(fmt)
    if task not in f.tasks:
        raise UserError(f"a {task} model cannot be scored on a {fmt} dataset (it scores: {', '.join(f.tasks)})")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


def normalize_name(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def load_class_map(path: Path) -> dict[str, Any]:
    """--class-map FILE: a JSON object {model class (name or 0-based index): dataset category
    (id or name)}."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such class map file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: a class map is a JSON object {{model class: dataset category}}")
    return data


def map_classes(model_classes: list[str], categories: dict[int, str], class_map: Optional[Path],
                what: str) -> tuple[dict[int, int], list[str]]:
    """Model class index -> dataset category id, and notes about what could not be mapped.

    Explicit map first; otherwise by (normalised) name; when no name matches and the counts are
    equal, by order (the model's i-th class is the i-th category in id order, detectron2's and
    torchvision ImageFolder's convention)."""
    notes: list[str] = []
    by_name = {normalize_name(n): cid for cid, n in categories.items()}
    if class_map is not None:
        result = {}
        for k, v in load_class_map(class_map).items():
            idx = _model_index(k, model_classes, class_map)
            if isinstance(v, str) and not v.lstrip("-").isdigit():
                if normalize_name(v) not in by_name:
                    raise UserError(f"{class_map}: {v!r} is not a category of {what}")
                result[idx] = by_name[normalize_name(v)]
            else:
                if int(v) not in categories:
                    raise UserError(f"{class_map}: category id {v} is not in {what}")
                result[idx] = int(v)
        return result, notes
    result = {i: by_name[normalize_name(n)] for i, n in enumerate(model_classes) if normalize_name(n) in by_name}
    if result:
        missing = [n for i, n in enumerate(model_classes) if i not in result]
        if missing:
            notes.append(f"{len(missing)} model classes have no category in the dataset and are not scored: "
                         + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        return result, notes
    if len(model_classes) == len(categories):
        notes.append("no class name matches a dataset category; mapped by order (model class i -> i-th category id)")
        return {i: cid for i, cid in enumerate(sorted(categories))}, notes
    raise UserError(f"none of the model's {len(model_classes)} classes ({', '.join(model_classes[:5])}, ...) match a "
                    f"category of {what} ({', '.join(list(categories.values())[:5])}, ...); give --class-map FILE")


def _model_index(key: str, model_classes: list[str], where: Path) -> int:
    if str(key).isdigit() and int(key) < len(model_classes):
        return int(key)
    names = [normalize_name(n) for n in model_classes]
    if normalize_name(key) in names:
        return names.index(normalize_name(key))
    raise UserError(f"{where}: {key!r} is not a class of the model ({', '.join(model_classes[:8])}, ...)")
