"""Triton Python-backend model for the pre- and postprocessing of a vdeploy bundle.

`vdeploy export-triton` copies this file as `model.py` into two models of the repository; the
`stage` parameter of each config.pbtxt says which half it runs. The bundle's deploy.json sits
beside it. Needs `pip install vdeploy[runtime]` in Triton's Python environment.

preprocess:  image BYTES [B] (encoded files)  ->  the graph's inputs, meta BYTES [B] (JSON)
postprocess: the graph's outputs, meta        ->  the vdeploy serving contract (docs/serving.md)
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

from vdeploy.runtime.io import decode_image
from vdeploy.runtime.postprocess import postprocess
from vdeploy.runtime.preprocess import preprocess
from vdeploy.serve.contract import INPUT_NAME, to_tensors

META = "meta"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.stage = config["parameters"]["stage"]["string_value"]
        self.batched = config.get("max_batch_size", 0) > 0  # then every tensor is batch-major
        here = Path(args["model_repository"]) / args["model_version"]
        self.spec = json.loads((here / "deploy.json").read_text())
        self.input_names = [i["name"] for i in self.spec["inputs"]]
        self.output_names = [o["name"] for o in self.spec["outputs"]]

    def execute(self, requests):
        run = self._preprocess if self.stage == "preprocess" else self._postprocess
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=run(request)))
            except Exception as e:  # one bad image fails its request, not the batch
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses

    def _preprocess(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy().reshape(-1)
        prepared = [preprocess(decode_image(bytes(b), f"image {i}"), self.spec, self.spec.get("input_size"))
                    for i, b in enumerate(blobs)]
        if len(prepared) > 1 and not self.spec.get("batchable"):
            raise ValueError("this model takes one image per request")
        tensors = [pb_utils.Tensor(n, np.concatenate([p.inputs[n] for p in prepared])) for n in self.input_names]
        meta = np.array([json.dumps(p.meta, default=_plain).encode() for p in prepared], dtype=object)
        meta = meta.reshape(-1, 1) if self.batched else meta
        return tensors + [pb_utils.Tensor(META, meta)]

    def _postprocess(self, request):
        raw = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.output_names}
        metas = [json.loads(m) for m in pb_utils.get_input_tensor_by_name(request, META).as_numpy().reshape(-1)]
        if len(metas) == 1:
            preds = [postprocess(raw, metas[0], self.spec)]
        else:
            preds = [postprocess({k: v[i:i + 1] for k, v in raw.items()}, m, self.spec) for i, m in enumerate(metas)]
        tensors = to_tensors(self.spec["task"], preds)
        return [pb_utils.Tensor(t.name, t.data.reshape(len(preds), -1) if self.batched and t.data.ndim == 1 else t.data)
                for t in tensors]


def _plain(value):
    """numpy scalars and arrays in the preprocessing metadata -> JSON values."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
