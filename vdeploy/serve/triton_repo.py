"""A bundle -> a Triton Inference Server model repository, in one of two variants.

variant "python" (the default; runs on any Triton with the Python backend, the pytriton wheel's
included):

    OUT/NAME/                  Python backend (triton_python.py as model.py): the whole bundle,
                               copied into OUT/NAME/1/, run by vdeploy's runtime

variant "ensemble" (needs Triton's onnxruntime backend: the full NGC image), three models:

    OUT/NAME/                  ensemble: image BYTES -> the serving contract of docs/serving.md
    OUT/NAME_preprocess/       Python backend (triton_model.py, stage "preprocess") + deploy.json
    OUT/NAME_model/            onnxruntime_onnx: the bundle's model.onnx
    OUT/NAME_postprocess/      Python backend (triton_model.py, stage "postprocess") + deploy.json

A batchable bundle with per-image outputs of a fixed shape (classification, embedding,
segmentation) gets max_batch_size and dynamic batching on every model; the image input is then
[B, 1] on Triton. Detection outputs are ragged (N boxes per image) and a graph may take one image
only: such bundles get max_batch_size 0 and one image per request ([1]). The repository is written beside OUT and swapped in only when complete.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError
from ..bundle import Bundle
from .contract import DETECTION_TASKS, INPUT_NAME, output_types
from .names import check_model_name

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
CONTRACT_TYPES = {"FP32": "TYPE_FP32", "INT32": "TYPE_INT32", "BYTES": "TYPE_STRING"}
META = "meta"


VARIANTS = ("python", "ensemble")


def write_triton_repository(bundle: Bundle, out: str | Path, *, name: str | None = None, variant: str = "python",
                            max_batch_size: int = 8, max_delay_us: int = 5000, backend: str | None = None,
                            threads: int | None = None, instances: int = 1) -> Path:
    """`instances` (python variant): model instances; without `threads`, each gets an equal share
    of the serving machine's cores (triton_python.py), so more instances never oversubscribe it."""
    if variant not in VARIANTS:
        raise UserError(f"unknown Triton repository variant {variant!r} (choose: {', '.join(VARIANTS)})")
    name = check_model_name(name or bundle.name)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not empty; give a new folder")
    if variant == "ensemble":
        bundle.model_file("onnx")  # BundleError when the bundle has no ONNX model, before any writing
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if variant == "python":
            _python_model(bundle, staging, name, max_batch_size, max_delay_us, backend, threads, instances)
        else:
            _ensemble_models(bundle, staging, name, max_batch_size, max_delay_us)
        staging.chmod(0o755)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _python_model(bundle: Bundle, root: Path, name: str, max_batch_size: int, max_delay_us: int,
                  backend: str | None, threads: int | None, instances: int) -> None:
    """One Python-backend model: every task batches requests here (detection one image each, see
    triton_python.py), so dynamic batching is always on."""
    d = root / name
    shutil.copytree(bundle.path, d / "1", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    shutil.copyfile(Path(__file__).with_name("triton_python.py"), d / "1" / "model.py")
    detection = bundle.meta["task"] in DETECTION_TASKS
    image = [{"name": INPUT_NAME, "data_type": "TYPE_STRING", "dims": [1]}]
    answers = [{"name": t["name"], "data_type": CONTRACT_TYPES[t["datatype"]],
                "dims": t["shape"] if detection else (t["shape"][1:] or [1])} for t in output_types(bundle.meta["task"])]
    params = {"backend": backend or "", "threads": str(threads or "")}
    extra = (f"dynamic_batching {{ max_queue_delay_microseconds: {max_delay_us} }}\n"
             + "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items()))
    _write(d, _config(name, 'backend: "python"', max_batch_size, image, answers, extra, instances))


def _ensemble_models(bundle: Bundle, staging: Path, name: str, max_batch_size: int, max_delay_us: int) -> None:
    onnx_file = bundle.model_file("onnx")
    batch = max_batch_size if bundle.meta.get("batchable") and bundle.meta["task"] not in DETECTION_TASKS else 0
    spec = bundle.meta
    graph_inputs = [_tensor(i["name"], TRITON_TYPES[i.get("dtype", "float32")], i["shape"], batch) for i in spec["inputs"]]
    graph_outputs = [_tensor(o["name"], TRITON_TYPES[o.get("dtype", "float32")], o["shape"], batch) for o in spec["outputs"]]
    image = [_tensor(INPUT_NAME, "TYPE_STRING", [1], 0)]
    meta = [_tensor(META, "TYPE_STRING", [1], 0)]
    answers = [_tensor(t["name"], CONTRACT_TYPES[t["datatype"]], t["shape"][1:] if batch else t["shape"], 0)
               for t in output_types(spec["task"])]
    batching = f"dynamic_batching {{ max_queue_delay_microseconds: {max_delay_us} }}\n" if batch else ""

    model_dir = _model_dir(staging, f"{name}_model")
    shutil.copyfile(onnx_file, model_dir / "1" / "model.onnx")
    _write(model_dir, _config(f"{name}_model", 'platform: "onnxruntime_onnx"', batch, graph_inputs, graph_outputs, batching))
    for stage, ins, outs in [("preprocess", image, graph_inputs + meta), ("postprocess", graph_outputs + meta, answers)]:
        d = _model_dir(staging, f"{name}_{stage}")
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), d / "1" / "model.py")
        (d / "1" / "deploy.json").write_text(json.dumps(spec, indent=1) + "\n")
        params = f'parameters {{ key: "stage" value: {{ string_value: "{stage}" }} }}\n'
        _write(d, _config(f"{name}_{stage}", 'backend: "python"', batch, ins, outs, batching + params))
    _write(_model_dir(staging, name), _ensemble(name, batch, image, answers, spec))


def _tensor(name: str, dtype: str, shape: list, batch: int) -> dict:
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
    if batch and name not in (INPUT_NAME, META):
        dims = dims[1:]  # the batch dimension is implicit when max_batch_size > 0
    return {"name": name, "data_type": dtype, "dims": dims or [1]}


def _model_dir(root: Path, name: str) -> Path:
    d = root / name
    (d / "1").mkdir(parents=True)
    return d


def _write(model_dir: Path, text: str) -> None:
    (model_dir / "config.pbtxt").write_text(text)


def _io(kind: str, tensors: list[dict]) -> str:
    items = ",\n".join(f'  {{ name: "{t["name"]}" data_type: {t["data_type"]} dims: [ {", ".join(map(str, t["dims"]))} ] }}'
                       for t in tensors)
    return f"{kind} [\n{items}\n]\n"


def _config(name: str, runtime: str, batch: int, inputs, outputs, extra: str = "", instances: int = 1) -> str:
    return (f'name: "{name}"\n{runtime}\nmax_batch_size: {batch}\n' + _io("input", inputs) + _io("output", outputs)
            + f'instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n' + extra)


def _ensemble(name: str, batch: int, image, answers, spec) -> str:
    def maps(kind, pairs):
        return "".join(f'      {kind} {{ key: "{k}" value: "{v}" }}\n' for k, v in pairs)

    graph_in = [i["name"] for i in spec["inputs"]]
    graph_out = [o["name"] for o in spec["outputs"]]
    steps = [
        (f"{name}_preprocess", [(INPUT_NAME, INPUT_NAME)], [(n, f"pre_{n}") for n in graph_in + [META]]),
        (f"{name}_model", [(n, f"pre_{n}") for n in graph_in], [(n, f"raw_{n}") for n in graph_out]),
        (f"{name}_postprocess", [(n, f"raw_{n}") for n in graph_out] + [(META, f"pre_{META}")],
         [(t["name"], t["name"]) for t in answers]),
    ]
    body = "".join(f'    {{\n      model_name: "{m}"\n      model_version: -1\n' + maps("input_map", ins)
                   + maps("output_map", outs) + "    }" + (",\n" if i < len(steps) - 1 else "\n")
                   for i, (m, ins, outs) in enumerate(steps))
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {batch}\n' + _io("input", image) + _io("output", answers)
            + f"ensemble_scheduling {{\n  step [\n{body}  ]\n}}\n")
