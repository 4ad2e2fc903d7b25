from __future__ import annotations


from . import BackendEntry, register_backend
from ...errors import UserError
from .base import Backend, corrupt_model

# Provider preference when the user asks for a GPU: TensorRT, then CUDA, then CPU.
_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    format = "onnx"
    requires = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        elif self.options.get("streams"):
            # requests run concurrently from several threads (bench --streams): the cores split between them
            import os

            opts.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)) // int(self.options["streams"]))
        opts.log_severity_level = 3
        if self.device not in _DEVICE_PROVIDERS:
            raise UserError(f"onnxruntime: unknown --device {self.device!r}; choose from {', '.join(_DEVICE_PROVIDERS)}")
        have = set(ort.get_available_providers())
        wanted = _DEVICE_PROVIDERS[self.device][0]
        if wanted not in have:
            # never a silent fall-back to the CPU: the user asked for that device
            raise UserError(f"onnxruntime here has no {wanted} for --device {self.device} (it has: {', '.join(sorted(have))}); "
                            "install onnxruntime-gpu, or run on --device cpu")
        providers = [p for p in _DEVICE_PROVIDERS[self.device] if p in have]
        path = self.model_path()
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise corrupt_model(path, e) from None
        self._out = self.output_names
        # The exporter drops inputs a graph never reads (RetinaNet has no use for im_info).
        self._in = {i.name for i in self.session.get_inputs()}

    def _run(self, feed):
        return self.session.run(self._out, {k: v for k, v in feed.items() if k in self._in})


register_backend(BackendEntry(OnnxRuntimeBackend.name, "onnx", "onnxruntime", 0, lambda: OnnxRuntimeBackend, ("ort", "onnx"),
                              ("fp32", "int8")))
