"""Offline inference for runtimes vdeploy does not drive (vendor NPU toolchains, C++ benchmark
tools): preprocessed inputs out as raw .bin files, raw outputs back in, the bundle's own
postprocessing applied. Layout and naming: docs/bin-workflow.md.

    to_bin(bundle, image_dir, out)          out/inputs/NNNNNN/<input>.bin, info.txt, input_list.txt, preprocess.json
    from_bin(bundle, outputs_dir, out_json) outputs_dir/NNNNNN/<output>.bin|.npy -> prediction records
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..bundle import Bundle
from ..eval.datasets import IMAGE_SUFFIXES
from .tasks import get_task
from .io import atomic_output, atomic_write, atomic_write_json, read_image
from .postprocess import postprocess
from .preprocess import preprocess

PREPROCESS_JSON = "preprocess.json"
INFO_TXT = "info.txt"
INPUT_LIST = "input_list.txt"


def sample_dir(index: int) -> str:
    return f"{index:06d}"


def list_image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no images in this folder")
    return files


def _save_raw(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as f:
        f.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def to_bin(bundle: Bundle, image_dir: Path, out: Path, advance: Callable[[int], None] = lambda n: None) -> int:
    """Preprocess every image under `image_dir` exactly as the runtime does; returns the count."""
    meta = bundle.meta
    images = list_image_files(image_dir)
    samples, info_lines, list_lines = [], [], []
    for index, path in enumerate(images):
        prep = preprocess(read_image(path), meta, meta.get("input_size"))
        rel = path.relative_to(image_dir).as_posix()
        files = {}
        for name, arr in prep.inputs.items():
            f = f"inputs/{sample_dir(index)}/{name}.bin"
            _save_raw(out / f, arr)
            files[name] = {"file": f, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        h, w = prep.meta["orig_hw"]
        samples.append({"index": index, "image": rel, "width": w, "height": h, "inputs": files,
                        "meta": _jsonable(prep.meta)})
        info_lines.append(f"{index} {rel} {w} {h}")
        list_lines.append(" ".join(v["file"] for v in files.values()))
        advance(1)
    atomic_write(out / INFO_TXT, "\n".join(info_lines) + "\n")
    atomic_write(out / INPUT_LIST, "\n".join(list_lines) + "\n")
    atomic_write_json(out / PREPROCESS_JSON, {
        "bundle_digest": meta.get("digest"), "task": meta["task"], "input_size": meta.get("input_size"),
        "inputs": meta["inputs"], "outputs": meta["outputs"], "preprocess": meta["preprocess"],
        "byte_order": "little", "layout": "C-order, each input's own layout (see inputs[].layout)",
        "samples": samples})
    return len(samples)


def _jsonable(meta: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in meta.items()}


def find_preprocess_json(outputs: Path, bins: Optional[Path]) -> Path:
    for d in ([bins] if bins else [outputs, outputs.parent]):
        if (d / PREPROCESS_JSON).is_file():
            return d / PREPROCESS_JSON
    raise UserError(f"no {PREPROCESS_JSON} in {bins or outputs} (or its parent); give --bins, the folder to-bin wrote")


def _shape_from_sidecar(path: Path) -> Optional[list[int]]:
    side = path.with_suffix(".shape")
    if not side.is_file():
        return None
    try:
        return [int(v) for v in side.read_text().replace(",", " ").split()]
    except ValueError:
        raise UserError(f"{side}: expected whole numbers separated by spaces") from None


def _resolve_shape(spec_shape, n_items: int, input_dims: dict[str, int], where: Path) -> list[int]:
    """Fixed dims from the spec, named dims shared with an input from that input's shape, and
    one remaining unknown dim from the file's size."""
    dims = [d if isinstance(d, int) and d > 0 else input_dims.get(d) if isinstance(d, str) else None
            for d in spec_shape]
    unknown = [i for i, d in enumerate(dims) if d is None]
    known = int(np.prod([d for d in dims if d is not None])) if dims else 1
    if len(unknown) > 1:
        raise UserError(f"{where}: the shape {spec_shape} has several unknown dims; write a .shape file beside it "
                        "or save the output as .npy")
    if unknown:
        if known == 0 or n_items % known:
            raise UserError(f"{where}: {n_items} values do not fit the shape {spec_shape}")
        dims[unknown[0]] = n_items // known
    elif known != n_items:
        raise UserError(f"{where}: {n_items} values, but the shape {spec_shape} holds {known}")
    return [int(d) for d in dims]


def read_output(folder: Path, spec: dict, input_dims: dict[str, int], dtypes: dict[str, str]) -> np.ndarray:
    name = spec["name"]
    npy, raw = folder / f"{name}.npy", folder / f"{name}.bin"
    if npy.is_file():
        return np.load(npy, allow_pickle=False)
    if not raw.is_file():
        raise UserError(f"{folder}: no {name}.bin or {name}.npy (one file per output, named after the output)")
    try:
        dtype = np.dtype(dtypes.get(name, spec.get("dtype", "float32"))).newbyteorder("<")
    except TypeError:
        raise UserError(f"{raw}: unknown element type {dtypes.get(name, spec.get('dtype'))!r}") from None
    size = raw.stat().st_size
    if size % dtype.itemsize:
        raise UserError(f"{raw}: {size} bytes is not a whole number of {dtype.name} values")
    data = np.fromfile(raw, dtype=dtype)
    shape = _shape_from_sidecar(raw) or _resolve_shape(spec.get("shape", [data.size]), data.size, input_dims, raw)
    if int(np.prod(shape)) != data.size:
        raise UserError(f"{raw}: {data.size} values do not fit the shape {shape}")
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def _input_dims(bundle_inputs: Sequence[dict], sample: dict) -> dict[str, int]:
    """Named dims of the inputs ("height", "width", "batch") -> their size for this sample."""
    dims = {}
    for spec in bundle_inputs:
        got = sample["inputs"].get(spec["name"], {}).get("shape", [])
        for d, n in zip(spec.get("shape", []), got):
            if isinstance(d, str):
                dims[d] = int(n)
    return dims


def from_bin(bundle: Bundle, outputs: Path, out: Path, bins: Optional[Path] = None,
             dtypes: Optional[dict[str, str]] = None, advance: Callable[[int], None] = lambda n: None) -> int:
    """Read every sample's raw outputs, postprocess them, write the records to `out` (JSON)."""
    meta = bundle.meta
    pj = find_preprocess_json(outputs, bins)
    info = json.loads(pj.read_text())
    if info.get("bundle_digest") and meta.get("digest") and info["bundle_digest"] != meta["digest"]:
        raise UserError(f"{pj}: was written for another bundle (digest {info['bundle_digest'][:12]}...)")
    side_dir = out.parent
    records = []
    for sample in info["samples"]:
        folder = outputs / sample_dir(sample["index"])
        if not folder.is_dir():
            raise UserError(f"{folder}: missing; expected the outputs of image {sample['image']} there")
        dims = _input_dims(meta["inputs"], sample)
        raw = {o["name"]: read_output(folder, o, dims, dtypes or {}) for o in meta["outputs"]}
        pm = dict(sample["meta"])
        pm = {k: tuple(v) if isinstance(v, list) else v for k, v in pm.items()}
        pred = postprocess(raw, pm, meta)
        records.append(get_task(pred.task).record(pred, sample["image"], meta["classes"], side_dir))
        advance(1)
    atomic_write_json(out, {"task": meta["task"], "classes": meta["classes"], "bundle_digest": meta.get("digest"),
                            "predictions": records})
    return len(records)


__all__ = ["to_bin", "from_bin", "read_output", "PREPROCESS_JSON"]
