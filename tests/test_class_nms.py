"""The R-CNN box head's per-class NMS: exported as one ONNX NonMaxSuppression with the class as
its batch axis (vdeploy/models/detectron2/class_nms.py), it keeps on onnxruntime and OpenVINO
exactly the detections detectron2's eager `batched_nms` keeps, in the same order, and an LVIS-size
head (1203 classes, score threshold 1e-4) no longer makes a quadratic NMS in the graph."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from vdeploy.models.detectron2.roi_heads import fast_rcnn_inference  # noqa: E402


class Head(torch.nn.Module):
    def __init__(self, score_thresh, topk, agnostic=False):
        super().__init__()
        self.score_thresh, self.topk, self.agnostic = score_thresh, topk, agnostic

    def forward(self, boxes, probs, hw):
        return fast_rcnn_inference(boxes, probs, hw, score_thresh=self.score_thresh, nms_thresh=0.5,
                                   topk_per_image=self.topk)


def candidates(r, k, seed, agnostic=False):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(r, 1, 2, generator=g) * 200 + 20   # crowded: many overlaps per class
    size = torch.rand(r, 1 if agnostic else k, 2, generator=g) * 60 + 10
    jitter = torch.randn(r, 1 if agnostic else k, 2, generator=g) * 4
    boxes = torch.cat([centre + jitter - size / 2, centre + jitter + size / 2], dim=2)
    probs = torch.softmax(torch.randn(r, k + 1, generator=g) * 3, dim=1)
    return boxes.reshape(r, -1), probs, torch.tensor([240.0, 250.0])


def run_onnx(head, args, path):
    torch.onnx.export(head, args, str(path), dynamo=False, opset_version=17, input_names=["boxes", "probs", "hw"],
                      output_names=["b", "s", "c"], dynamic_axes={"boxes": {0: "r"}, "probs": {0: "r"}})
    feeds = {n: a.numpy() for n, a in zip(["boxes", "probs", "hw"], args)}
    outs = {"onnxruntime": ort.InferenceSession(str(path)).run(None, feeds)}
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(path), "CPU")
    res = compiled(feeds)
    outs["openvino"] = [res[o] for o in compiled.outputs]
    return outs


@pytest.mark.parametrize("r, k, thresh, topk, agnostic", [(300, 30, 0.02, 100, False), (200, 12, 0.05, -1, False),
                                                         (150, 20, 0.01, 50, True)])
def test_exported_per_class_nms_keeps_what_eager_keeps(tmp_path, r, k, thresh, topk, agnostic):
    head = Head(thresh, topk, agnostic)
    train = candidates(r, k, seed=0, agnostic=agnostic)
    other = candidates(r // 2 + 7, k, seed=1, agnostic=agnostic)   # another candidate count than traced
    with torch.no_grad():
        want = [t.numpy() for t in head(*other)]
        outs = run_onnx(head, train, tmp_path / "head.onnx")
    assert len(want[0]) > 20
    got = ort.InferenceSession(str(tmp_path / "head.onnx")).run(None, {n: a.numpy() for n, a in
                                                                       zip(["boxes", "probs", "hw"], other)})
    np.testing.assert_array_equal(got[2], want[2])   # onnxruntime at a candidate count not traced
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    with torch.no_grad():
        traced_want = [t.numpy() for t in head(*train)]
    for name, res in outs.items():
        np.testing.assert_array_equal(res[2], traced_want[2], err_msg=name)
        np.testing.assert_allclose(res[1], traced_want[1], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(res[0], traced_want[0], atol=1e-3, err_msg=name)


def test_lvis_size_head_selects_per_class(tmp_path):
    """1000 proposals x 1203 classes at threshold 1e-4 (LVIS): the graph holds one NMS whose batch
    axis is the class, so each NMS sees at most the 1000 proposals of one class, never the
    candidates of all classes at once (with untrained weights, all 1.2 million pass 1e-4, which
    made the traced coordinate-trick NMS run for hours)."""
    import onnx

    head = Head(1e-4, 300)
    boxes, _, hw = candidates(1000, 1203, seed=2)
    probs = torch.softmax(torch.randn(1000, 1204, generator=torch.Generator().manual_seed(3)) * 6, dim=1)
    with torch.no_grad():
        want = [t.numpy() for t in head(boxes, probs, hw)]
    outs = run_onnx(head, (boxes, probs, hw), tmp_path / "lvis.onnx")
    assert want[0].shape == (300, 4)
    for name, res in outs.items():
        np.testing.assert_array_equal(res[2], want[2], err_msg=name)
        np.testing.assert_allclose(res[1], want[1], rtol=1e-6, err_msg=name)
    graph = onnx.load(str(tmp_path / "lvis.onnx")).graph
    nms = [n for n in graph.node if n.op_type == "NonMaxSuppression"]
    feeders = {o: n for n in graph.node for o in n.output}
    # its boxes are the [R, K, 4] class boxes transposed to [K, R, 4]: the class is the batch
    assert len(nms) == 1 and list(feeders[nms[0].input[0]].attribute[0].ints) == [1, 0, 2]
