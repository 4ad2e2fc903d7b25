"""vdeploy config show / migrate on the goldens configs."""
import pytest
import yaml

from vdeploy.cli import main
from vdeploy.frameworks.detectron2.config import load_config


def test_show_resolved_and_diff(goldens, capsys):
    cfg_path = goldens / "detectron2/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    assert main(["config", "show", str(cfg_path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == load_config(cfg_path)
    assert main(["config", "show", str(cfg_path), "--diff"]) == 0
    diff = yaml.safe_load(capsys.readouterr().out)
    assert diff["MODEL"]["MASK_ON"] is True and "PIXEL_MEAN" not in diff["MODEL"] and "VERSION" not in diff


def test_show_picks_fastreid_defaults(goldens, capsys):
    assert main(["config", "show", str(goldens / "fastreid/configs/Market1501/bagtricks_R50.yml"), "--diff"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["MODEL"]["HEADS"]["WITH_BNNECK"] is True and "fast-reid" in out.err


def test_show_centermask2_with_extra_defaults(goldens, capsys):
    path = goldens / "centermask2/configs/centermask/centermask_V_39_eSE_FPN_ms_3x.yaml"
    assert main(["config", "show", str(path), "--extra-defaults", str(goldens / "centermask2/configs/defaults.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["MODEL"]["VOVNET"]["CONV_BODY"] == "V-39-eSE"


def test_show_mmseg_python_config(goldens, capsys):
    pytest.importorskip("vdeploy.frameworks.mmseg.config")
    path = sorted((goldens / "mmseg/configs").glob("fcn/*.py"))[0]
    assert main(["config", "show", str(path)]) == 0
    assert "decode_head" in yaml.safe_load(capsys.readouterr().out)["model"]


def test_python_tag_refused(tmp_path, capsys):
    (tmp_path / "evil.yaml").write_text(f'MODEL:\n  MASK_ON: !!python/object/apply:os.system ["touch {tmp_path}/x"]\n')
    assert main(["config", "show", str(tmp_path / "evil.yaml")]) == 2
    assert "could run code" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_migrate_writes_atomically_and_reports(goldens, tmp_path, capsys):
    out = tmp_path / "old.yaml"
    out.write_text("previous\n")
    dump = goldens / "detectron2/mask_rcnn_R_50_FPN_3x/config_dump.yaml"
    assert main(["config", "migrate", str(dump), "--to", "v0.2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "dropped FLOAT32_PRECISION" in err and "dropped MODEL.RPN.BBOX_REG_LOSS_TYPE" in err
    migrated = yaml.safe_load(out.read_text())
    assert "BBOX_REG_LOSS_TYPE" not in migrated["MODEL"]["RPN"] and migrated["MODEL"]["MASK_ON"] is True
    assert main(["config", "migrate", str(dump), "--to", "v7", "--out", str(out)]) == 2
    assert yaml.safe_load(out.read_text()) == migrated  # a failed run leaves the previous output
