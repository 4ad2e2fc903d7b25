"""int8 by post-training static quantization: model.int8.onnx (onnxruntime's QDQ quantizer) and
model.int8.xml/.bin (NNCF on the OpenVINO IR), each a file of its own in the bundle.

Which layers stay in float is measured, not guessed (float_nodes.py): the whole graph is quantized,
its agreement with float32 is measured with the task's own figures on held-out images, and the
layers whose float restoration recovers the most are kept in float until the int8 gates hold.
Only the compute-heavy operators are quantized at all (QUANT_OPS): softmax / sigmoid, NMS,
RoiAlign and the box decoding cost little and carry the task's outputs, so they stay float.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..errors import UserError
from ..runtime.io import is_image_file, read_image
from ..runtime.preprocess import preprocess

# Operators worth integer arithmetic (the convolutions and matrix products hold ~all the MACs;
# Add and the pools are quantized so that a residual block stays in int8 between convolutions).
QUANT_OPS = ("Conv", "Gemm", "MatMul", "Add", "MaxPool", "GlobalAveragePool", "AveragePool")
# The same operators in an OpenVINO IR (ONNX Gemm becomes MatMul, the global pool a ReduceMean):
# NNCF is kept off every other type, so that both int8 files put float in the same places.
OV_QUANT_TYPES = {"Convolution", "GroupConvolution", "MatMul", "Add", "MaxPool", "AvgPool", "ReduceMean"}
GENERATED_CALIB = 12   # generated scenes when no --calib folder is given
GENERATED_HW = (480, 640)
# A --calib folder of at least SPLIT_FROM images is split: a quarter of it (4 to 16 images) is held
# out of calibration to choose the float layers on, and, from twice that many, another quarter to
# verify the int8 files on, so that both judge on the user's own data and neither on images the
# step before it fitted. Generated scenes unlike a model's data misjudge it (tiny:shapes_det, 100
# generated COCO scenes: calibrated on generated 640x480 scenes, onnxruntime-int8 bbox AP 15.7
# points under float32; calibrated on 16 of 32 images like its data, 0.36).
SPLIT_FROM = 8
MAX_HELD_OUT = 16


def calibration_files(calib: str | Path) -> list[Path]:
    """The images under a --calib folder; a user error when there are none (checked before any export work)."""
    folder = Path(calib)
    if not folder.is_dir():
        raise UserError(f"--calib {calib}: not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserError(f"--calib {calib}: has no images")
    return files


def calibration_images(calib: str | Path | None, photos: Sequence = ()) -> list[tuple[str, np.ndarray]]:
    """The user's --calib folder, or generated scenes plus the verification photos."""
    if calib:
        return [(str(p), read_image(p)) for p in calibration_files(calib)]
    from ..eval.synthetic import hard_scene

    rng = np.random.default_rng(1234)  # seeds apart from the export example and verification images
    items = [(f"generated {i}", hard_scene(rng, *GENERATED_HW, max_shapes=8, max_r=160)[0])
             for i in range(GENERATED_CALIB)]
    return items + [(str(p), read_image(p)) for p in photos]


class CalibrationSplit(NamedTuple):
    calibration: list      # (name, BGR image) pairs the activation ranges are measured on
    selection: list        # held out: the float-layer search judges on these
    verification: list     # held out: the int8 files are verified on these


def split_calibration(images: list) -> CalibrationSplit:
    """Every step-th image (the 4th from 16 images on, the 2nd or 3rd below) for the search and, from
    2 * SPLIT_FROM images, every step-th from another offset for verification, each at most
    MAX_HELD_OUT; the rest calibrate."""
    if len(images) < SPLIT_FROM:
        return CalibrationSplit(images, [], [])
    step = max(2, min(4, len(images) // 4))
    selection = set(list(range(step - 1, len(images), step))[:MAX_HELD_OUT])
    verification = set()
    if len(images) >= 2 * SPLIT_FROM:
        verification = set([i for i in range(1, len(images), step) if i not in selection][:MAX_HELD_OUT])
    pick = lambda idx: [im for i, im in enumerate(images) if i in idx]  # noqa: E731
    rest = set(range(len(images))) - selection - verification
    return CalibrationSplit(pick(rest), pick(selection), pick(verification))


def selection_images() -> list[tuple[str, np.ndarray]]:
    """Held-out images on which the float layers are chosen when the user gave too few of their own:
    neither calibration nor verification ones."""
    from ..eval.synthetic import hard_scene
    from ..runtime.synthetic import synthetic_image

    rng = np.random.default_rng(987)
    return [(f"held-out scene {i}", hard_scene(rng, 640, 480, max_shapes=8, max_r=160)[0]) for i in range(2)] + \
        [(f"held-out photo-like {i}", synthetic_image(*hw, seed=321 + i)) for i, hw in enumerate((GENERATED_HW, (360, 500)))]


def feeds_for(images, meta: dict) -> list:
    """Preprocessed inputs (with their per-image meta) of each image."""
    return [preprocess(img, meta, meta.get("input_size")) for _, img in images]


@contextlib.contextmanager
def _progress(total: int, what: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as p:
        task = p.add_task(what, total=total)
        yield lambda: p.advance(task)


def _ort_reader(feeds: list[dict], input_names: set[str], advance: Callable[[], None]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            x = next(self.it, None)
            if x is None:
                return None
            advance()
            return {k: v for k, v in x.items() if k in input_names}

        def __len__(self):
            return len(feeds)

    return Reader()


class OnnxQuantizer:
    """quantize_static in QDQ format, per-channel int8 weights, uint8 activations (the layout
    onnxruntime's VNNI kernels run). Ranges are calibrated once and cached, so that each trial of
    the float-layer search only rewrites the graph."""

    def __init__(self, src: Path, feeds: list[dict], workdir: Path, log=print):
        import onnx

        self.feeds, self.workdir, self.log = feeds, Path(workdir), log
        model = onnx.load(str(src))
        _fold_constant_identities(model)
        self.src = self.workdir / "float.onnx"
        onnx.save(model, str(self.src))
        self.graph = graph = model.graph
        self.input_names = {i.name for i in graph.input} - {init.name for init in graph.initializer}
        self.cache = self.workdir / "calibration.json"
        self._n = 0

    def quantize(self, exclude: Sequence[str], dst: Path | None = None) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        self._n += 1
        dst = Path(dst or self.workdir / f"trial{self._n}.onnx")
        fresh = not self.cache.exists()
        ctx = _progress(len(self.feeds), "calibrating onnxruntime int8") if fresh else contextlib.nullcontext(lambda: None)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" warning says nothing to our users
        try:
            with ctx as advance:
                quantize_static(str(self.src), str(dst), _ort_reader(self.feeds, self.input_names, advance),
                                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS), per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax,
                                calibration_cache_path=str(self.cache))
        finally:
            root.setLevel(level)
        return dst

    def candidates(self, near_outputs: int = 8, near_inputs: int = 2) -> list[tuple[str, list[str]]]:
        """Groups of layers the search tries in float, (label, node names):
        - the tail: quantizable ops no convolution / matrix product follows (box decoding, peak
          picking by max-pooling, score arithmetic): int8 buys no speed there, only error;
        - the arithmetic on tensors that are not feature maps (anchors, proposals, box deltas:
          rank other than 4), wherever it is;
        - the convolutions / matrix products nearest the outputs (heads, classifier, box
          regression) and the input (the stem), one at a time."""
        nodes = [n for n in self.graph.node if n.name]
        heavy = {n.name for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul")}
        by_out = {o: n for n in nodes for o in n.output}
        consumers: dict[str, list] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)

        def bfs(start: list, step) -> list[str]:
            seen, order, frontier = set(), [], list(start)
            while frontier:
                nxt = []
                for n in frontier:
                    if n.name in seen:
                        continue
                    seen.add(n.name)
                    order.append(n.name)
                    nxt.extend(step(n))
                frontier = nxt
            return order

        def downstream(n) -> list:
            return [c for o in n.output for c in consumers.get(o, [])]

        before_heavy = set()  # nodes from which a convolution / matrix product is reachable
        for n in nodes:
            if n.name in heavy:
                before_heavy.update(bfs([by_out[i] for i in n.input if i in by_out],
                                        lambda m: [by_out[i] for i in m.input if i in by_out]))
        tail = [n.name for n in nodes if n.op_type in QUANT_OPS and n.name not in heavy and n.name not in before_heavy]
        rank = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in
                [*self.graph.value_info, *self.graph.output, *self.graph.input] if vi.type.tensor_type.HasField("shape")}
        coords = [n.name for n in nodes if n.op_type in QUANT_OPS and n.name not in heavy and n.name not in tail
                  and rank.get(n.output[0], 4) != 4]
        outs = [by_out[o.name] for o in self.graph.output if o.name in by_out]
        back = bfs(outs, lambda n: [by_out[i] for i in n.input if i in by_out])
        fwd = bfs([c for i in self.input_names for c in consumers.get(i, [])], downstream)
        picked = [n for n in back if n in heavy][:near_outputs]
        picked += [n for n in fwd if n in heavy and n not in picked][:near_inputs]
        groups = [("the tail after the last convolutions", tail), ("arithmetic off the feature maps", coords)]
        return [(label, g) for label, g in groups if g] + [(n, [n]) for n in picked]


def _fold_constant_identities(model) -> None:
    """Identity nodes that only rename an initializer (the exporter shares equal constants, a
    convolution's bias among them) become initializers of their own. A bias the quantizer cannot
    see as a constant stays float, and onnxruntime then cannot fuse DequantizeLinear -> Conv ->
    QuantizeLinear into its int8 convolution: the convolution runs in float (measured on
    ResNet-50: 79 % of the int8 graph's time in float Conv, 1.9x slower than float32)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]), n.output[0])
            model.graph.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def quantize_openvino(xml: Path, dst_xml: Path, feeds: list[dict], float_onnx_nodes: Sequence[str], log=print) -> None:
    """NNCF post-training quantization of the float32 IR, keeping in float the layers the search chose
    (OpenVINO names a converted ONNX node by the node's name, plus a suffix for split-off biases)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if any(op.get_friendly_name() == n or op.get_friendly_name().startswith(n + "/") for n in float_onnx_nodes)]
    wanted = {name for port in model.inputs for name in port.get_names()}
    ds = nncf.Dataset(feeds, lambda x: {k: v for k, v in x.items() if k in wanted})
    other_types = sorted({op.get_type_name() for op in model.get_ordered_ops()} - OV_QUANT_TYPES)
    scope = nncf.IgnoredScope(names=names, types=other_types, validate=False)
    log(f"NNCF quantizing the OpenVINO IR on {len(feeds)} images" + (f", {len(names)} ops kept in float" if names else ""))
    # No bias correction: with layers kept in float it shifted the biases next to them (measured on
    # tiny:shapes_det, held-out bbox AP against float32 1.0 without it, 0.76 with fast bias correction),
    # and onnxruntime's quantizer has none either, so both int8 files are made the same way.
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # its INFO lines list every operator it skipped: noise to our users
    try:
        q = nncf.quantize(model, ds, subset_size=len(feeds), ignored_scope=scope,
                          advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
    finally:
        nncf_log.setLevel(level)
    stage = dst_xml.parent / ".int8-partial"
    stage.mkdir(exist_ok=True)
    try:
        ov.save_model(q, str(stage / "m.xml"), compress_to_fp16=False)
        os.replace(stage / "m.bin", dst_xml.with_suffix(".bin"))
        os.replace(stage / "m.xml", dst_xml)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def int8_images(calib, photos=()) -> CalibrationSplit:
    """The calibration images, split when they are the user's own (--calib)."""
    images = calibration_images(calib, photos)
    return split_calibration(images) if calib else CalibrationSplit(images, [], [])


def add_int8_files(dm, meta: dict, inputs: dict, folder: Path, formats: Sequence[str], images: CalibrationSplit, *,
                   calib=None, gates=None, opset: int = 17, log=print) -> dict[str, dict]:
    """Write the int8 files of `formats` into `folder` (which holds the float32 ones); returns their
    deploy.json entries. The float-layer search measures on onnxruntime, on the bundle's float32
    ONNX graph or one made on the side."""
    from .float_nodes import choose_float_nodes
    from .formats import export_onnx

    if not calib:
        log(f"int8: calibrating on {GENERATED_CALIB} generated scenes and the --images photos; give --calib with "
            "images like your model's data for int8 that keeps its accuracy (docs/precision.md)")
    calib_feeds = feeds_for(images.calibration, meta)
    # judged on the user's held-out images and on generated ones like verification's own inputs
    held_out = feeds_for(images.selection + selection_images(), meta)
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=folder) as work:
        onnx_path = folder / "model.onnx"
        if not onnx_path.exists():
            export_onnx(dm, dict(meta, provenance={}), inputs, Path(work), opset=opset)
            onnx_path = Path(work) / "model.onnx"
        q = OnnxQuantizer(onnx_path, [p.inputs for p in calib_feeds], Path(work), log)
        keep = choose_float_nodes(q, onnx_path, held_out, meta, gates, log=log)
        meta.setdefault("provenance", {})["int8"] = {
            "calibration": str(calib) if calib else f"{GENERATED_CALIB} generated scenes + the verification photos",
            "calibration_images": len(calib_feeds),
            "search_images": f"{len(images.selection)} held out of --calib + {len(held_out) - len(images.selection)} generated",
            "verification_images_held_out": len(images.verification),
            "float_layers": keep}
        if "onnx" in formats:
            q.quantize(keep, folder / "model.int8.onnx")
            files["model.int8.onnx"] = {"format": "onnx", "role": "model", "precisions": ["int8"]}
        if "openvino" in formats:
            quantize_openvino(folder / "model.xml", folder / "model.int8.xml", [p.inputs for p in calib_feeds], keep, log)
            files["model.int8.xml"] = {"format": "openvino", "role": "model", "precisions": ["int8"]}
            files["model.int8.bin"] = {"format": "openvino", "role": "weights"}
    return files
