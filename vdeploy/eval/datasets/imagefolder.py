"""Classification in the torchvision ImageFolder layout: DS/<class name>/<image>. Folder names
map onto the model's classes by name, through --class-map, or (same count, no name in common)
by sorted order, torchvision's own convention."""
from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from ...runtime.metrics.classification import topk_accuracy
from . import FORMATS, DatasetFormat, DatasetOptions, Sample, Scores, list_images, map_classes


class ImageFolderDataset:
    format = "imagefolder"

    def __init__(self, root: Path, samples: list[Sample], folders: list[str], class_map):
        self.root = root
        self.samples = samples
        self.folders = folders
        self.class_map = class_map

    def describe(self) -> dict:
        return {"format": self.format, "root": str(self.root), "images": len(self.samples), "classes": len(self.folders)}

    def score(self, records: dict[str, dict], classes: list[str]) -> Scores:
        folder_ids = dict(enumerate(self.folders))
        to_folder, notes = map_classes(classes, folder_ids, self.class_map, str(self.root))
        ranked, labels = [], []
        for key, rec in records.items():
            ranked.append([to_folder.get(t["class_id"], -1) for t in rec["topk"]])
            labels.append(self.folders.index(key.split("/", 1)[0]))
        return Scores(topk_accuracy(ranked, labels), notes=notes)


def _class_folders(spec: Path) -> list[Path]:
    return sorted(d for d in spec.iterdir() if d.is_dir() and not d.name.startswith("."))


def _detect(spec: Path) -> bool:
    if not spec.is_dir():
        return False
    folders = _class_folders(spec)
    return bool(folders) and all(list_images(d) for d in folders)


def open_imagefolder(spec: Path, options: DatasetOptions) -> ImageFolderDataset:
    if not spec.is_dir():
        raise UserError(f"{spec}: an ImageFolder dataset is a folder of class sub-folders")
    folders = _class_folders(spec)
    samples = [Sample(f"{d.name}/{img.name}", img) for d in folders for img in list_images(d)]
    return ImageFolderDataset(spec, samples, [d.name for d in folders], options.class_map)


FORMATS.register("imagefolder", DatasetFormat("imagefolder", _detect, open_imagefolder, ("classification",), detect_order=90))
