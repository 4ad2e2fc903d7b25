"""`vdeploy export-triton`: the configs parse as Triton's ModelConfig, and the ensemble, run step by
step here (Triton's Python backend stubbed, onnxruntime for the ONNX step), answers what
`Predictor.predict` answers."""
import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")


_PARSE = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
msg = text_format.Parse(open(sys.argv[1]).read(), mc.ModelConfig())
def ints(v):  # JSON carries 64-bit integers as strings
    if isinstance(v, dict): return {k: ints(x) for k, x in v.items()}
    if isinstance(v, list): return [ints(x) for x in v]
    return int(v) if isinstance(v, str) and v.isdigit() else v
print(json.dumps(ints(json_format.MessageToDict(msg, preserving_proto_field_name=True))))
"""


def parse_config(path):
    """Parse with Triton's own ModelConfig proto, in a fresh process: KServe registers protos of the
    same `inference` package, and one process's descriptor pool cannot hold both."""
    import subprocess

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    r = subprocess.run([sys.executable, "-c", _PARSE, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return _Attr(json.loads(r.stdout))


class _Attr(dict):
    """Attribute access over the parsed config, with the proto's defaults for absent fields."""

    def __getitem__(self, key):
        v = dict.__getitem__(self, key)
        return _Attr(v) if isinstance(v, dict) else v

    def __getattr__(self, name):
        v = self.get(name, 0 if name == "max_batch_size" else "")
        if isinstance(v, dict):
            return _Attr(v)
        if isinstance(v, list):
            return [_Attr(x) if isinstance(x, dict) else x for x in v]
        return v


class FakeTensor:
    def __init__(self, name, data):
        self._name, self._data = name, np.asarray(data)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._data


class FakeRequest:
    def __init__(self, tensors):
        self.tensors = {t.name(): t for t in tensors}


def fake_pb_utils():
    class Response:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    return types.SimpleNamespace(Tensor=FakeTensor, InferenceResponse=Response, TritonError=str,
                                 get_input_tensor_by_name=lambda req, name: req.tensors[name])


def load_stage(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location(f"triton_{model_dir.name}", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = json.loads(json.dumps({"max_batch_size": parse_config(model_dir / "config.pbtxt").max_batch_size,
                                    "parameters": {"stage": {"string_value": model_dir.name.rsplit("_", 1)[1]}}}))
    model.initialize({"model_config": json.dumps(config), "model_repository": str(model_dir), "model_version": "1"})
    return model


def run_step(model, tensors):
    response, = model.execute([FakeRequest(tensors)])
    assert response.error is None, response.error
    return response.output_tensors


def test_repository_layout_and_configs(small_classifier_bundle, tmp_path):
    out = tmp_path / "repo"
    r = run_cli("export-triton", small_classifier_bundle.path, out, "--name", "cls", "--max-batch-size", "4",
                "--variant", "ensemble")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cls", "cls_model", "cls_postprocess", "cls_preprocess"]
    assert (out / "cls_model" / "1" / "model.onnx").read_bytes() == small_classifier_bundle.model_file("onnx").read_bytes()
    ens = parse_config(out / "cls" / "config.pbtxt")
    assert ens.platform == "ensemble" and [s.model_name for s in ens.ensemble_scheduling.step] == \
        ["cls_preprocess", "cls_model", "cls_postprocess"]
    model = parse_config(out / "cls_model" / "config.pbtxt")
    assert model.platform == "onnxruntime_onnx" and model.max_batch_size == 4
    assert model.dynamic_batching.max_queue_delay_microseconds == 5000
    assert list(model.input[0].dims) == [3, 64, 64]  # batch dimension implicit
    post = parse_config(out / "cls_postprocess" / "config.pbtxt")
    assert post.backend == "python" and post.parameters["stage"].string_value == "postprocess"
    # a second export into the same, now non-empty, folder is refused and leaves it alone
    again = run_cli("export-triton", small_classifier_bundle.path, out)
    assert again.returncode == 2 and "not empty" in again.stderr
    assert (out / "cls" / "config.pbtxt").is_file()


def test_python_variant_is_one_model_holding_the_bundle(small_classifier_bundle, tmp_path):
    out = tmp_path / "repo"
    r = run_cli("export-triton", small_classifier_bundle.path, out, "--name", "cls", "--max-batch-size", "4",
                "--threads", "2", "--instances", "2")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in out.iterdir()] == ["cls"]
    version = out / "cls" / "1"
    assert (version / "model.onnx").read_bytes() == small_classifier_bundle.model_file("onnx").read_bytes()
    assert (version / "deploy.json").is_file() and "TritonPythonModel" in (version / "model.py").read_text()
    cfg = parse_config(out / "cls" / "config.pbtxt")
    assert cfg.backend == "python" and cfg.max_batch_size == 4 and cfg.dynamic_batching.max_queue_delay_microseconds == 5000
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("image", "TYPE_STRING", [1])]
    assert [(o.name, o.data_type) for o in cfg.output] == [("probs", "TYPE_FP32")]
    assert str(cfg.parameters["threads"].string_value) == "2" and cfg.instance_group[0].count == 2
    # the ensemble's own options are refused for it
    bad = run_cli("export-triton", small_classifier_bundle.path, tmp_path / "e", "--variant", "ensemble", "--threads", "2")
    assert bad.returncode == 2 and "python variant" in bad.stderr


def test_ensemble_steps_reproduce_the_predictor(small_classifier_bundle, tmp_path, monkeypatch):
    import onnxruntime as ort

    from vdeploy.runtime.predictor import Predictor
    from vdeploy.serve.triton_repo import write_triton_repository

    out = write_triton_repository(small_classifier_bundle, tmp_path / "repo", name="cls", variant="ensemble")
    pre = load_stage(out / "cls_preprocess", monkeypatch)
    post = load_stage(out / "cls_postprocess", monkeypatch)
    session = ort.InferenceSession(str(out / "cls_model" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(70, 90), (100, 64)]]
    blobs = np.array([[cv2.imencode(".png", im)[1].tobytes()] for im in images], dtype=object)  # [B, 1] on Triton

    prepared = {t.name(): t.as_numpy() for t in run_step(pre, [FakeTensor("image", blobs)])}
    raw = session.run(None, {i.name: prepared[i.name] for i in session.get_inputs()})
    raw_tensors = [FakeTensor(o.name, v) for o, v in zip(session.get_outputs(), raw)]
    answer, = run_step(post, raw_tensors + [FakeTensor("meta", prepared["meta"])])

    predictor = Predictor(small_classifier_bundle, "onnxruntime")
    want = np.stack([predictor.predict(im).probs for im in images])
    assert answer.name() == "probs"
    np.testing.assert_allclose(answer.as_numpy(), want, rtol=1e-4, atol=1e-6)


def test_an_undecodable_image_fails_its_request_only(small_classifier_bundle, tmp_path, monkeypatch):
    from vdeploy.serve.triton_repo import write_triton_repository

    out = write_triton_repository(small_classifier_bundle, tmp_path / "repo", name="cls", variant="ensemble")
    pre = load_stage(out / "cls_preprocess", monkeypatch)
    bad, good = pre.execute([FakeRequest([FakeTensor("image", np.array([[b"junk"]], dtype=object))]),
                             FakeRequest([FakeTensor("image", np.array([[cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()]], dtype=object))])])
    assert bad.error and "decodable" in bad.error
    assert good.error is None


def test_kserve_example_names_a_runtime_that_serves_the_v2_protocol():
    yaml = pytest.importorskip("yaml")
    from conftest import ROOT

    docs = list(yaml.safe_load_all((ROOT / "examples" / "kserve" / "inferenceservice.yaml").read_text()))
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["args"][:2] == ["serve", "/mnt/models/model"] and "--host" in container["args"]
    assert predictor["containers"][0]["ports"][0]["containerPort"] == 8080
