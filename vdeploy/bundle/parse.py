"""deploy.json read once, field by field, into the typed Contract of schema.py; every error is
one line naming the field (`deploy.json: preprocess.normalize.std[1] must be > 0, got 0`)."""
from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any, Callable, Sequence, Union

from ..errors import BundleError
from .schema import (COLORS, Contract, DTYPES, FILE_ROLES, FORMAT_FILES, FileEntry, INTERPOLATIONS, Keypoints, LAYOUTS,
                     LETTERBOX, MAX_CAP, MAX_CLASSES, MAX_DETECTIONS, MAX_DIM, MAX_DIVISIBILITY,
                     DEPTH_UNITS, MAX_DEPTH, MAX_PIXEL, MAX_SIDE, MAX_TENSORS, NORMALIZE_WHERE, Normalize, PASTE, PRECISIONS,
                     Pad, Postprocess, Preprocess, Provenance, REQUIRED_OUTPUTS, RESERVED_FILES,
                     RESIZE_TYPES, Resize, SCHEMA_VERSION, TASKS, TASK_POSTPROCESS, TensorSpec,
                     Verification, check_sealed_header)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")


def _fail(where: str, path: str, what: str) -> BundleError:
    return BundleError(f"{where}: {path} {what}")


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Walks one JSON object, checking types and ranges, naming the field in every error."""

    def __init__(self, where: str):
        self.where = where

    def err(self, path: str, what: str) -> BundleError:
        return _fail(self.where, path, what)

    def obj(self, v: Any, path: str) -> dict:
        if not isinstance(v, dict):
            raise self.err(path, f"must be an object, got {_show(v)}")
        return v

    def lst(self, v: Any, path: str, *, max_len: int = MAX_DIM) -> list:
        if not isinstance(v, list):
            raise self.err(path, f"must be a list, got {_show(v)}")
        if len(v) > max_len:
            raise self.err(path, f"has {len(v)} entries, more than {max_len}")
        return v

    def string(self, v: Any, path: str, *, choices: Sequence[str] = (), nonempty: bool = False,
               max_len: int = 4096) -> str:
        if not isinstance(v, str):
            raise self.err(path, f"must be a string, got {_show(v)}")
        if choices and v not in choices:
            raise self.err(path, f"must be one of {', '.join(choices)}; got {_show(v)}")
        if nonempty and not v:
            raise self.err(path, "must not be empty")
        if len(v) > max_len:
            raise self.err(path, f"is longer than {max_len} characters")
        return v

    def boolean(self, v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            raise self.err(path, f"must be true or false, got {_show(v)}")
        return v

    def integer(self, v: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(path, f"must be an integer, got {_show(v)}")
        if not lo <= v <= hi:
            raise self.err(path, f"must be in [{lo}, {hi}], got {v}")
        return v

    def number(self, v: Any, path: str, *, lo: float = -math.inf, hi: float = math.inf,
               lo_open: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(path, f"must be a number, got {_show(v)}")
        if not math.isfinite(v):
            raise self.err(path, f"must be finite, got {v}")
        if lo_open and not v > lo:
            raise self.err(path, f"must be > {lo:g}, got {v:g}")
        if not lo_open and v < lo or v > hi:
            raise self.err(path, f"must be in [{lo:g}, {hi:g}], got {v:g}")
        return float(v)

    def numbers(self, v: Any, path: str, n: int, **kw) -> tuple[float, ...]:
        values = self.lst(v, path)
        if len(values) != n:
            raise self.err(path, f"must hold {n} numbers (one per channel), got {len(values)}")
        return tuple(self.number(x, f"{path}[{i}]", **kw) for i, x in enumerate(values))

    def optional(self, d: dict, key: str, path: str, read: Callable[[Any, str], Any], default=None, *,
                 nullable: bool = False):
        """A key that may be absent (then `default`); an explicit null only where `nullable`: the
        runtime reads `d.get(key, default)`, which a null would bypass."""
        if key not in d or (nullable and d[key] is None):
            return default
        return read(d[key], f"{path}.{key}" if path else key)


# --------------------------------------------------------------------------- reading




def parse_contract(meta: Any, *, where: str = "deploy.json", sealed: bool = True) -> Contract:
    """Validate a deploy.json object and return it typed. `sealed`: a bundle as written (schema
    version, digest and file hashes present); unsealed is the metadata an export is building."""
    r = _Reader(where)
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: expected a JSON object, got {_show(meta)}")
    if sealed:
        check_sealed_header(meta, where)
    task = r.string(meta.get("task"), "task", choices=TASKS)
    classes = _names(r, meta.get("classes"), "classes")
    stuff = _names(r, meta["stuff_classes"], "stuff_classes") if meta.get("stuff_classes") is not None else ()
    inputs = _tensors(r, meta.get("inputs"), "inputs")
    outputs = _tensors(r, meta.get("outputs"), "outputs")
    _check_image_input(r, inputs[0])
    input_size = None
    if meta.get("input_size") is not None:
        size = r.lst(meta["input_size"], "input_size")
        if len(size) != 2:
            raise r.err("input_size", f"must be [height, width], got {len(size)} values")
        input_size = tuple(r.integer(v, f"input_size[{i}]", 1, MAX_SIDE) for i, v in enumerate(size))
        fixed = inputs[0].shape[2:] if inputs[0].shape and inputs[0].layout != "NHWC" else ()
        if len(fixed) == 2 and all(isinstance(d, int) for d in fixed) and tuple(fixed) != input_size:
            raise r.err("input_size", f"{list(input_size)} differs from inputs[0].shape {list(inputs[0].shape)}")
    batchable = r.boolean(meta.get("batchable", False), "batchable")
    preprocess = _preprocess(r, meta.get("preprocess"), input_size)
    postprocess = _postprocess(r, meta.get("postprocess"), task)
    names = {o.name for o in outputs}
    for needed in REQUIRED_OUTPUTS.get(postprocess.type, ()):
        if needed not in names:
            raise r.err("outputs", f"has no {needed!r} output, which postprocess.type {postprocess.type} reads")
    keypoints = _keypoints(r, meta["keypoints"]) if meta.get("keypoints") is not None else None
    files = _files(r, meta.get("files", {}), sealed)
    provenance = _provenance(r, meta.get("provenance", {}))
    verification = _verification(r, meta["verification"]) if meta.get("verification") is not None else None
    digest = None
    if sealed or meta.get("digest") is not None:
        digest = r.string(meta.get("digest"), "digest")
        if not _HEX64.fullmatch(digest):
            raise r.err("digest", "must be 64 lowercase hex digits (a SHA-256)")
    return Contract(schema_version=SCHEMA_VERSION, task=task, classes=classes, inputs=inputs, outputs=outputs,
                    preprocess=preprocess, postprocess=postprocess, input_size=input_size, batchable=batchable,
                    files=files, provenance=provenance, verification=verification, digest=digest,
                    stuff_classes=stuff, keypoints=keypoints)


def _names(r: _Reader, v: Any, path: str) -> tuple[str, ...]:
    items = r.lst(v, path, max_len=MAX_CLASSES)
    return tuple(r.string(c, f"{path}[{i}]", max_len=256) for i, c in enumerate(items))


def _tensors(r: _Reader, v: Any, path: str) -> tuple[TensorSpec, ...]:
    items = r.lst(v, path, max_len=MAX_TENSORS)
    if not items:
        raise r.err(path, "must list at least one tensor")
    out, seen = [], set()
    for i, t in enumerate(items):
        p = f"{path}[{i}]"
        t = r.obj(t, p)
        name = r.string(t.get("name"), f"{p}.name", nonempty=True, max_len=128)
        if not _NAME.fullmatch(name):
            raise r.err(f"{p}.name", f"must be letters, digits and _.:/- only, got {_show(name)}")
        if name in seen:
            raise r.err(f"{p}.name", f"{name!r} is listed twice")
        seen.add(name)
        shape = None
        if t.get("shape") is not None:
            dims = r.lst(t["shape"], f"{p}.shape", max_len=8)
            shape = tuple(_dim(r, d, f"{p}.shape[{k}]") for k, d in enumerate(dims))
        scale = r.optional(t, "scale", p, lambda x, q: r.number(x, q, lo=0.0, hi=MAX_PIXEL, lo_open=True))
        out.append(TensorSpec(
            name=name, dtype=r.optional(t, "dtype", p, lambda x, q: r.string(x, q, choices=DTYPES)), shape=shape,
            layout=r.optional(t, "layout", p, lambda x, q: r.string(x, q, choices=LAYOUTS)),
            color=r.optional(t, "color", p, lambda x, q: r.string(x, q, choices=COLORS)),
            meaning=r.optional(t, "meaning", p, r.string, default=""), scale=scale))
    return tuple(out)


def _dim(r: _Reader, d: Any, path: str) -> Union[int, str]:
    if isinstance(d, str):
        return r.string(d, path, nonempty=True, max_len=64)
    return r.integer(d, path, 1, MAX_DIM)


def _check_image_input(r: _Reader, t: TensorSpec) -> None:
    """The first input is the image the host builds: 4-D, three channels, floating point."""
    if t.shape is None:
        return
    if len(t.shape) != 4:
        raise r.err("inputs[0].shape", f"must be 4-D (the image batch), got {len(t.shape)} dimensions")
    channels = t.shape[3] if t.layout == "NHWC" else t.shape[1]
    if isinstance(channels, int) and channels != 3:
        raise r.err("inputs[0].shape", f"must have 3 colour channels, got {channels}")
    if t.dtype is not None and not t.dtype.startswith(("float", "bfloat")):
        raise r.err("inputs[0].dtype", f"must be a floating-point type for the image, got {t.dtype}")


def _preprocess(r: _Reader, v: Any, input_size) -> Preprocess:
    pre = r.obj(v, "preprocess")
    rs = r.obj(pre.get("resize", {"type": "none"}), "preprocess.resize")
    p = "preprocess.resize"
    kind = r.string(rs.get("type", "none"), f"{p}.type", choices=RESIZE_TYPES)
    interp = r.optional(rs, "interp", p, lambda x, q: r.string(x, q, choices=INTERPOLATIONS), default="cv2_linear")
    letterbox = r.optional(rs, "letterbox", p, lambda x, q: r.string(x, q, choices=LETTERBOX), default="shrink")
    if letterbox == "fill" and input_size is None:
        raise r.err(f"{p}.letterbox", "fill needs a fixed input_size (the canvas to fill)")

    def side(key: str, hi: int = MAX_SIDE) -> int:
        if key not in rs:
            raise r.err(f"{p}.{key}", f"is required for resize type {kind}")
        return r.integer(rs[key], f"{p}.{key}", 1, hi)

    kw = {}
    if kind == "shortest_edge":
        kw = dict(min_size=side("min_size"), max_size=side("max_size", MAX_CAP))
        if kw["max_size"] < kw["min_size"]:
            raise r.err(f"{p}.max_size", f"must be >= min_size {kw['min_size']}, got {kw['max_size']}")
    elif kind == "fixed":
        kw = dict(height=side("height"), width=side("width"))
    elif kind == "shorter_center_crop":
        kw = dict(size=side("size"), crop=side("crop"))
        if kw["crop"] > kw["size"]:
            raise r.err(f"{p}.crop", f"must be <= size {kw['size']}, got {kw['crop']}")
    resize = Resize(type=kind, interp=interp, letterbox=letterbox, **kw)

    pad = r.obj(pre.get("pad", {}), "preprocess.pad")
    div = r.optional(pad, "size_divisibility", "preprocess.pad",
                     lambda x, q: r.integer(x, q, 0, MAX_DIVISIBILITY), default=0)
    pad_value = r.optional(pad, "value", "preprocess.pad",
                           lambda x, q: r.numbers(x, q, 3, lo=-MAX_PIXEL, hi=MAX_PIXEL))
    normalize = None
    if pre.get("normalize") is not None:
        n = r.obj(pre["normalize"], "preprocess.normalize")
        q = "preprocess.normalize"
        for key in ("mean", "std"):
            if key not in n:
                raise r.err(f"{q}.{key}", "is required")
        normalize = Normalize(mean=r.numbers(n["mean"], f"{q}.mean", 3, lo=-MAX_PIXEL, hi=MAX_PIXEL),
                              std=r.numbers(n["std"], f"{q}.std", 3, lo=0.0, hi=MAX_PIXEL, lo_open=True),
                              where=r.optional(n, "where", q, lambda x, k: r.string(x, k, choices=NORMALIZE_WHERE),
                                               default="graph"))
    return Preprocess(resize=resize, pad=Pad(size_divisibility=div, value=pad_value), normalize=normalize)


def _postprocess(r: _Reader, v: Any, task: str) -> Postprocess:
    pp = r.obj(v, "postprocess")
    p = "postprocess"
    kind = r.string(pp.get("type"), f"{p}.type", choices=tuple(dict.fromkeys(TASK_POSTPROCESS.values())))
    if kind != TASK_POSTPROCESS[task]:
        raise r.err(f"{p}.type", f"must be {TASK_POSTPROCESS[task]} for task {task}, got {kind}")

    def unit(key: str, default=None):
        return r.optional(pp, key, p, lambda x, q: r.number(x, q, lo=0.0, hi=1.0), default=default)

    def flag(key: str, default: bool) -> bool:
        return r.optional(pp, key, p, r.boolean, default=default)

    return Postprocess(
        type=kind, mask_threshold=unit("mask_threshold", 0.5), score_threshold=unit("score_threshold", 0.0),
        max_detections=r.optional(pp, "max_detections", p, lambda x, q: r.integer(x, q, 1, MAX_DETECTIONS),
                                  nullable=True),
        clip=flag("clip", True), drop_empty=flag("drop_empty", True), align_corners=flag("align_corners", False),
        normalize=flag("normalize", False),
        paste=r.optional(pp, "paste", p, lambda x, q: r.string(x, q, choices=PASTE), default="detectron2"),
        overlap_threshold=unit("overlap_threshold"), instances_score_threshold=unit("instances_score_threshold"),
        stuff_area_threshold=r.optional(pp, "stuff_area_threshold", p,
                                        lambda x, q: r.number(x, q, lo=0.0, hi=float(MAX_SIDE) ** 2)),
        max_depth=r.optional(pp, "max_depth", p, lambda x, q: r.number(x, q, lo=0.0, hi=MAX_DEPTH, lo_open=True)),
        unit=r.optional(pp, "unit", p, lambda x, q: r.string(x, q, choices=DEPTH_UNITS), default="m"))


def _keypoints(r: _Reader, v: Any) -> Keypoints:
    k = r.obj(v, "keypoints")
    names = _names(r, k.get("names", []), "keypoints.names")
    skeleton = []
    for i, e in enumerate(r.lst(k.get("skeleton", []), "keypoints.skeleton")):
        e = r.lst(e, f"keypoints.skeleton[{i}]")
        if len(e) != 2:
            raise r.err(f"keypoints.skeleton[{i}]", f"must be a pair of keypoint indices, got {len(e)} values")
        skeleton.append(tuple(r.integer(j, f"keypoints.skeleton[{i}][{m}]", 0, max(len(names) - 1, 0))
                              for m, j in enumerate(e)))
    sig = r.lst(k.get("oks_sigmas", []), "keypoints.oks_sigmas")
    if sig and len(sig) != len(names):
        raise r.err("keypoints.oks_sigmas", f"must hold one sigma per keypoint ({len(names)}), got {len(sig)}")
    sigmas = tuple(r.number(s, f"keypoints.oks_sigmas[{i}]", lo=0.0, hi=10.0, lo_open=True) for i, s in enumerate(sig))
    return Keypoints(names=names, skeleton=tuple(skeleton), oks_sigmas=sigmas)


def check_file_name(name: Any, path: str, where: str = "deploy.json") -> str:
    """A file of the bundle: a relative '/'-separated path inside the folder, never '..', never absolute."""
    r = _Reader(where)
    r.string(name, path, nonempty=True, max_len=255)
    parts = PurePosixPath(name).parts
    if (name.startswith(("/", "\\")) or "\\" in name or "\x00" in name or re.match(r"[A-Za-z]:", name)
            or any(part in ("..", ".") for part in name.split("/")) or "" in name.split("/")):
        raise r.err(path, f"must be a plain relative path inside the bundle, got {_show(name)}")
    if parts[0] in RESERVED_FILES:
        raise r.err(path, "names the bundle's own file, which is never listed")
    return name


def _files(r: _Reader, v: Any, sealed: bool) -> dict[str, FileEntry]:
    files = r.obj(v, "files")
    if len(files) > 256:
        raise r.err("files", f"lists {len(files)} files, more than 256")
    out = {}
    for name, info in files.items():
        p = f"files[{name!r}]"
        check_file_name(name, f"files key {name!r}", r.where)
        info = r.obj(info, p)
        sha = info.get("sha256")
        if sealed or sha is not None:
            sha = r.string(sha, f"{p}.sha256")
            if not _HEX64.fullmatch(sha):
                raise r.err(f"{p}.sha256", "must be 64 lowercase hex digits")
        precisions = ("fp32",)
        if info.get("precisions") is not None:
            items = r.lst(info["precisions"], f"{p}.precisions", max_len=len(PRECISIONS))
            precisions = tuple(r.string(x, f"{p}.precisions[{i}]", choices=PRECISIONS) for i, x in enumerate(items))
        out[name] = FileEntry(name=name, format=r.string(info.get("format"), f"{p}.format", choices=tuple(FORMAT_FILES)),
                              role=r.optional(info, "role", p, lambda x, q: r.string(x, q, choices=FILE_ROLES),
                                              default="model"),
                              sha256=sha, precisions=precisions)
    if sealed and not any(f.role == "model" for f in out.values()):
        raise r.err("files", "lists no model file")
    return out


def _provenance(r: _Reader, v: Any) -> Provenance:
    prov = r.obj(v, "provenance")

    def text(key: str):
        return r.optional(prov, key, "provenance", r.string, nullable=True)

    return Provenance(source=text("source") or "", framework=text("framework") or "", weights=text("weights"),
                      weights_sha256=text("weights_sha256"),
                      opset=r.optional(prov, "opset", "provenance", lambda x, q: r.integer(x, q, 1, 1000), nullable=True),
                      static_outputs=r.optional(prov, "static_outputs", "provenance",
                                                lambda x, q: r.integer(x, q, 1, MAX_DETECTIONS), nullable=True),
                      raw=prov)


def _verification(r: _Reader, v: Any) -> Verification:
    rec = r.obj(v, "verification")
    if "passed" not in rec:
        raise r.err("verification.passed", "is required")
    return Verification(passed=r.boolean(rec["passed"], "verification.passed"),
                        first_failure=r.optional(rec, "first_failure", "verification", r.string, default=""),
                        reference=r.optional(rec, "reference", "verification", r.string, default=""),
                        backends=r.optional(rec, "backends", "verification", r.obj, default={}), raw=rec)
