"""The "torch" backend: the original eager PyTorch model behind the runtime's Backend interface.

It lives on the torch side; the runtime names it by module path so that it imports torch only
when a user picks it. Built either from a DeployableModel in memory or, for a bundle on disk,
rebuilt from the bundle's provenance (source config and weights).
"""
from __future__ import annotations

import torch

from ..errors import BundleError
from ..runtime.backends.base import Backend


class TorchEagerBackend(Backend):
    name = "torch"
    format = ""
    requires = "torch"

    def __init__(self, bundle, *, deployable=None, **options):
        super().__init__(bundle, **options)
        self.deployable = deployable

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
            self.deployable = build_model(source, prov.get("weights"), **options)
        self.module = self.deployable.module.eval().to(self.device)

    def _run(self, feed):
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(feed[n]).to(self.device) for n in self.input_names])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in out]
