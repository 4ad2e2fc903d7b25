"""A detectron2 model exported at a fixed letterbox size predicts what detectron2 predicts."""
import json

import numpy as np
import pytest

from coco_ap import ap_against

CONFIG = "detectron2/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


@pytest.fixture(scope="module")
def checkpoint(goldens, module_tmp):
    import subprocess
    import sys

    out = module_tmp.mktemp("lb") / "model_final.pth"
    subprocess.run([sys.executable, str(goldens.parent / "acceptance" / "make_ckpt.py"),
                    str(goldens / "detectron2" / "mask_rcnn_R_50_FPN_3x"), str(out)], check=True, capture_output=True)
    return out


def test_letterbox_bundle_matches_detectron2(goldens, checkpoint, tmp_path):
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model
    from vdeploy.runtime.io import read_image
    from vdeploy.runtime.predictor import Predictor
    from vdeploy.runtime.results import to_coco_results

    dm = build_model(str(goldens / CONFIG), str(checkpoint), input_size=(1344, 1344))
    bundle = export_bundle(dm, tmp_path / "b", ["onnx"], log=lambda *a: None)
    assert bundle.meta["input_size"] == [1344, 1344] and bundle.meta["inputs"][0]["shape"] == [1, 3, 1344, 1344]
    p = Predictor(bundle.path, "onnxruntime")
    ref = [r for r in json.loads((goldens / "detectron2/mask_rcnn_R_50_FPN_3x/final.json").read_text())
           if r["image"] == "chelsea.png"]
    for r in ref:  # final.json boxes are x1 y1 x2 y2
        r["file_name"], (x1, y1, x2, y2) = r["image"], r["bbox"]
        r["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    pred = p.predict(read_image(goldens / "images" / "chelsea.png"))
    got = to_coco_results(pred, "chelsea.png")
    # the canvas is 1344x1344 but the graph sees what detectron2's ImageList holds: same detections
    assert ap_against(ref, got, "bbox") >= 0.99 and ap_against(ref, got, "segm") >= 0.99
    assert np.all(pred.boxes[:, 2] <= 451) and np.all(pred.boxes[:, 3] <= 300)
