"""plot-logs: detectron2 / fast-reid metrics.json and MMSegmentation 0.x / 1.x JSON logs."""
import json

import numpy as np
import pytest

from vdeploy.cli import main
from vdeploy.tools.plot_logs import collect, match_keys, read_log


def _write_lines(path, records, extra_lines=()):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def logs(tmp_path):
    # detectron2: training scalars every 20 iterations, an evaluation at 99, a resume from 59 that
    # logs 59/79 again, and a line cut short when the job was killed.
    d2 = [{"iteration": i, "total_loss": 2.0 - i / 100, "lr": 0.02, "time": 0.3} for i in (19, 39, 59, 79)]
    d2 += [{"iteration": 99, "bbox/AP": 31.5, "segm/AP": 29.0, "sem_seg/mIoU": 41.0}]
    d2 += [{"iteration": 59, "total_loss": 1.0}, {"iteration": 79, "total_loss": 0.9}]
    d2_path = _write_lines(tmp_path / "run_a" / "metrics.json", d2[:3], ['{"iteration": 60, "total_lo'])
    with open(d2_path, "a") as f:
        f.write("\n".join(json.dumps(r) for r in d2[3:]) + "\n")

    # fast-reid writes the same format; evaluation scalars are prefixed by the dataset name
    reid = [{"iteration": i, "total_loss": 5.0 - i / 50, "loss_cls": 3.0} for i in (49, 99)]
    reid += [{"iteration": 99, "Market1501/Rank-1": 0.93, "Market1501/mAP": 0.84}]
    reid_path = _write_lines(tmp_path / "run_b" / "metrics.json", reid)

    # MMSegmentation 0.x: environment line first, then train/val records
    mm0 = [{"env_info": "sys.platform: linux", "seed": 0, "exp_name": "fcn.py"}]
    mm0 += [{"mode": "train", "epoch": 1, "iter": i, "lr": 0.01, "loss": 1.5 - i / 1000, "decode.loss_ce": 1.0}
            for i in (50, 100, 150, 200)]
    mm0 += [{"mode": "val", "epoch": 1, "iter": 200, "lr": 0.01, "aAcc": 0.7, "mIoU": 0.35, "mAcc": 0.45}]
    mm0_path = _write_lines(tmp_path / "20240101_000000.log.json", mm0, ["[1, 2]"])

    # MMSegmentation 1.x (MMEngine) vis_data/scalars.json
    mm1 = [{"lr": 0.01, "data_time": 0.01, "loss": 1.2 - i / 1000, "decode.loss_ce": 1.1, "time": 0.4,
            "iter": i, "memory": 3000, "step": i} for i in (50, 100)]
    mm1 += [{"aAcc": 0.72, "mIoU": 0.38, "mAcc": 0.5, "data_time": 0.01, "time": 0.2, "step": 100}]
    mm1_path = _write_lines(tmp_path / "vis_data" / "scalars.json", mm1)
    return {"d2": d2_path, "reid": reid_path, "mm0": mm0_path, "mm1": mm1_path}


def test_detectron2_log_with_resume_and_bad_line(logs):
    log = read_log(logs["d2"])
    assert len(log.problems) == 1 and log.problems[0].startswith(f"{logs['d2']}:4: not JSON")
    data = collect([logs["d2"]], ["total_loss", "mIoU", "AP", "nonexistent"])
    by_key = {(s.key, s.log_key): s for s in data.series}
    loss = by_key[("total_loss", "total_loss")]
    assert loss.steps == [19, 39, 59, 79]
    assert loss.values == pytest.approx([1.81, 1.61, 1.0, 0.9])   # the resumed run's values win
    assert by_key[("mIoU", "sem_seg/mIoU")].values == [41.0]
    assert {s.log_key for s in data.series if s.key == "AP"} == {"bbox/AP", "segm/AP"}
    assert len(data.missing) == 1 and "no key 'nonexistent'" in data.missing[0]
    assert "total_loss" in data.missing[0]                 # lists what the file does have


def test_mmseg_and_fastreid_logs(logs):
    data = collect([logs["mm0"], logs["mm1"], logs["reid"]], ["loss", "mIoU", "mAP"])
    series = {(s.path.name, s.key): s for s in data.series}
    mm0_loss = series[(logs["mm0"].name, "loss")]
    assert mm0_loss.steps == [50, 100, 150, 200] and mm0_loss.log_key == "loss"
    assert series[(logs["mm0"].name, "mIoU")].steps == [200]
    mm1_miou = series[("scalars.json", "mIoU")]
    assert (mm1_miou.steps, mm1_miou.values) == ([100], [0.38])
    reid_map = series[("metrics.json", "mAP")]
    assert reid_map.log_key == "Market1501/mAP" and reid_map.values == [0.84]
    # "loss" is not in fast-reid's metrics (it logs total_loss): reported, not guessed
    assert any("metrics.json: no key 'loss'" in m for m in data.missing)
    assert any(f"{logs['mm0']}:7:" in p and "not an object" in p for p in data.problems)
    assert any("1 line(s) without" in n for n in data.notes)


def test_key_matching_prefers_exact_names():
    keys = {"loss", "decode.loss", "sem_seg/mIoU", "bbox/AP", "segm/AP", "bbox/AP50"}
    assert match_keys(keys, "loss") == ["loss"]
    assert match_keys(keys, "mIoU") == ["sem_seg/mIoU"]
    assert match_keys(keys, "AP") == ["bbox/AP", "segm/AP"]
    assert match_keys(keys, "AP5") == []


def test_cli_writes_png(logs, tmp_path, capsys):
    import cv2

    out = tmp_path / "plots" / "curves.png"
    rc = main(["plot-logs", str(logs["d2"]), str(logs["reid"]), str(logs["mm1"]),
               "--keys", "total_loss,mIoU", "--out", str(out)])
    assert rc == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (640, 800, 3)            # two stacked panels, 8 x 6.4 in
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20           # curves, text, not a blank canvas
    captured = capsys.readouterr()
    assert f"{logs['d2']}:4: not JSON" in captured.err
    assert "no key 'mIoU'" in captured.err                          # fast-reid log has none
    assert "sem_seg/mIoU" in captured.out and str(out) in captured.out


def test_cli_nothing_to_plot_keeps_existing_png(logs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    out.write_bytes(b"old")
    assert main(["plot-logs", str(logs["mm1"]), "--keys", "Rank-1", "--out", str(out)]) == 2
    assert out.read_bytes() == b"old"
    assert "nothing to plot" in capsys.readouterr().err
    assert main(["plot-logs", str(tmp_path / "absent.json"), "--keys", "loss"]) == 2


def test_legend_names_one_curve_per_log_or_per_log_and_key(tmp_path):
    from pathlib import Path

    from vdeploy.errors import UserError
    from vdeploy.tools.plot_logs import legend_labels

    a, b = Path("run1/metrics.json"), Path("run2/metrics.json")
    assert legend_labels([a, b], ["loss"], None) == {(a, "loss"): "run1/metrics.json", (b, "loss"): "run2/metrics.json"}
    assert legend_labels([a, b], ["loss", "mIoU"], ["base", "ours"])[(b, "mIoU")] == "ours"
    per_key = legend_labels([a, b], ["loss", "mIoU"], ["a-loss", "a-miou", "b-loss", "b-miou"])
    assert per_key[(a, "mIoU")] == "a-miou" and per_key[(b, "loss")] == "b-loss"
    with pytest.raises(UserError, match="give 2 names .* or 4"):
        legend_labels([a, b], ["loss", "mIoU"], ["x"])
