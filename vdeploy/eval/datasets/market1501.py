"""Re-ID in the Market-1501 layout: DS/query/ and DS/bounding_box_test/ (the gallery), person
id and camera from names like 0001_c1s1_001051_00.jpg.

As fast-reid's loader: id -1 (junk) is skipped everywhere; id 0000 (distractors) stays in the
gallery as a negative that never matches, and is skipped as a query (it has no true match)."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...runtime.metrics.reid import cosine_distance, rank_metrics
from . import FORMATS, DatasetFormat, DatasetOptions, Sample, Scores, list_images

NAME = re.compile(r"^(-?\d+)_c(\d+)")
QUERY, GALLERY = "query", "bounding_box_test"


def parse_name(path: Path) -> tuple[int, int]:
    m = NAME.match(path.name)
    if not m:
        raise UserError(f"{path}: not a Market-1501 file name (expected PID_cCAM..., e.g. 0001_c1s1_001051_00.jpg)")
    return int(m.group(1)), int(m.group(2))


def decode_features(rec: dict) -> np.ndarray:
    f = rec["features"]
    if isinstance(f, str):
        return np.frombuffer(base64.b64decode(f), dtype="<f4")
    return np.asarray(f, dtype=np.float32)


class Market1501Dataset:
    format = "market1501"

    def __init__(self, root: Path, samples: list[Sample], ids: dict[str, tuple[int, int]]):
        self.root = root
        self.samples = samples
        self.ids = ids  # key -> (person id, camera)

    def describe(self) -> dict:
        nq = sum(1 for s in self.samples if s.key.startswith(QUERY + "/"))
        return {"format": self.format, "root": str(self.root), "query": nq, "gallery": len(self.samples) - nq}

    def score(self, records: dict[str, dict], classes: list[str]) -> Scores:
        q = [k for k in records if k.startswith(QUERY + "/")]
        g = [k for k in records if k.startswith(GALLERY + "/")]
        if not q or not g:
            raise UserError(f"{self.root}: re-ID scoring needs query and gallery images (got {len(q)} query, "
                            f"{len(g)} gallery{'; --limit keeps the first N of query then gallery' if records else ''})")
        qf = np.stack([decode_features(records[k]) for k in q])
        gf = np.stack([decode_features(records[k]) for k in g])
        dist = cosine_distance(qf.astype(np.float64), gf.astype(np.float64))
        metrics = rank_metrics(dist, [self.ids[k][0] for k in q], [self.ids[k][0] for k in g],
                               [self.ids[k][1] for k in q], [self.ids[k][1] for k in g])
        n_valid = metrics.pop("queries")
        notes = [f"{n_valid} of {len(q)} queries have a true match in the gallery"] if n_valid < len(q) else []
        return Scores(metrics, notes=notes)


def _detect(spec: Path) -> bool:
    return spec.is_dir() and (spec / QUERY).is_dir() and (spec / GALLERY).is_dir()


def open_market1501(spec: Path, options: DatasetOptions) -> Market1501Dataset:
    if not _detect(spec):
        raise UserError(f"{spec}: a Market-1501 dataset needs query/ and bounding_box_test/ folders")
    samples, ids = [], {}
    for part in (QUERY, GALLERY):
        for img in list_images(spec / part):
            pid, cam = parse_name(img)
            if pid == -1 or (part == QUERY and pid == 0):
                continue
            key = f"{part}/{img.name}"
            samples.append(Sample(key, img))
            ids[key] = (pid, cam)
    return Market1501Dataset(spec, samples, ids)


FORMATS.register("market1501", DatasetFormat("market1501", _detect, open_market1501, ("embedding",), detect_order=20))
