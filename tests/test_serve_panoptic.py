"""Serving panoptic segmentation (docs/serving.md): the segment-id map as INT32 [B, H, W] and each
image's segments as JSON in the Open Inference Protocol, and segments with COCO RLE pixels on the
TorchServe-style route; a real server on 127.0.0.1 with a fake predictor whose answer is known."""
import json

import numpy as np
import pytest

pytest.importorskip("kserve", reason="the serve extra (KServe's model server) is not installed")
http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")
mask_util = pytest.importorskip("pycocotools.mask")

from test_serve import Server, infer, png, post  # noqa: E402
from vdeploy.runtime.prediction import Prediction  # noqa: E402
from vdeploy.runtime.preprocess import Prepared  # noqa: E402
from vdeploy.serve.contract import output_types, to_json, to_tensors  # noqa: E402


def panoptic_of(h: int, w: int) -> Prediction:
    """A person (thing 0) in the top-left quarter, sky (stuff 3) over the rest of the top half,
    the bottom half unlabelled."""
    seg = np.zeros((h, w), np.int32)
    seg[: h // 2] = 2
    seg[: h // 2, : w // 2] = 1
    info = [{"id": 1, "isthing": True, "category_id": 0, "score": 0.875, "category_name": "person"},
            {"id": 2, "isthing": False, "category_id": 3, "category_name": "sky"}]
    return Prediction("panoptic_segmentation", (h, w), panoptic_seg=seg, segments_info=info)


class FakePanoptic:
    task = "panoptic_segmentation"
    classes = ["person"]
    backend_name = "fake"

    def __init__(self):
        self.spec = {"task": self.task, "classes": self.classes, "batchable": True}

    def preprocess(self, image):
        return Prepared({"x": np.array([image.shape[:2]], np.float32)}, {})

    def infer(self, inputs):
        return {"out": inputs["x"].copy()}

    def postprocess(self, raw, meta):
        h, w = raw["out"][0]
        return panoptic_of(int(h), int(w))


@pytest.fixture(scope="module")
def server():
    with Server({"pan": FakePanoptic()}) as s:
        yield s


def test_contract_tensors_follow_the_metadata():
    preds = [panoptic_of(4, 6), panoptic_of(4, 6)]
    tensors = to_tensors("panoptic_segmentation", preds)
    assert [t.name for t in tensors] == [o["name"] for o in output_types("panoptic_segmentation")]
    seg, info = tensors
    assert seg.datatype == "INT32" and seg.data.shape == (2, 4, 6) and seg.data.dtype == np.int32
    assert (seg.data[1] == preds[1].panoptic_seg).all()
    first = json.loads(info.data[0])
    assert first == [{"id": 1, "category_id": 0, "category_name": "person", "isthing": True, "area": 6, "score": 0.875},
                     {"id": 2, "category_id": 3, "category_name": "sky", "isthing": False, "area": 6}]


def test_images_of_different_sizes_in_one_request_are_refused_by_name():
    from vdeploy.errors import UserError

    with pytest.raises(UserError, match="one size per request.*4x6, 5x6"):
        to_tensors("panoptic_segmentation", [panoptic_of(4, 6), panoptic_of(5, 6)])


def test_json_answer_gives_the_map_back_losslessly():
    pred = panoptic_of(8, 10)
    answer = json.loads(json.dumps(to_json("panoptic_segmentation", pred, ["person"])))
    assert answer["image_size"] == [8, 10]
    rebuilt = np.zeros((8, 10), np.int32)
    for s in answer["segments"]:
        rebuilt[mask_util.decode(s["segmentation"]).astype(bool)] = s["id"]
    assert (rebuilt == pred.panoptic_seg).all()


def test_open_inference_protocol_answer(server):
    (a, _), (b, _) = png(12, 16, 1), png(12, 16, 2)
    r = infer(http.InferenceServerClient(server.url), "pan", [a, b])
    seg = r.as_numpy("panoptic_seg")
    assert seg.dtype == np.int32 and seg.shape == (2, 12, 16)
    assert (seg[0] == panoptic_of(12, 16).panoptic_seg).all()
    info = [json.loads(x) for x in r.as_numpy("segments_info")]
    assert [[(s["id"], s["category_name"], s["area"]) for s in i] for i in info] == [[(1, "person", 48), (2, "sky", 48)]] * 2
    meta = http.InferenceServerClient(server.url).get_model_metadata("pan")
    assert [o["name"] for o in meta["outputs"]] == ["panoptic_seg", "segments_info"]


def test_open_inference_protocol_refuses_mixed_sizes_with_400(server):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="one size per request") as e:
        infer(http.InferenceServerClient(server.url), "pan", [png(12, 16, 1)[0], png(10, 16, 2)[0]])
    assert str(e.value.status()) == "400"


def test_torchserve_route_answers_segments_with_rle(server):
    blob, _ = png(6, 9, 3)
    status, _, body = post(f"{server.url}/predictions/pan", blob)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["image_size"] == [6, 9]
    person, sky = answer["segments"]
    assert person["isthing"] and person["score"] == 0.875 and "score" not in sky
    assert mask_util.decode(person["segmentation"]).sum() == person["area"] == 12
    assert mask_util.decode(sky["segmentation"]).sum() == sky["area"] == 15
