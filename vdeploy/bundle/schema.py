"""deploy.json as typed, versioned dataclasses, validated field by field (docs/bundle.md).

`parse_contract(meta)` (parse.py) reads a deploy.json object once and either returns a `Contract` or raises
BundleError with one line naming the field (`deploy.json: preprocess.normalize.std[1] must be > 0,
got 0`). Every value the runtime acts on is checked here, type and range, so that a hand-edited
(and re-sealed) deploy.json can never reach the runtime as a NaN, a negative size or a path
outside the bundle. Unknown keys are kept (forward compatible within a schema version) but never
read. Knows no engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..errors import BundleError

SCHEMA_VERSION = 1

TASKS = ("detection", "instance_segmentation", "keypoints", "panoptic_segmentation", "semantic_segmentation",
         "embedding", "classification", "depth_estimation")
# task -> the host postprocessing that reads its outputs
TASK_POSTPROCESS = {"detection": "detection", "instance_segmentation": "detection", "keypoints": "detection",
                    "panoptic_segmentation": "panoptic", "semantic_segmentation": "semantic_segmentation",
                    "embedding": "embedding", "classification": "classification",
                   "depth_estimation": "depth_estimation"}
# postprocess type -> outputs it reads by name
REQUIRED_OUTPUTS = {"detection": ("boxes", "scores", "classes"), "depth_estimation": ("depth",),
                    "panoptic": ("boxes", "scores", "classes", "sem_seg_logits")}
RESIZE_TYPES = ("shortest_edge", "fixed", "shorter_center_crop", "none")
INTERPOLATIONS = ("pil_bilinear", "cv2_linear", "cv2_cubic", "cv2_area", "cv2_nearest")
LETTERBOX = ("shrink", "fill")
NORMALIZE_WHERE = ("graph", "host")
PASTE = ("detectron2", "torchvision")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("BGR", "RGB")
DEPTH_UNITS = ("m",)
MAX_DEPTH = 1e6
# Format name -> the file that holds the model (OpenVINO's weights file is listed too, role "weights").
FORMAT_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.ts"}
FILE_ROLES = ("model", "weights")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Files of the bundle itself, never listed in `files`.
RESERVED_FILES = ("deploy.json", "deploy.sig")

# Bounds: large enough for any real model, small enough that no value can ask for an absurd allocation.
MAX_SIDE = 16384          # a resize target, crop or fixed input side, in pixels
MAX_CAP = 1 << 20         # a resize cap (torchvision's "no cap" is 100000)
MAX_DIVISIBILITY = 4096
MAX_DIM = 1 << 24         # a fixed tensor dimension
MAX_DETECTIONS = 1 << 20
MAX_CLASSES = 1 << 20
MAX_TENSORS = 64
MAX_PIXEL = 1e6           # |mean|, std and pad values are in 0..255 pixel units


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. A string in `shape` is a dynamic axis."""
    name: str
    dtype: Optional[str]                 # None: not recorded (bundles exported before dtypes were)
    shape: Optional[tuple[Union[int, str], ...]]
    layout: Optional[str] = None
    color: Optional[str] = None
    meaning: str = ""
    # image input only: the host feeds pixel values in [0, 255] times `scale` (vdeploy: 1.0, raw pixels)
    scale: Optional[float] = None

    @property
    def numpy_dtype(self) -> str:
        return self.dtype or "float32"


@dataclass(frozen=True)
class Resize:
    type: str
    interp: str = "cv2_linear"
    min_size: Optional[int] = None       # shortest_edge
    max_size: Optional[int] = None       # shortest_edge
    height: Optional[int] = None         # fixed
    width: Optional[int] = None          # fixed
    size: Optional[int] = None           # shorter_center_crop
    crop: Optional[int] = None           # shorter_center_crop
    letterbox: str = "shrink"            # with a fixed input_size: shrink to fit, or fill the canvas


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    where: str = "graph"                 # graph: the host feeds raw pixels; host: the host normalises


@dataclass(frozen=True)
class Pad:
    size_divisibility: int = 0
    value: Optional[tuple[float, ...]] = None   # per channel, in the fed tensor; None: not recorded


@dataclass(frozen=True)
class Preprocess:
    resize: Resize
    pad: Pad
    normalize: Optional[Normalize]

    @property
    def pad_value(self) -> tuple[float, ...]:
        """What padded pixels hold in the fed tensor: recorded, or (older bundles) the value that
        normalises to zero, the pixel mean when normalisation is in the graph."""
        if self.pad.value is not None:
            return self.pad.value
        if self.normalize is not None and self.normalize.where == "graph":
            return self.normalize.mean
        return (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Postprocess:
    type: str
    mask_threshold: float = 0.5
    score_threshold: float = 0.0
    max_detections: Optional[int] = None
    clip: bool = True
    drop_empty: bool = True
    paste: str = "detectron2"
    align_corners: bool = False
    normalize: bool = False              # embedding: L2-normalise on the host
    overlap_threshold: Optional[float] = None            # panoptic
    stuff_area_threshold: Optional[float] = None         # panoptic, in pixels
    instances_score_threshold: Optional[float] = None    # panoptic
    max_depth: Optional[float] = None    # depth: the largest depth the model can output, in `unit`
    unit: str = "m"                      # depth: what one unit of the output is


@dataclass(frozen=True)
class Keypoints:
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    oks_sigmas: tuple[float, ...]


@dataclass(frozen=True)
class FileEntry:
    name: str                            # relative to the bundle folder, '/'-separated, never '..'
    format: str
    role: str
    sha256: Optional[str]                # None only before the bundle is sealed
    precisions: tuple[str, ...] = ("fp32",)


@dataclass(frozen=True)
class Provenance:
    source: str = ""
    framework: str = ""
    weights: Optional[str] = None
    weights_sha256: Optional[str] = None
    opset: Optional[int] = None
    static_outputs: Optional[int] = None
    raw: dict = field(default_factory=dict, compare=False)   # every recorded key, versions included


@dataclass(frozen=True)
class Verification:
    passed: bool
    first_failure: str = ""
    reference: str = ""
    backends: dict = field(default_factory=dict, compare=False)
    raw: dict = field(default_factory=dict, compare=False)   # the whole record (gates, diagnostics, ...)


@dataclass(frozen=True)
class Contract:
    """deploy.json, typed. `Bundle.meta` keeps the raw object for code not yet reading fields."""
    schema_version: int
    task: str
    classes: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: Preprocess
    postprocess: Postprocess
    input_size: Optional[tuple[int, int]]
    batchable: bool
    files: dict[str, FileEntry]
    provenance: Provenance
    verification: Optional[Verification]
    digest: Optional[str]
    stuff_classes: tuple[str, ...] = ()
    keypoints: Optional[Keypoints] = None

    @property
    def image_input(self) -> TensorSpec:
        return self.inputs[0]

    def input(self, name: str) -> Optional[TensorSpec]:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> Optional[TensorSpec]:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def model_files(self) -> list[FileEntry]:
        return [f for f in self.files.values() if f.role == "model"]


REQUIRED_KEYS = ("schema_version", "task", "classes", "inputs", "preprocess", "postprocess", "outputs", "files", "digest")


def check_sealed_header(meta: dict, where: str) -> None:
    """A written bundle's deploy.json: the schema version this vdeploy reads and every required key."""
    version = meta.get("schema_version")
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise BundleError(f"{where}: schema_version {version!r} is not supported (this vdeploy reads {SCHEMA_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{where}: missing keys: {', '.join(missing)}")
