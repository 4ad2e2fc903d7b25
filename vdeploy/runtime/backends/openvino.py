from __future__ import annotations

import threading

from . import BackendEntry, register_backend
from .base import Backend, corrupt_model


class OpenVinoBackend(Backend):
    name = "openvino"
    format = "openvino"
    requires = "openvino"

    def _load(self) -> None:
        import openvino as ov

        core = ov.Core()
        # f32 explicitly: on CPUs with bf16/AMX OpenVINO would otherwise lower the precision.
        # bf16 only when asked for ("openvino-bf16"); an int8 IR runs its quantized layers in int8 either way
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32"}
        streams = int(self.options.get("streams") or 0)
        if streams:  # several requests in flight (bench --streams): the cores split between them
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        path = self.model_path()
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, self.options.get("ov_device", "CPU"), config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for bad files
            raise corrupt_model(path, e) from None
        self.request = self.compiled.create_infer_request()
        self._local = threading.local()  # a request is not shared between threads: one each
        self._outs = [self.compiled.output(n) for n in self.output_names]
        # The exporter drops inputs a graph never reads (RetinaNet has no use for im_info).
        self._in = {name for port in self.compiled.inputs for name in port.get_names()}

    def _run(self, feed):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = (self.request if threading.current_thread() is threading.main_thread()
                                             else self.compiled.create_infer_request())
        res = request.infer({k: v for k, v in feed.items() if k in self._in})
        return [res[o] for o in self._outs]


register_backend(BackendEntry(OpenVinoBackend.name, "openvino", "openvino", 1, lambda: OpenVinoBackend, ("ov",),
                              ("fp32", "bf16", "int8")))
