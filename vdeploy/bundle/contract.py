"""deploy.json: reading, validating and writing the bundle contract (docs/bundle.md)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..fileio import atomic_write

SCHEMA_VERSION = 1
DEPLOY_JSON = "deploy.json"
REQUIRED_KEYS = ("schema_version", "task", "classes", "inputs", "preprocess", "postprocess", "outputs", "files", "digest")
# Format name -> the file that holds the model (OpenVINO's weights file is listed too).
FORMAT_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.ts"}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Bundle:
    path: Path
    meta: dict[str, Any]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def formats(self) -> list[str]:
        return sorted({f["format"] for f in self.meta["files"].values() if f.get("role", "model") == "model"})

    @property
    def name(self) -> str:
        return self.path.name

    def model_file(self, fmt: str, precision: str = "fp32") -> Path:
        """The model file of a format that runs at `precision` (a file lists the precisions it
        serves: an fp32 OpenVINO IR also runs as bf16; an int8 model is a file of its own)."""
        for fname, info in self.meta["files"].items():
            if info["format"] == fmt and info.get("role", "model") == "model" and precision in file_precisions(info):
                return self.path / fname
        raise BundleError(f"{self.path}: has no {fmt} model for {precision} (has: {', '.join(f'{f} {p}' for f, p in self.runnable()) or 'none'})")

    def runnable(self) -> list[tuple[str, str]]:
        """(format, precision) of every model file."""
        return [(info["format"], p) for info in self.meta["files"].values() if info.get("role", "model") == "model"
                for p in file_precisions(info)]

    def input_names(self) -> list[str]:
        return [i["name"] for i in self.meta["inputs"]]

    def output_names(self) -> list[str]:
        return [o["name"] for o in self.meta["outputs"]]


def file_precisions(info: dict) -> list[str]:
    return list(info.get("precisions") or ["fp32"])


def load_bundle(path: str | os.PathLike, *, check_hashes: bool = True) -> Bundle:
    """Open a bundle folder; refuse one that is partial, edited, or of another schema."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    dj = root / DEPLOY_JSON
    try:
        meta = json.loads(dj.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: no {DEPLOY_JSON}; not a bundle (or an export that did not finish)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{dj}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{dj}: expected a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{dj}: schema_version {version!r} is not supported (this vdeploy reads {SCHEMA_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{dj}: missing keys: {', '.join(missing)}")
    if meta["digest"] != _digest(meta):
        raise BundleError(f"{dj}: was edited after export (its digest does not match its content); re-export or re-verify")
    if check_hashes:
        for fname, info in meta["files"].items():
            fp = root / fname
            if not fp.is_file():
                raise BundleError(f"{root}: {fname} is listed in {DEPLOY_JSON} but missing")
            if sha256_file(fp) != info["sha256"]:
                raise BundleError(f"{fp}: SHA-256 differs from {DEPLOY_JSON}: the file was truncated or changed")
    return Bundle(root, meta)


def write_deploy_json(root: str | os.PathLike, meta: dict[str, Any]) -> Bundle:
    """Hash every listed file, seal the metadata with its digest, write it atomically."""
    root = Path(root)
    meta = dict(meta, schema_version=SCHEMA_VERSION)
    for fname, info in meta["files"].items():
        info["sha256"] = sha256_file(root / fname)
    meta["digest"] = _digest(meta)
    atomic_write(root / DEPLOY_JSON, json.dumps(meta, indent=1) + "\n")
    return Bundle(root, meta)


def update_deploy_json(bundle: Bundle, **changes: Any) -> Bundle:
    """Rewrite deploy.json with some top-level keys changed (e.g. verification results)."""
    meta = dict(bundle.meta, **changes)
    return write_deploy_json(bundle.path, meta)
