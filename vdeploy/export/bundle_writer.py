"""Write a whole bundle into a staging folder and swap it into place only when it is complete."""
from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from .. import __version__
from ..errors import UserError
from ..models.base import DeployableModel
from ..runtime.bundle import DEPLOY_JSON, Bundle, write_deploy_json
from ..runtime.preprocess import preprocess
from .formats import EXPORTERS
from .spec import bundle_meta, synthetic_image

# Export on one shape, verify on others (see verify.py): the example is landscape.
EXPORT_EXAMPLE_HW = (480, 640)


def _example_inputs(meta: dict):
    return preprocess(synthetic_image(*EXPORT_EXAMPLE_HW, seed=1), meta, meta.get("input_size")).inputs


def _swap_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / DEPLOY_JSON).exists()):
            raise UserError(f"{out}: exists and is not a bundle; refusing to overwrite it")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def export_bundle(dm: DeployableModel, out: str | Path, formats: Sequence[str] = ("onnx",), *,
                  input_size: Optional[tuple[int, int]] = None, opset: int = 17, slim: bool = False,
                  verify: bool = True, verify_images: Sequence = (), log=print) -> Bundle:
    """Export `dm` in every format into the bundle folder `out`, then verify it against PyTorch.

    Nothing is left at `out` unless every format exported; an existing bundle there is replaced
    only at the very end.
    """
    formats = list(dict.fromkeys(formats))
    for f in formats:
        EXPORTERS.get(f)  # an unknown format fails before any work
    input_size = input_size or dm.input_size
    meta = bundle_meta(dm, input_size)
    meta["provenance"].update(torch=torch.__version__, vdeploy=__version__,
                              created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        inputs = _example_inputs(meta)
        ordered = (["onnx"] if "onnx" in formats else []) + [f for f in formats if f != "onnx"]
        for fmt in ordered:
            log(f"exporting {fmt} ...")
            files = EXPORTERS.get(fmt)(dm, meta, inputs, staging, opset=opset, slim=slim,
                                       onnx_path=staging / "model.onnx")
            for fname in files:
                meta["files"][fname] = {"format": fmt, "role": "model" if fname != "model.bin" else "weights"}
        bundle = write_deploy_json(staging, meta)
        if verify:
            from .verify import verify_bundle

            bundle = verify_bundle(bundle, dm, images=verify_images, log=log, raise_on_failure=False)
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    bundle.path = out
    if verify and not bundle.meta["verification"]["passed"]:
        from ..errors import VerificationError

        raise VerificationError(bundle.meta["verification"]["first_failure"] + f" (bundle kept at {out} with the failed verification recorded)")
    return bundle
