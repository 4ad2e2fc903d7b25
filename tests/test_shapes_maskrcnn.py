"""The demo's trained detectron2 Mask R-CNN (demo/shapes/, made by scripts/train_maskrcnn.py):
its shipped checkpoint is in detectron2's layout and loads key for key, and the exported model
really segments: segm AP against the ground truth of freshly generated held-out scenes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "demo" / "shapes" / "mask_rcnn_R_50_narrow_FPN_shapes.yaml"
WEIGHTS = CONFIG.with_name("model_final.pth")
sys.path.insert(0, str(ROOT / "scripts"))


def test_checkpoint_is_detectron2_layout_and_loads_every_key():
    from vdeploy.frameworks import build_model
    from vdeploy.frameworks.checkpoint import load_checkpoint

    assert WEIGHTS.is_file(), f"{WEIGHTS} is not shipped; run scripts/train_maskrcnn.py"
    assert WEIGHTS.stat().st_size < 20e6
    raw = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(raw) >= {"model"} and all(isinstance(v, torch.Tensor) for v in raw["model"].values())
    dm = build_model(str(CONFIG), str(WEIGHTS))
    own = dm.module.state_dict()
    ckpt = load_checkpoint(str(WEIGHTS))
    assert ckpt.container == "model"
    assert set(ckpt.state_dict) == set(own)  # no missing, no unexpected key
    for k, v in ckpt.state_dict.items():  # and the loader put each tensor in its place
        assert torch.equal(own[k].float(), v.float()), k
    assert dm.provenance["weights"] == str(WEIGHTS)
    assert any(k.startswith("backbone.bottom_up.res5.") for k in own)  # detectron2's names


def test_segm_ap_on_fresh_held_out_scenes_through_onnxruntime(tmp_path):
    from vdeploy.eval.synthetic import make_coco

    bundle = tmp_path / "bundle"
    # a seed used neither by the training stream nor by the demo's evaluation set
    ann = make_coco(tmp_path / "ds", n=20, seed=31337, size=(256, 256), hard=True)
    for args in (["export", CONFIG, "--weights", WEIGHTS, "--format", "onnx", "--out", bundle, "--no-verify"],
                 ["eval", bundle, "--dataset", ann, "--backends", "onnxruntime", "--out", tmp_path / "ev",
                  "--no-progress"]):
        r = subprocess.run([sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True,
                           timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "ev" / "report.json").read_text())["backends"]["onnxruntime"]
    assert metrics["segm/AP"] >= 0.7, metrics
    assert metrics["bbox/AP"] >= 0.7, metrics


def test_box_encoding_inverts_the_models_decoding():
    from maskrcnn_losses import get_deltas
    from vdeploy.models.detectron2.box_ops import Box2BoxTransform

    g = torch.Generator().manual_seed(0)
    src = torch.rand(50, 2, generator=g) * 100
    src = torch.cat([src, src + 5 + torch.rand(50, 2, generator=g) * 60], 1)
    dst = torch.cat([src[:, :2] + torch.randn(50, 2, generator=g) * 3, src[:, 2:] + torch.randn(50, 2, generator=g) * 3], 1)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        back = Box2BoxTransform(weights).apply_deltas(get_deltas(src, dst, weights), src)
        assert torch.allclose(back, dst, atol=1e-3)


def test_matcher_thresholds_and_low_quality_matches():
    from maskrcnn_losses import match, subsample

    iou = torch.tensor([[0.9, 0.5, 0.1, 0.0],
                        [0.0, 0.2, 0.25, 0.1]])
    idx, lab = match(iou, [0.3, 0.7], [0, -1, 1], allow_low_quality=False)
    assert lab.tolist() == [1, -1, 0, 0] and idx.tolist() == [0, 0, 1, 1]
    # the second box's best prediction (0.25, below every threshold) becomes foreground
    _, lab = match(iou, [0.3, 0.7], [0, -1, 1], allow_low_quality=True)
    assert lab.tolist() == [1, -1, 1, 0]
    pos, neg = subsample(torch.tensor([1, 1, 1, 0, 0, 0, 0, -1]), 4, 0.5, torch.Generator().manual_seed(0))
    assert len(pos) == 2 and len(neg) == 2 and set(pos.tolist()) <= {0, 1, 2} and set(neg.tolist()) <= {3, 4, 5, 6}
