"""detectron2-style YAML configs: merging like detectron2, every goldens config, refusals, migration."""
import json
import logging
from pathlib import Path

import pytest
import yaml

from vdeploy.errors import ConfigError
from vdeploy.frameworks.detectron2.config import (config_to_yaml, diff_from_defaults, load_config, load_defaults,
                                                  migrate_config, read_yaml)

D2_CASES = ("mask_rcnn_R_50_FPN_3x", "faster_rcnn_R_50_FPN_3x", "retinanet_R_50_FPN_3x", "cascade_mask_rcnn_R_50_FPN_3x")


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _family_defaults(goldens, family):
    if family == "centermask2":
        return {"extra_defaults": goldens / "centermask2/configs/defaults.yaml"}
    if family == "fastreid":
        return {"base_defaults": goldens / "fastreid/configs/defaults.yaml"}
    return {}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("family", ["detectron2", "centermask2", "fastreid"])
def test_every_goldens_config_and_dump_loads(goldens, family):
    files = [p for p in (goldens / family).rglob("*.y*ml") if p.name != "defaults.yaml"]
    assert len(files) >= 3
    for path in files:
        cfg = load_config(path, **_family_defaults(goldens, family))
        assert isinstance(cfg["MODEL"], dict) and "_BASE_" not in cfg, path


@pytest.mark.parametrize("family,case", [("detectron2", c) for c in D2_CASES] +
                         [("centermask2", "centermask_V_39_eSE_FPN_ms_3x"), ("fastreid", "bagtricks_R50")])
def test_merge_equals_the_frameworks_own_dump(goldens, family, case):
    """The `_BASE_` chain merged over the defaults gives what the real framework dumped, key by key."""
    manifest = json.loads((goldens / family / case / "manifest.json").read_text())
    cfg = dict(_flat(load_config(goldens / family / "configs" / manifest["config"], **_family_defaults(goldens, family))))
    dump = dict(_flat(read_yaml(goldens / family / case / "config_dump.yaml")))
    assert set(cfg) == set(dump)
    set_by_the_golden_maker = {"MODEL.DEVICE", "MODEL.BACKBONE.PRETRAIN"}
    differ = {k for k in dump if cfg[k] != dump[k]} - set_by_the_golden_maker
    assert not differ, {k: (cfg[k], dump[k]) for k in differ}
    model_input = [k for k in dump if k.startswith(("MODEL.", "INPUT."))]
    assert len(model_input) > 50


def test_retinanet_anchor_sizes_arithmetic_tag(goldens):
    cfg = load_config(goldens / "detectron2/configs/COCO-Detection/retinanet_R_50_FPN_3x.yaml")
    sizes = cfg["MODEL"]["ANCHOR_GENERATOR"]["SIZES"]
    assert sizes[1] == [64, 64 * 2 ** (1.0 / 3), 64 * 2 ** (2.0 / 3)] and len(sizes) == 5


def test_python_tag_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    _write(tmp_path / "Base.yaml", "MODEL:\n  MASK_ON: False\n")
    evil = _write(tmp_path / "cfg/evil.yaml",
                  f'_BASE_: "../Base.yaml"\nMODEL:\n  MASK_ON: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="uses a YAML tag that could run code; refused") as e:
        load_config(evil)
    assert "\n" not in str(e.value) and not marker.exists()
    sneaky = _write(tmp_path / "eval.yaml", 'MODEL:\n  PIXEL_STD: !!python/object/apply:eval '
                    f'["__import__(\'os\').system(\'touch {marker}\')"]\n')
    with pytest.raises(ConfigError, match="could run code"):
        load_config(sneaky)
    assert not marker.exists()


def test_yacs_semantics(tmp_path):
    path = _write(tmp_path / "c.yaml", "MODEL:\n  RPN:\n    NMS_THRESH: 1\n  ROI_HEADS:\n    NUM_CLASSES: 3\n"
                                       "SOLVER:\n  STEPS: (10, 20)\nINPUT:\n  MIN_SIZE_TEST: 0\n")
    cfg = load_config(path)
    assert cfg["MODEL"]["RPN"]["NMS_THRESH"] == 1.0 and isinstance(cfg["MODEL"]["RPN"]["NMS_THRESH"], float)
    assert cfg["SOLVER"]["STEPS"] == [10, 20] and cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 3
    bad = _write(tmp_path / "bad.yaml", "MODEL:\n  MASK_ON: yes please\n")
    with pytest.raises(ConfigError, match="MODEL.MASK_ON must be a bool"):
        load_config(bad)


def test_unknown_keys(tmp_path, caplog):
    newer = _write(tmp_path / "newer.yaml", "DATALOADER:\n  REPEAT_SOMETHING: true\nSOLVER:\n  NEW_THING: 1\n"
                                            "MODEL:\n  ROI_HEADS:\n    FED_LOSS_X: 2\nFLOAT32_PRECISION_V2: high\n")
    with caplog.at_level(logging.WARNING, logger="vdeploy"):
        cfg = load_config(newer)
    assert "NEW_THING" not in cfg["SOLVER"] and "FED_LOSS_X" not in cfg["MODEL"]["ROI_HEADS"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "vdeploy"]
    assert len(warnings) == 1 and "SOLVER.NEW_THING" in warnings[0] and "MODEL.ROI_HEADS.FED_LOSS_X" in warnings[0]
    for text, key in [("MODEL:\n  RESNETS:\n    NEW_BLOCK: 3\n", "MODEL.RESNETS.NEW_BLOCK"),
                      ("INPUT:\n  RESIZE_MODE: x\n", "INPUT.RESIZE_MODE")]:
        with pytest.raises(ConfigError, match=f"unknown config key {key}"):
            load_config(_write(tmp_path / "u.yaml", text))


def test_base_chains(tmp_path):
    _write(tmp_path / "a/base.yaml", "MODEL:\n  MASK_ON: True\n  RESNETS:\n    DEPTH: 101\n")
    _write(tmp_path / "a/b/mid.yaml", '_BASE_: "../base.yaml"\nMODEL:\n  RESNETS:\n    DEPTH: 50\n')
    top = _write(tmp_path / "top.yaml", '_BASE_: "a/b/mid.yaml"\nMODEL:\n  KEYPOINT_ON: True\n')
    cfg = load_config(top)
    assert cfg["MODEL"]["MASK_ON"] and cfg["MODEL"]["KEYPOINT_ON"] and cfg["MODEL"]["RESNETS"]["DEPTH"] == 50
    _write(tmp_path / "x.yaml", '_BASE_: "y.yaml"\n')
    _write(tmp_path / "y.yaml", '_BASE_: "x.yaml"\n')
    with pytest.raises(ConfigError, match="_BASE_ cycle"):
        load_config(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(_write(tmp_path / "z.yaml", '_BASE_: "missing.yaml"\n'))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path / "broken.yaml", "MODEL: [\n"))


def test_version_1_names_are_upgraded(tmp_path):
    old = _write(tmp_path / "v1.yaml", "MODEL:\n  WEIGHT: w.pkl\n  ROI_HEADS:\n    SCORE_THRESH: 0.3\n"
                                       "  RPN:\n    ANCHOR_SIZES: [[16], [32]]\n")
    cfg = load_config(old)
    assert cfg["MODEL"]["WEIGHTS"] == "w.pkl" and cfg["MODEL"]["ROI_HEADS"]["SCORE_THRESH_TEST"] == 0.3
    assert cfg["MODEL"]["ANCHOR_GENERATOR"]["SIZES"] == [[16], [32]] and cfg["VERSION"] == 2


def test_yaml_and_diff_round_trip(goldens):
    defaults = load_defaults()
    cfg = load_config(goldens / "detectron2/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert yaml.safe_load(config_to_yaml(cfg)) == cfg
    diff = diff_from_defaults(cfg, defaults)
    assert diff["MODEL"]["MASK_ON"] is True and "PIXEL_STD" not in diff["MODEL"]
    assert diff["MODEL"]["BACKBONE"] == {"NAME": "build_resnet_fpn_backbone"}


def test_migrate_back_and_forth():
    cfg = load_defaults()
    cfg["MODEL"]["ROI_BOX_HEAD"]["USE_SIGMOID_CE"] = True
    old, lines = migrate_config(cfg, "v0.5")
    assert "FLOAT32_PRECISION" not in old and "REPEAT_SQRT" not in old["DATALOADER"]
    assert "USE_SIGMOID_CE" not in old["MODEL"]["ROI_BOX_HEAD"] and "CONV_DIMS" in old["MODEL"]["RPN"]
    assert any("USE_SIGMOID_CE = True" in line and "will differ" in line for line in lines)
    assert any(line.startswith("dropped FLOAT32_PRECISION") for line in lines)
    new, lines = migrate_config(old, "latest", from_version="v0.5")
    assert new["FLOAT32_PRECISION"] == "" and new["MODEL"]["ROI_BOX_HEAD"]["USE_SIGMOID_CE"] is False
    assert any(line.startswith("added DATALOADER.REPEAT_SQRT") for line in lines)
    with pytest.raises(ConfigError, match="unknown detectron2 release"):
        migrate_config(cfg, "v9")
