"""Triton Python-backend model that runs a whole vdeploy bundle with vdeploy's runtime.

`vdeploy export-triton` copies this file as `NAME/1/model.py`, beside the bundle's own files
(deploy.json + model files), so the version folder is itself a bundle. Needs vdeploy's runtime in
the Python environment Triton's Python backend runs (docs/serving.md, "Triton").

Input `image`: BYTES, each element an encoded image file; outputs: the serving contract of
docs/serving.md, batch-major when max_batch_size > 0: a request carries [B, 1] images and each
per-image output gets B rows (label_map [B, 1]). Detection outputs are ragged (N boxes over the
request, not B rows), so a detection model takes one image per request ([1, 1]) and its outputs
get a leading 1 ([1, N, 4]); Triton's dynamic batching still gathers concurrent requests.

Dynamic batching hands `execute` several requests at once: their images go through
`Predictor.predict_batch` together, so a batchable graph runs once for all of them.
"""
import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

from vdeploy.runtime.io import decode_image
from vdeploy.runtime.predictor import Predictor
from vdeploy.serve.contract import DETECTION_TASKS, INPUT_NAME, to_tensors


def _share_of_cores(config: dict):
    """Intra-op threads of one instance when not configured: the cores this process may use, split
    between the model's instances (None, the backend's default, for a single instance)."""
    count = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
    if count == 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // count)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = config.get("max_batch_size", 0) > 0
        here = Path(args["model_repository"]) / args["model_version"]
        threads = int(params["threads"]) if params.get("threads") else _share_of_cores(config)
        self.predictor = Predictor(here, params.get("backend") or None, threads=threads).load()
        self.task = self.predictor.task
        self.one_per_request = self.batched and self.task in DETECTION_TASKS

    def execute(self, requests):
        images, spans, errors = [], [], []
        for r, request in enumerate(requests):
            start = len(images)
            try:  # one bad image fails its request, not the others batched with it
                blobs = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy().reshape(-1)
                if self.one_per_request and len(blobs) != 1:
                    raise ValueError(f"{self.task} takes one image per request; got {len(blobs)} "
                                     "(send concurrent requests: Triton batches them)")
                images.extend(decode_image(bytes(b), f"image {i}") for i, b in enumerate(blobs))
                errors.append(None)
            except Exception as e:
                del images[start:]
                errors.append(str(e))
            spans.append((start, len(images)))
        try:
            preds = self.predictor.predict_batch(images) if images else []
        except Exception as e:  # the graph failed: every request of this batch gets the reason
            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(errors[i] or str(e)))
                    for i in range(len(requests))]
        responses = []
        for (start, end), error in zip(spans, errors):
            if error:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(error)))
                continue
            tensors = to_tensors(self.task, preds[start:end])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(t.name, self._shape(t.data, end - start)) for t in tensors]))
        return responses

    def _shape(self, data, n_images):
        if not self.batched:
            return data
        if self.one_per_request:
            return data[np.newaxis]
        return data.reshape(n_images, -1) if data.ndim == 1 else data
