from __future__ import annotations

import warnings

from . import BackendEntry, register_backend
from .base import Backend, corrupt_model


class TorchScriptBackend(Backend):
    """Runs model.ts; torch is imported only when this backend is chosen."""

    name = "torchscript"
    format = "torchscript"
    requires = "torch"

    def _load(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self.device.startswith("cuda"):  # float32 means float32: no TF32 convolutions or matmuls
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        try:  # registers torchvision::nms / roi_align, which detector graphs call
            import torchvision  # noqa: F401
        except ImportError:
            pass
        path = self.model_path()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
                self.module = torch.jit.load(str(path), map_location=self.device)
        except Exception as e:  # torch raises RuntimeError for a truncated archive
            raise corrupt_model(path, e) from None
        self.module.eval()
        self._torch = torch

    def _run(self, feed):
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(feed[n]).to(self.device) for n in self.input_names]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in out]


register_backend(BackendEntry(TorchScriptBackend.name, "torchscript", "torch", 2, lambda: TorchScriptBackend, ("ts",)))
