"""Checkpoint reading: every supported container and format, and refusal of files that would run code."""
import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from vdeploy.errors import CheckpointError
from vdeploy.frameworks.checkpoint import load_checkpoint, load_into_module
from vdeploy.frameworks.detectron2.checkpoint import checkpoint_style, detectron2_state_dict, place_in_model


class _Payload:
    """Unpickling this runs `touch <marker>`: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _sd():
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.randn(4, generator=g),
            "bn.num_batches_tracked": torch.tensor(7)}


@pytest.mark.parametrize("container", ["model", "state_dict", None])
def test_torch_containers(tmp_path, container):
    sd = _sd()
    obj = {container: sd, "optimizer": {"state": {}}, "iteration": 3} if container else sd
    if container == "state_dict":
        obj["meta"] = {"dataset_meta": {"classes": ["a", "b"]}}
    torch.save(obj, tmp_path / "c.pth")
    ckpt = load_checkpoint(tmp_path / "c.pth")
    assert ckpt.format == "torch" and ckpt.container == container
    assert set(ckpt.state_dict) == set(sd) and all(torch.equal(ckpt.state_dict[k], sd[k]) for k in sd)
    assert len(ckpt.sha256) == 64
    if container == "state_dict":
        assert ckpt.meta["dataset_meta"]["classes"] == ["a", "b"]
    if container == "model":
        assert ckpt.meta == {"iteration": 3}


def test_legacy_torch_format(tmp_path):
    torch.save({"model": _sd()}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert set(load_checkpoint(tmp_path / "old.pth").state_dict) == set(_sd())


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_payload_in_torch_file_is_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle posix\.system") as e:
        load_checkpoint(tmp_path / "evil.pth")
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_pickle_payload_in_pkl_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "x": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="refusing to unpickle posix.system"):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_model_zoo_pkl_round_trip(tmp_path, protocol):
    arrays = {"backbone.bottom_up.stem.conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
              "roi_heads.box_predictor.cls_score.bias": np.array([1.5, -2.0], dtype=np.float32),
              "counter": np.int64(3) * np.ones((), dtype=np.int64)}
    data = {"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    ckpt = load_checkpoint(tmp_path / "m.pkl")
    assert ckpt.format == "pickle" and ckpt.meta["__author__"] == "Detectron2 Model Zoo"
    for k, v in arrays.items():
        assert isinstance(ckpt.state_dict[k], torch.Tensor)
        np.testing.assert_array_equal(ckpt.state_dict[k].numpy(), v)
        assert ckpt.state_dict[k].numpy().dtype == v.dtype


def test_caffe2_blobs_pkl_drops_momentum(tmp_path):
    blobs = {"conv1_w": np.ones((64, 3, 7, 7), np.float32), "conv1_w_momentum": np.ones((64, 3, 7, 7), np.float32)}
    (tmp_path / "c2.pkl").write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    assert list(load_checkpoint(tmp_path / "c2.pkl").state_dict) == ["conv1_w"]


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v for k, v in _sd().items()}
    save_file(sd, str(tmp_path / "w.safetensors"), metadata={"note": "x"})
    ckpt = load_checkpoint(tmp_path / "w.safetensors")
    assert ckpt.format == "safetensors" and ckpt.meta == {"note": "x"}
    assert all(torch.equal(ckpt.state_dict[k], sd[k]) for k in sd)


def test_damaged_and_missing_files(tmp_path):
    torch.save({"model": _sd()}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.bin").write_bytes(b"definitely not a checkpoint")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps({"model": {"a": np.zeros(10)}}, protocol=2)[:40])
    for name, pattern in [("cut.pth", "truncated or corrupt"), ("junk.bin", "unknown checkpoint format"),
                          ("cut.pkl", "truncated or corrupt"), ("absent.pth", "no such checkpoint")]:
        with pytest.raises(CheckpointError, match=pattern) as e:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_non_weight_content_is_refused(tmp_path):
    torch.save({"model": {"w": "text"}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_checkpoint(tmp_path / "odd.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a dict of weights"):
        load_checkpoint(tmp_path / "list.pth")


def test_load_into_module(caplog):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sd = {"0.weight": np.full((4, 3, 3, 3), 0.5, np.float32), "0.bias": torch.arange(4.0),
          "1.weight": torch.ones(4), "extra.weight": torch.ones(1), "aux.head": torch.ones(2)}
    with caplog.at_level(logging.WARNING, logger="vdeploy"):
        report = load_into_module(module, sd, ignore=("aux.",))
    assert torch.equal(module[0].bias.data, torch.arange(4.0)) and float(module[0].weight.data[0, 0, 0, 0]) == 0.5
    assert report.unexpected == ["extra.weight"]
    assert set(report.missing) == {"1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert len([r for r in caplog.records if r.name == "vdeploy"]) == 1


def test_load_into_module_shape_mismatch():
    module = torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match=r"weight has shape \(3, 5\), the model expects \(3, 4\)"):
        load_into_module(module, {"weight": torch.zeros(3, 5), "bias": torch.zeros(3)})


# --------------------------------------------------------------------------- detectron2 names

def _caffe2_name(key: str) -> str:
    """The Detectron (Caffe2) blob name of a detectron2 FPN Mask R-CNN weight (written independently
    of the converter, from Detectron's naming conventions)."""
    parts = key.split(".")
    leaf = {"weight": "w", "bias": "b"}
    if parts[-2] == "norm":
        norm_leaf = {"weight": "bn_s", "bias": "bn_b", "running_mean": "bn_rm", "running_var": "bn_riv"}[parts[-1]]
        module, suffix = parts[:-2], norm_leaf
    else:
        module, suffix = parts[:-1], leaf[parts[-1]]
    m = ".".join(module)
    if m == "backbone.bottom_up.stem.conv1":
        return "res_conv1_" + suffix if parts[-2] == "norm" else "conv1_" + suffix
    if m.startswith("backbone.bottom_up.res"):
        stage, block, conv = module[2][3:], module[3], module[4]
        branch = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}[conv]
        return f"res{stage}_{block}_{branch}_{suffix}"
    last_block = {2: 2, 3: 3, 4: 5, 5: 2}
    if m.startswith("backbone.fpn_lateral"):
        s = int(m[-1])
        return f"fpn_inner_res{s}_{last_block[s]}_sum{'' if s == 5 else '_lateral'}_{suffix}"
    if m.startswith("backbone.fpn_output"):
        s = int(m[-1])
        return f"fpn_res{s}_{last_block[s]}_sum_{suffix}"
    simple = {"proposal_generator.rpn_head.conv": "conv_rpn_fpn2",
              "proposal_generator.rpn_head.anchor_deltas": "rpn_bbox_pred_fpn2",
              "proposal_generator.rpn_head.objectness_logits": "rpn_cls_logits_fpn2",
              "roi_heads.box_head.fc1": "fc6", "roi_heads.box_head.fc2": "fc7",
              "roi_heads.box_predictor.cls_score": "cls_score", "roi_heads.box_predictor.bbox_pred": "bbox_pred",
              "roi_heads.mask_head.deconv": "conv5_mask", "roi_heads.mask_head.predictor": "mask_fcn_logits"}
    if m in simple:
        return f"{simple[m]}_{suffix}"
    if m.startswith("roi_heads.mask_head.mask_fcn"):
        return f"_[mask]_fcn{m[-1]}_{suffix}"
    raise AssertionError(f"no Caffe2 name for {key}")


def test_caffe2_names_of_the_golden_mask_rcnn(goldens):
    manifest = json.loads((goldens / "detectron2/mask_rcnn_R_50_FPN_3x/manifest.json").read_text())
    keys = {k: tuple(shape) for k, shape in manifest["keys"]}
    num_classes = keys["roi_heads.box_predictor.cls_score.weight"][0] - 1
    g = torch.Generator().manual_seed(0)
    c2, expected = {}, {}
    for key, shape in keys.items():
        value = torch.randn(shape, generator=g) if len(shape) else torch.zeros(())
        expected[key] = value
        if key.endswith(("running_mean", "running_var")):
            continue  # Caffe2 frozen BN (AffineChannel) has none: mean 0 / var 1 are filled in
        if key.endswith("cls_score.weight") or key.endswith("cls_score.bias"):
            value = torch.cat([value[-1:], value[:-1]])  # Detectron: background first
        if ".bbox_pred." in key or "mask_head.predictor" in key:
            width = 4 if ".bbox_pred." in key else 1
            value = torch.cat([torch.full((width, *value.shape[1:]), 99.0), value])  # background rows
        c2[_caffe2_name(key)] = value
    assert checkpoint_style(c2) == "caffe2"
    assert {"res2_0_branch2a_w", "conv1_w", "fpn_inner_res5_2_sum_w", "rpn_cls_logits_fpn2_w", "cls_score_w",
            "bbox_pred_w", "_[mask]_fcn1_w"} <= set(c2)
    out = detectron2_state_dict(c2)
    assert set(out) == set(keys)
    assert out["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4 * num_classes
    for key, value in expected.items():
        if key.endswith("running_mean"):
            assert torch.equal(out[key], torch.zeros(keys[key]))
        elif key.endswith("running_var"):
            assert torch.equal(out[key], torch.ones(keys[key]))
        else:
            assert torch.equal(out[key], value), key


def test_detectron2_names_pass_through_and_ddp_prefix_is_removed():
    sd = {"module.backbone.bottom_up.stem.conv1.weight": torch.ones(1)}
    assert list(detectron2_state_dict(sd)) == ["backbone.bottom_up.stem.conv1.weight"]


def test_imagenet_backbones_are_placed_by_suffix():
    tv = {"conv1.weight": torch.ones(64, 3, 7, 7), "bn1.running_var": torch.ones(64),
          "layer1.0.downsample.1.weight": torch.ones(256), "layer4.2.bn3.bias": torch.ones(2048)}
    model_keys = ["backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.running_var",
                  "backbone.bottom_up.res2.0.shortcut.norm.weight", "backbone.bottom_up.res5.2.conv3.norm.bias"]
    assert list(detectron2_state_dict(tv, model_keys=model_keys)) == model_keys
    c2 = {"res5_0_branch2a_w": torch.ones(1), "res4_0_branch2a_w": torch.ones(1)}  # C4: res5 is in the ROI heads
    placed = detectron2_state_dict(c2, model_keys=["backbone.res4.0.conv1.weight", "roi_heads.res5.0.conv1.weight"])
    assert set(placed) == {"backbone.res4.0.conv1.weight", "roi_heads.res5.0.conv1.weight"}
    with pytest.raises(CheckpointError, match="fits several"):
        place_in_model({"conv1.weight": torch.ones(1)}, ["a.conv1.weight", "b.conv1.weight"])
