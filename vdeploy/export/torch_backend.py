"""The "torch" backend: the original eager PyTorch model behind the runtime's Backend interface.

It lives on the torch side and reaches the runtime as a plug-in (the `vdeploy.backends` entry
point, backend_entry.py), so that the runtime never names it and imports torch only when a user
picks it. Built either from a DeployableModel in memory or, for a bundle on disk,
rebuilt from the bundle's provenance (source config and weights).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BundleError, UserError
from ..runtime.backends.base import Backend


def disable_tf32() -> None:
    """float32 on a GPU means float32: PyTorch lets cuDNN convolutions (and, by choice, matrix
    products) run in TF32, 10-bit mantissas, on Ampere and later; a backend that stands for the
    float32 model, or is judged against it, must not. Process-wide, as PyTorch's flags are."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


class TorchEagerBackend(Backend):
    name = "torch"
    format = ""
    requires = "torch"

    def __init__(self, bundle, *, deployable=None, weights=None, **options):
        super().__init__(bundle, **options)
        self.deployable = deployable
        self.weights = weights  # overrides the provenance's (a bundle moved to another machine)

    def _load(self) -> None:
        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self.deployable is None:
            from ..frameworks import build_model

            prov = self.bundle.meta.get("provenance", {})
            source = prov.get("source")
            if not source:
                raise BundleError(f"{self.bundle.path}: provenance names no source model to rebuild for the torch backend")
            options = {"input_size": tuple(self.bundle.meta["input_size"])} if self.bundle.meta.get("input_size") else {}
            weights = self.weights or prov.get("weights")
            if weights and not Path(weights).is_file():
                raise UserError(f"{self.bundle.path}: the PyTorch reference needs the weights it was exported from, "
                                f"{weights}, which is not there; give --weights")
            if not Path(source).exists() and ":" not in source:
                raise UserError(f"{self.bundle.path}: the PyTorch reference needs the config it was exported from, "
                                f"{source}, which is not there")
            overrides = [tuple(pair) for pair in prov.get("config_overrides") or ()]
            self.deployable = build_model(source, weights, config_overrides=overrides, **options)
            if prov.get("static_outputs"):
                from .static_outputs import with_static_outputs

                self.deployable = with_static_outputs(self.deployable, prov["static_outputs"])
        if self.device.startswith("cuda") and self.precision == "fp32":
            disable_tf32()
        self.module = self.deployable.module.eval().to(self.device)

    def _run(self, feed):
        # torch-bf16: autocast runs matrix products and convolutions in bfloat16
        with torch.inference_mode(), torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            out = self.module(*[torch.from_numpy(feed[n]).to(self.device) for n in self.input_names])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [(o.float() if o.dtype == torch.bfloat16 else o).detach().cpu().numpy() for o in out]
