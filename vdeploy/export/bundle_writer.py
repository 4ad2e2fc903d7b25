"""Write a whole bundle into a staging folder and swap it into place only when it is complete and verified."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional, Sequence

import torch

from .. import __version__
from ..errors import UserError, VerificationError
from ..models.base import DeployableModel
from ..bundle import DEPLOY_JSON, Bundle, write_deploy_json
from ..runtime.preprocess import preprocess
from .formats import EXPORTERS, ONNX_DATA
from .precision import check_precisions, mark_runtime_precisions
from .spec import bundle_meta, synthetic_image
from .staging import StagingJob, clean_stale

# Files an exporter writes beside the model file that hold its tensors.
WEIGHT_FILES = ("model.bin", ONNX_DATA)

# Export on one shape, verify on others (see verify.py): the example is landscape.
EXPORT_EXAMPLE_HW = (480, 640)


def _example_inputs(meta: dict):
    return preprocess(synthetic_image(*EXPORT_EXAMPLE_HW, seed=1), meta, meta.get("input_size")).inputs


def _check_replaceable(path: Path) -> None:
    """Only a bundle (or an empty folder) may be replaced; anything else is the user's."""
    exists = path.is_symlink() or path.exists()  # a dangling link is something too
    if exists and (not path.is_dir() or (any(path.iterdir()) and not (path / DEPLOY_JSON).exists())):
        raise UserError(f"{path}: exists and is not a bundle; refusing to overwrite it")


def _failed_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.failed")


def _record_dtypes(dm: DeployableModel, meta: dict, inputs: dict) -> None:
    """The element type of every input and output, from one run of the model on the example: a
    tool that reads raw output files (from-bin, an NPU runtime) must not have to guess that
    detectors' class ids are int64."""
    for spec in meta["inputs"]:
        spec.setdefault("dtype", str(inputs[spec["name"]].dtype))
    with torch.no_grad():
        outs = dm.module(*[torch.from_numpy(inputs[i["name"]]) for i in meta["inputs"]])
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    for spec, value in zip(meta["outputs"], outs):
        spec.setdefault("dtype", str(value.dtype).removeprefix("torch."))


def export_bundle(dm: DeployableModel, out: str | Path, formats: Sequence[str] = ("onnx",), *,
                  input_size: Optional[tuple[int, int]] = None, opset: int = 17, slim: bool = False,
                  verify: bool = True, verify_images: Sequence = (), gates: Optional[dict] = None,
                  precisions: Sequence[str] = ("fp32",), calib: Optional[str | Path] = None, log=print) -> Bundle:
    """Export `dm` in every format into the bundle folder `out`, then verify it against PyTorch.

    The bundle is built in a staging folder beside `out` (export/staging.py) and put in place only
    once it is complete and verified: `out` holds the old bundle or the new one at every instant.
    A bundle that fails verification goes to `OUT.failed/` instead (replacing an older one there),
    `out` is left as it was, and VerificationError names both.
    """
    formats = list(dict.fromkeys(formats))
    for f in formats:
        EXPORTERS.get(f)  # an unknown format fails before any work
    precisions = list(dict.fromkeys(precisions))
    check_precisions(precisions, formats)
    if calib is not None:
        if "int8" not in precisions:
            raise UserError("--calib calibrates int8: add int8 to --precision (e.g. --precision fp32,int8)")
        from .quantize import calibration_files

        calibration_files(calib)  # a wrong folder fails here, not after the float export
    if dm.dynamic_export_refused and not (dm.input_size or input_size):
        raise UserError(f"{dm.dynamic_export_refused}: export it at a fixed size with --input-size HxW")
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise UserError(f"{out}: name a bundle folder (e.g. {Path(out, 'mymodel')})")
    _check_replaceable(out)  # before the work, not only at the swap
    input_size = input_size or dm.input_size
    meta = bundle_meta(dm, input_size)
    meta["provenance"].update(torch=torch.__version__, vdeploy=__version__,
                              created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    out.parent.mkdir(parents=True, exist_ok=True)
    for line in clean_stale(out.parent):
        log(line)
    with StagingJob(out) as job:
        inputs = _example_inputs(meta)
        _record_dtypes(dm, meta, inputs)
        ordered = (["onnx"] if "onnx" in formats else []) + [f for f in formats if f != "onnx"]
        for fmt in ordered:
            log(f"exporting {fmt} ...")
            files = EXPORTERS.get(fmt)(dm, meta, inputs, job.staging, opset=opset, slim=slim,
                                       onnx_path=job.staging / "model.onnx")
            for fname in files:
                meta["files"][fname] = {"format": fmt, "role": "weights" if fname in WEIGHT_FILES else "model"}
        mark_runtime_precisions(meta, precisions)
        held_out = []
        if "int8" in precisions:
            from .quantize import add_int8_files, int8_images

            # calibrated on --calib (a share of it held out), or on generated scenes plus the verification photos
            split = int8_images(calib, verify_images)
            held_out = split.verification
            meta["files"].update(add_int8_files(dm, meta, inputs, job.staging, formats, split, calib=calib,
                                                gates=gates, opset=opset, log=log))
        record = None
        if verify:
            from .verify import run_verification

            # The backends read the model files from the staging folder through `meta`; deploy.json
            # is written (and hashed) once, below, with the verdict in it.
            record = run_verification(Bundle(job.staging, meta), dm, images=verify_images, backends=None,
                                      gates=gates, held_out_images=held_out, log=log)
            meta["verification"] = record
        bundle = write_deploy_json(job.staging, meta)
        if record is not None and not record["passed"]:
            failed = _failed_path(out)
            job.publish(failed, _check_replaceable)
            kept = f"the bundle at {out} is unchanged" if out.exists() else f"nothing was written at {out}"
            raise VerificationError(f"{record['first_failure']} (the new bundle is kept at {failed}; {kept})")
        job.publish(out, _check_replaceable)
    bundle.path = out
    return bundle
