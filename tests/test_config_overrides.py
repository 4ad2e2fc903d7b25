"""--opts (detectron2 style) and --cfg-options (MMSegmentation style) on the commands that read a
config: read as data with each framework's own rules, refused in one line when wrong."""
import pytest

from conftest import GOLDENS, run_cli
from vdeploy.errors import ConfigError
from vdeploy.frameworks.overrides import apply_cfg_options, apply_opts, literal, mmengine_value

D2 = GOLDENS / "detectron2" / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"
MMSEG = GOLDENS / "mmseg" / "configs" / "fcn" / "fcn_r50-d8_4xb4-40k_pascal-context-59-480x480.py"


def test_detectron2_opts_follow_merge_from_list():
    cfg = {"MODEL": {"ROI_HEADS": {"SCORE_THRESH_TEST": 0.05, "NUM_CLASSES": 80}}, "INPUT": {"MIN_SIZE_TEST": 800,
                                                                                             "MIN_SIZE_TRAIN": [800]}}
    out = apply_opts(cfg, [("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5"), ("INPUT.MIN_SIZE_TRAIN", "(640, 672)")], "x.yaml")
    assert out["MODEL"]["ROI_HEADS"]["SCORE_THRESH_TEST"] == 0.5 and out["INPUT"]["MIN_SIZE_TRAIN"] == [640, 672]
    assert cfg["MODEL"]["ROI_HEADS"]["SCORE_THRESH_TEST"] == 0.05  # the input is not changed
    with pytest.raises(ConfigError, match="no such key"):
        apply_opts(cfg, [("MODEL.ROI_HEADS.SCORE_TRESH_TEST", "0.5")], "x.yaml")
    with pytest.raises(ConfigError, match="must be a int"):
        apply_opts(cfg, [("MODEL.ROI_HEADS.NUM_CLASSES", "many")], "x.yaml")
    assert literal("__import__('os').system('x')") == "__import__('os').system('x')"  # a string, never run


def test_mmseg_cfg_options_follow_mmengine():
    assert mmengine_value("1") == 1 and mmengine_value("0.5") == 0.5 and mmengine_value("True") is True
    assert mmengine_value("[1,2,(3,4)]") == [1, 2, (3, 4)] and mmengine_value("a,b") == ["a", "b"]
    assert mmengine_value("None") is None and mmengine_value("whole") == "whole"
    out = apply_cfg_options({"model": {"test_cfg": {"mode": "slide"}}}, [("model.test_cfg.mode", "whole"),
                                                                           ("model.decode_head.num_classes", "19")], "c.py")
    assert out == {"model": {"test_cfg": {"mode": "whole"}, "decode_head": {"num_classes": 19}}}


def test_config_show_applies_overrides_and_diffs_mmseg_against_its_bases():
    if not D2.is_file() or not MMSEG.is_file():
        pytest.skip("goldens configs are absent")
    r = run_cli("config", "show", D2, "--diff", "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.7")
    assert r.returncode == 0 and "SCORE_THRESH_TEST: 0.7" in r.stdout, r.stderr
    r = run_cli("config", "show", D2, "--opts", "MODEL.NO_SUCH_KEY", "1")
    assert r.returncode == 2 and "no such key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("config", "show", MMSEG, "--diff", "--cfg-options", "model.decode_head.num_classes=21")
    assert r.returncode == 0 and "num_classes: 21" in r.stdout, r.stderr
    assert "optimizer" in r.stdout and "data_root" not in r.stdout  # what the file itself changes, not its bases


def test_export_refuses_overrides_for_a_model_without_a_config(tmp_path):
    r = run_cli("export", "torchvision:resnet18", "--opts", "A", "1", "--out", tmp_path / "b")
    assert r.returncode == 2 and "have none" in r.stderr and not (tmp_path / "b").exists()


def test_build_model_takes_overrides(tmp_path):
    pytest.importorskip("torch")
    if not D2.is_file():
        pytest.skip("goldens configs are absent")
    from vdeploy.frameworks import build_model

    dm = build_model(str(D2), None, config_overrides=[("INPUT.MIN_SIZE_TEST", "640"), ("MODEL.RESNETS.DEPTH", "50")])
    assert dm.spec["preprocess"]["resize"]["min_size"] == 640
