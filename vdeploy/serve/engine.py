"""KServe's Python model server, as vdeploy uses it.

KServe gives the Open Inference Protocol v2 (REST, with the binary tensor extension that
tritonclient uses, and gRPC), its codecs, endpoints, error handlers and per-stage metrics. vdeploy
adds what it lacks for vision bundles: dynamic batching, admission control, a body limit, auth,
the TorchServe-style route and the page. See docs/serving.md for why KServe.
"""
from __future__ import annotations

import sys
import uuid

from ..errors import UserError
from .contract import INPUT_NAME, input_types, output_types, to_tensors


def import_kserve():
    """Import kserve without letting it parse our command line.

    `kserve.model_server` parses `sys.argv` with its own parser at import time (it would read
    `vdeploy serve --timeout 5` as its `--timeout-keep-alive`, or exit on an option it rejects).
    """
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve  # noqa: F401
        import kserve.model_server  # noqa: F401
    except ImportError as e:
        raise UserError(f"serving needs KServe's model server: pip install 'vdeploy[serve]' ({e})") from None
    finally:
        sys.argv = saved
    return kserve


def vision_model_class():
    """The kserve.Model subclass that serves one bundle through an InferenceWorker."""
    kserve = import_kserve()
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class VisionModel(kserve.Model):
        def __init__(self, name: str, worker, task: str):
            super().__init__(name)
            self.worker = worker
            self.task = task
            self.ready = True

        def load(self) -> bool:
            return self.ready

        def get_input_types(self) -> list[dict]:
            return input_types()

        def get_output_types(self) -> list[dict]:
            return output_types(self.task)

        async def predict(self, payload, headers=None, response_headers=None):
            if not isinstance(payload, InferRequest):
                raise InvalidInput("this model speaks the v2 protocol: POST /v2/models/{name}/infer")
            png_outputs = {"semantic_segmentation": "label_map", "depth_estimation": "depth_map"}
            if self.task in png_outputs and not payload.use_binary_outputs:
                raise InvalidInput(f"{png_outputs[self.task]} is PNG bytes: ask for binary outputs (binary_data_output)")
            images = images_of(payload, InvalidInput)
            preds = await self.worker.predict(images)
            outputs = [InferOutput(t.name, list(t.data.shape), t.datatype, t.data) for t in to_tensors(self.task, preds)]
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)

    return VisionModel


def decode_binary_request(body: bytes, json_length: str, model_name: str):
    """A v2 REST request with the binary tensor extension -> kserve InferRequest, bytes untouched.

    KServe's own decoder turns binary BYTES inputs into UTF-8 text (kserve 0.21, InferRequest.
    from_bytes), which no image file survives; this keeps each input's raw bytes instead.
    """
    import orjson
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    if not json_length.isdigit() or int(json_length) > len(body):
        raise InvalidInput("bad Inference-Header-Content-Length")
    try:
        head = orjson.loads(body[:int(json_length)])
        inputs, raws, start = [], [], int(json_length)
        for spec in head["inputs"]:
            params = spec.get("parameters") or {}
            inputs.append(InferInput(spec["name"], list(spec["shape"]), spec["datatype"], spec.get("data"), params))
            size = params.get("binary_data_size")
            if spec.get("data") is None and not isinstance(size, int):
                raise InvalidInput(f"input {spec['name']!r} has neither data nor binary_data_size")
            raws.append(body[start:start + size] if spec.get("data") is None else None)
            start += size if spec.get("data") is None else 0
        if start != len(body):
            raise InvalidInput(f"binary data sizes add up to {start} bytes, the body has {len(body)}")
        outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in head.get("outputs") or []] or None
        return InferRequest(model_name, inputs, request_id=head.get("id"), raw_inputs=raws,
                            parameters=head.get("parameters"), request_outputs=outputs)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInput(f"malformed v2 request: {type(e).__name__}: {e}") from None


def images_of(payload, invalid) -> list[bytes]:
    """The encoded images of a v2 request: its `image` input (or its only input), BYTES [B]."""
    inputs = {i.name: i for i in payload.inputs}
    inp = inputs.get(INPUT_NAME) or (payload.inputs[0] if len(payload.inputs) == 1 else None)
    if inp is None:
        raise invalid(f"expected an input named {INPUT_NAME!r} (BYTES [B], encoded images); got {sorted(inputs)}")
    if inp.datatype != "BYTES":
        raise invalid(f"input {inp.name!r} must be BYTES (encoded image files), not {inp.datatype}")
    try:
        values = inp.as_numpy().reshape(-1)
    except Exception as e:  # malformed tensor data: the engine's own parsing failed
        raise invalid(f"input {inp.name!r}: {e}") from None
    out = []
    for v in values:
        if isinstance(v, str):  # JSON clients send BYTES as strings: base64 of the file
            out.append(_b64(v, invalid))
        elif isinstance(v, (bytes, bytearray)):
            out.append(bytes(v))
        else:
            raise invalid(f"input {inp.name!r}: elements must be encoded image bytes")
    return out


def _b64(text: str, invalid) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("a BYTES element sent as JSON text must be the base64 of an image file") from None
