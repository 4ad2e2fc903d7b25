"""Offline inference for runtimes vdeploy does not drive (vendor NPU toolchains, C++ benchmark
tools): preprocessed inputs out as raw .bin files, raw outputs back in, the bundle's own
postprocessing applied. Layout and naming: docs/bin-workflow.md.

    to_bin(bundle, image_dir, out)      out/inputs/NNNNNN/NNNNNN_<image stem>.bin (+ .<input>.bin for
                                        other inputs), info.txt, input_list.txt, preprocess.json
    from_bin(bundle, outputs_dir, out)  raw outputs in a layout (default NNNNNN/<output>.bin|.npy;
                                        `{stem}_{index}.bin` for NPU dump folders) -> the results
                                        `predict` writes (vdeploy.runtime.outputs)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..bundle import Bundle
from ..eval.datasets import IMAGE_SUFFIXES
from .io import atomic_output, atomic_write, atomic_write_json, read_image
from .outputs import ResultsWriter
from .postprocess import postprocess
from .preprocess import preprocess

PREPROCESS_JSON = "preprocess.json"
INFO_TXT = "info.txt"
INPUT_LIST = "input_list.txt"
# Where from-bin finds sample i's output k: {sample} six-digit index, {stem} the stem of the
# sample's image input file as to-bin named it, {index} the output's position, {name} its name.
DEFAULT_LAYOUT = "{sample}/{name}.bin"
LAYOUT_FIELDS = ("sample", "stem", "index", "name")
# Byte sizes of the element types an output file may hold, to say which one a size implies.
_ITEMSIZE_HINTS = {8: "int64 or float64", 4: "float32 or int32", 2: "float16", 1: "uint8 or bool"}


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
        # named after the image, unique across samples: tools that name their outputs after the
        # input file (<stem>_<k>.bin) then never collide
        stem = f"{sample_dir(index)}_{path.stem}"
        files = {}
        for k, (name, arr) in enumerate(prep.inputs.items()):
            f = f"inputs/{sample_dir(index)}/{stem}{'' if k == 0 else '.' + name}.bin"
            _save_raw(out / f, arr)
            files[name] = {"file": f, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        h, w = prep.meta["orig_hw"]
        samples.append({"index": index, "image": rel, "stem": stem, "width": w, "height": h, "inputs": files,
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


def _resolve_shape(spec_shape, n_items: int, dims_known: dict[str, int], where: Path, dtype: np.dtype) -> list[int]:
    """Fixed dims from the spec, named dims from the inputs or from outputs already read (every
    detection output shares N), and one remaining unknown dim from the file's size. A size that
    contradicts a known dim is refused with the numbers, and with the element type it implies."""
    dims = [d if isinstance(d, int) and d > 0 else dims_known.get(d) if isinstance(d, str) else None
            for d in spec_shape]
    unknown = [i for i, d in enumerate(dims) if d is None]
    known = int(np.prod([d for d in dims if d is not None])) if dims else 1
    if len(unknown) > 1:
        raise UserError(f"{where}: the shape {spec_shape} has several unknown dims; write a .shape file beside it "
                        "or save the output as .npy")
    if (unknown and (known == 0 or n_items % known)) or (not unknown and known != n_items):
        expected = f"a multiple of {known}" if unknown else str(known)
        hint = ""
        nbytes = n_items * dtype.itemsize
        if not unknown and known and nbytes % known == 0 and nbytes // known in _ITEMSIZE_HINTS:
            hint = f"; its {nbytes} bytes would be {known} values of {_ITEMSIZE_HINTS[nbytes // known]}: give --dtype"
        named = ", ".join(f"{d}={dims_known[d]}" for d in spec_shape if isinstance(d, str) and d in dims_known)
        raise UserError(f"{where}: {n_items} {dtype.name} values, but the shape {spec_shape}"
                        + (f" with {named}" if named else "") + f" holds {expected}{hint}")
    if unknown:
        dims[unknown[0]] = n_items // known
    return [int(d) for d in dims]


def read_output(path: Path, spec: dict, dims_known: dict[str, int], dtypes: dict[str, str]) -> np.ndarray:
    """One output file (raw .bin, or .npy which carries its own dtype and shape). Named dims it
    resolves are added to `dims_known` for the outputs read after it."""
    name = spec["name"]
    npy = path.with_suffix(".npy")
    if path.suffix == ".bin" and not path.is_file() and npy.is_file():
        path = npy
    if path.suffix == ".npy" and path.is_file():
        data = np.load(path, allow_pickle=False)
        _learn_dims(spec.get("shape", []), data.shape, dims_known)
        return data
    if not path.is_file():
        raise UserError(f"{path}: missing (output {name!r}; see --layout)")
    try:
        dtype = np.dtype(dtypes.get(name, spec.get("dtype", "float32"))).newbyteorder("<")
    except TypeError:
        raise UserError(f"{path}: unknown element type {dtypes.get(name, spec.get('dtype'))!r}") from None
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise UserError(f"{path}: {size} bytes is not a whole number of {dtype.name} values")
    data = np.fromfile(path, dtype=dtype)
    shape = _shape_from_sidecar(path) or _resolve_shape(spec.get("shape", [data.size]), data.size, dims_known, path, dtype)
    if int(np.prod(shape)) != data.size:
        raise UserError(f"{path}: {data.size} values do not fit the shape {shape}")
    _learn_dims(spec.get("shape", []), shape, dims_known)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def _learn_dims(spec_shape, shape, dims_known: dict[str, int]) -> None:
    for d, n in zip(spec_shape, shape):
        if isinstance(d, str):
            dims_known.setdefault(d, int(n))


def output_path(outputs: Path, layout: str, sample: dict, index: int, name: str) -> Path:
    """Sample `sample`'s output number `index` (named `name`) under `outputs`, per `layout`."""
    fields = {"sample": sample_dir(sample["index"]), "stem": sample.get("stem", sample_dir(sample["index"])),
              "index": index, "name": name}
    try:
        rel = layout.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"--layout {layout!r}: use only {{{'}, {'.join(LAYOUT_FIELDS)}}} ({e})") from None
    if ".." in Path(rel).parts or Path(rel).is_absolute():
        raise UserError(f"--layout {layout!r}: must name files inside --outputs")
    return outputs / rel


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
             dtypes: Optional[dict[str, str]] = None, layout: str = DEFAULT_LAYOUT,
             advance: Callable[[int], None] = lambda n: None) -> ResultsWriter:
    """Read every sample's raw outputs, postprocess them, and write the results `predict` writes to `out`."""
    meta = bundle.meta
    pj = find_preprocess_json(outputs, bins)
    info = json.loads(pj.read_text())
    if info.get("bundle_digest") and meta.get("digest") and info["bundle_digest"] != meta["digest"]:
        raise UserError(f"{pj}: was written for another bundle (digest {info['bundle_digest'][:12]}...)")
    for d in dtypes or {}:
        if d not in bundle.output_names():
            raise UserError(f"--dtype {d}: the bundle has no such output (it has: {', '.join(bundle.output_names())})")
    writer = ResultsWriter(out, meta["task"], meta["classes"], names=[s["image"] for s in info["samples"]])
    with writer:
        for sample in info["samples"]:
            dims = _input_dims(meta["inputs"], sample)
            raw = {o["name"]: read_output(output_path(outputs, layout, sample, k, o["name"]), o, dims, dtypes or {})
                   for k, o in enumerate(meta["outputs"])}
            pm = {k: tuple(v) if isinstance(v, list) else v for k, v in sample["meta"].items()}
            writer.add(sample["image"], postprocess(raw, pm, meta))
            advance(1)
    return writer


__all__ = ["to_bin", "from_bin", "read_output", "PREPROCESS_JSON"]
