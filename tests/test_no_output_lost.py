"""No output ever lost: distinct inputs get distinct outputs, a bad image is skipped and reported,
a bundle at --out survives SIGKILL at any point of an export and a failed verification."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from conftest import ROOT, run_cli
from vdeploy.bundle import load_bundle
from vdeploy.errors import UserError, VerificationError
from vdeploy.export import staging
from vdeploy.runtime.synthetic import synthetic_image


def _export(name, out, **kw):
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model

    return export_bundle(build_model(f"tiny:{name}"), out, ["onnx"], log=lambda *a: None, **kw)


@pytest.fixture(scope="module")
def seg_bundle(module_tmp):
    return _export("shapes_seg", module_tmp.mktemp("b") / "seg", verify=False)


@pytest.fixture(scope="module")
def det_bundle(module_tmp):
    return _export("shapes_det", module_tmp.mktemp("b") / "det", verify=False)


def _img(path: Path, seed=3, hw=(96, 128)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), synthetic_image(*hw, seed=seed))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if ".vdeploy-" in n)


# ---- predict: one output per input ------------------------------------------------------------

def _same_names(tmp_path):
    a1, a2, b1 = _img(tmp_path / "a/x.png", 1), _img(tmp_path / "a/x.jpg", 2), _img(tmp_path / "b/x.png", 3)
    return [tmp_path / "a", b1], (a1, a2, b1)


def test_same_file_names_in_folders_give_distinct_label_maps_and_drawings(seg_bundle, tmp_path):
    args, _ = _same_names(tmp_path)
    r = run_cli("predict", seg_bundle.path, *args, "--out", tmp_path / "maps", "--save-vis", tmp_path / "vis")
    assert r.returncode == 0, r.stderr
    assert "3 label maps from 3 images" in r.stdout
    maps = sorted(p.relative_to(tmp_path / "maps").as_posix() for p in (tmp_path / "maps").rglob("*.png"))
    assert maps == ["a/x.jpg.png", "a/x.png.png", "b/x.png"]
    vis = sorted(p.relative_to(tmp_path / "vis").as_posix() for p in (tmp_path / "vis").rglob("*.jpg"))
    assert vis == ["a/x.jpg.jpg", "a/x.png.jpg", "b/x.jpg"]
    for m in maps:
        assert cv2.imread(str(tmp_path / "maps" / m), cv2.IMREAD_UNCHANGED).shape == (96, 128)


def test_coco_results_name_every_input_distinctly(det_bundle, tmp_path):
    args, _ = _same_names(tmp_path)
    r = run_cli("predict", det_bundle.path, *args, "--out", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    from vdeploy.runtime.io import read_image
    from vdeploy.runtime.predictor import Predictor

    # every image's detections are there under its own name, as predicted one by one
    res = json.loads((tmp_path / "r.json").read_text())
    p = Predictor(det_bundle.path)
    for name in ("a/x.png", "a/x.jpg", "b/x.png"):
        mine = [d for d in res if d["file_name"] == name]
        assert len(mine) == len(p.predict(read_image(tmp_path / name))), name
    assert {d["file_name"] for d in res} <= {"a/x.png", "a/x.jpg", "b/x.png"}


def test_names_helper_single_folder_duplicates_and_same_named_folders(tmp_path):
    from vdeploy.cli.predict import named_images

    a = [_img(tmp_path / "one" / f"{i}.png", i) for i in range(3)]
    # one folder (or files of one folder): plain relative names; an image given twice is one input
    assert [n for _, n in named_images([tmp_path / "one", a[1]])] == ["0.png", "1.png", "2.png"]
    assert [n for _, n in named_images([a[2], a[0]])] == ["2.png", "0.png"]
    # two folders of the same name
    b = _img(tmp_path / "x/imgs/0.png")
    c = _img(tmp_path / "y/imgs/0.png")
    assert [n for _, n in named_images([b.parent, c.parent])] == ["imgs/0.png", "imgs-2/0.png"]
    with pytest.raises(UserError, match="nope.png: no such image file"):
        named_images([tmp_path / "nope.png"])


# ---- predict: bad images ---------------------------------------------------------------------

def _six_with_two_bad(tmp_path) -> Path:
    d = tmp_path / "imgs"
    for i in range(4):
        _img(d / f"good{i}.png", i)
    (d / "junk.png").write_bytes(b"\x89PNG not really")
    data = _img(tmp_path / "whole.png", 9).read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 3])
    return d


def test_bad_images_are_skipped_reported_and_the_rest_written(det_bundle, tmp_path):
    d = _six_with_two_bad(tmp_path)
    out = tmp_path / "r.json"
    r = run_cli("predict", det_bundle.path, d, "--out", out, "--save-vis", tmp_path / "vis")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "2 of 6 images could not be read" in r.stderr
    assert "junk.png" in r.stderr and "truncated.png" in r.stderr
    assert "from 4 images" in r.stdout
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == [f"good{i}.jpg" for i in range(4)]
    assert {d["file_name"] for d in json.loads(out.read_text())} <= {f"good{i}.png" for i in range(4)}


def test_strict_stops_at_the_first_bad_image_and_keeps_the_old_results(det_bundle, tmp_path):
    d = _six_with_two_bad(tmp_path)
    out = tmp_path / "r.json"
    out.write_text("{}")
    r = run_cli("predict", det_bundle.path, d, "--out", out, "--strict")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "junk.png: not a decodable image" in r.stderr
    assert out.read_text() == "{}"


def test_only_bad_images_leave_the_results_file_as_it_was(det_bundle, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a")
    out = tmp_path / "r.json"
    out.write_text("{}")
    r = run_cli("predict", det_bundle.path, bad, "--out", out)
    assert r.returncode == 1 and "1 of 1 images could not be read" in r.stderr
    assert out.read_text() == "{}"


def test_out_of_the_wrong_kind_is_refused_before_any_work(seg_bundle, det_bundle, tmp_path):
    img = _img(tmp_path / "a.png")
    (tmp_path / "file").write_text("keep")
    r = run_cli("predict", seg_bundle.path, img, "--out", tmp_path / "file")
    assert r.returncode == 2 and "is a file" in r.stderr
    r = run_cli("predict", det_bundle.path, img, "--out", tmp_path)
    assert r.returncode == 2 and "is a folder" in r.stderr
    assert (tmp_path / "file").read_text() == "keep"


# ---- export: failed verification -------------------------------------------------------------

def test_failed_verification_goes_to_out_failed_and_leaves_the_good_bundle(tmp_path):
    out = tmp_path / "cls"
    _export("shapes_cls", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for attempt in range(2):  # the second failure replaces the first OUT.failed
        with pytest.raises(VerificationError) as e:
            _export("shapes_cls", out, gates={"top1_agreement": 1.5})
        msg = str(e.value)
        assert f"kept at {tmp_path / 'cls.failed'}" in msg and f"{out} is unchanged" in msg and "\n" not in msg
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        failed = load_bundle(tmp_path / "cls.failed")
        assert failed.meta["verification"]["passed"] is False
        assert _leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["cls", "cls.failed"]


def test_first_export_that_fails_verification_writes_nothing_at_out(tmp_path):
    with pytest.raises(VerificationError, match="nothing was written at"):
        _export("shapes_cls", tmp_path / "cls", gates={"prob_abs": -1})
    assert sorted(os.listdir(tmp_path)) == ["cls.failed"]


def test_deploy_json_is_written_once_with_the_verdict(tmp_path, monkeypatch):
    import vdeploy.export.bundle_writer as bw

    writes = []
    real = bw.write_deploy_json
    monkeypatch.setattr(bw, "write_deploy_json", lambda root, meta: writes.append(dict(meta)) or real(root, meta))
    b = _export("shapes_cls", tmp_path / "cls")
    assert len(writes) == 1 and writes[0]["verification"]["passed"] is True
    assert load_bundle(b.path).meta["verification"]["passed"] is True


def test_non_bundle_at_out_is_refused_before_the_export(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not a bundle"):
        _export("shapes_cls", out, verify=False)
    assert (out / "notes.txt").read_text() == "keep" and _leftovers(tmp_path) == []


# ---- export: the swap and stale leftovers ----------------------------------------------------

def test_swap_without_atomic_exchange_replaces_and_cleans(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "exchange", lambda a, b: False)
    out = tmp_path / "seg"
    _export("shapes_seg", out, verify=False)
    b = _export("shapes_seg", out)
    assert load_bundle(out).meta == b.meta and _leftovers(tmp_path) == []


def test_clean_stale_removes_only_dead_jobs(tmp_path):
    job = staging.StagingJob(tmp_path / "b").__enter__()  # a running export (holds its lock)
    dead = tmp_path / ".b.vdeploy-999999999-0123abcd.staging"  # no lock file and no such process
    (dead / "sub").mkdir(parents=True)
    unlocked = tmp_path / ".c.vdeploy-1-89abcdef"  # a lock nobody holds
    Path(f"{unlocked}.lock").write_text("")
    Path(f"{unlocked}.staging").mkdir()
    user = tmp_path / ".b.mine"  # not vdeploy's: never touched
    user.mkdir()
    done = staging.clean_stale(tmp_path)
    assert len(done) == 2, done
    assert sorted(os.listdir(tmp_path)) == sorted([job.lock.name, job.staging.name, ".b.mine"])
    job.__exit__(None, None, None)
    assert os.listdir(tmp_path) == [".b.mine"]


# A subprocess export that stops at a named step of the swap (or runs through), for SIGKILL tests.
DRIVER = """
import sys, time
from vdeploy.export import staging
out, step, mode = sys.argv[1:4]
if mode == "fallback":
    staging.exchange = lambda a, b: False
def reached(s):
    if s == step:
        print("AT", s, flush=True)
        time.sleep(120)
staging._reached = reached
from vdeploy.export import export_bundle
from vdeploy.frameworks import build_model
dm = build_model("tiny:shapes_seg")
print("START", flush=True)
t = time.time()
export_bundle(dm, out, ["onnx"], log=lambda *a: None)
print("DONE", time.time() - t, flush=True)
"""


def _driver(out, step="-", mode="exchange"):
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(out), step, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for(proc, word) -> str:
    for line in proc.stdout:
        if line.startswith(word):
            return line
    raise AssertionError(f"driver ended before {word}: {proc.stderr.read()[-2000:]}")


@pytest.fixture
def old_bundle(tmp_path):
    """A bundle without a verification record, so the old one and a new one are told apart."""
    b = _export("shapes_seg", tmp_path / "seg", verify=False)
    assert "verification" not in b.meta
    return b


def _is_old(out) -> bool:
    return "verification" not in load_bundle(out).meta  # load_bundle: complete and intact


@pytest.mark.parametrize("step,mode,expect_old", [("staged", "exchange", True), ("exchanged", "exchange", False),
                                                  ("staged", "fallback", True), ("renamed", "fallback", False)])
def test_sigkill_at_each_step_leaves_a_loadable_bundle(old_bundle, step, mode, expect_old):
    out = old_bundle.path
    proc = _driver(out, step, mode)
    _wait_for(proc, "AT")
    proc.kill()
    proc.wait()
    assert _is_old(out) is expect_old
    assert _leftovers(out.parent)  # the killed job's folders ...
    _export("shapes_seg", out, verify=False)
    assert _leftovers(out.parent) == []  # ... are cleaned by the next export


def test_sigkill_between_the_fallback_renames_is_repaired_by_the_next_export(old_bundle):
    out = old_bundle.path
    proc = _driver(out, "aside", "fallback")
    _wait_for(proc, "AT")
    proc.kill()
    proc.wait()
    assert not out.exists()  # the one window the fallback (no atomic exchange) has
    staging.clean_stale(out.parent)
    assert _is_old(out) and _leftovers(out.parent) == []


def test_sigkill_at_random_moments_always_leaves_a_loadable_bundle(old_bundle):
    out = old_bundle.path
    proc = _driver(out)
    _wait_for(proc, "START")
    duration = float(_wait_for(proc, "DONE").split()[1])
    proc.wait()
    rng = random.Random(13)
    for _ in range(6):
        proc = _driver(out)
        _wait_for(proc, "START")
        time.sleep(rng.uniform(0, duration * 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        load_bundle(out)  # complete and intact, old or new
        if rng.random() < 0.5:  # back to an old bundle half of the time, so both swaps are hit
            _export("shapes_seg", out, verify=False)
    _export("shapes_seg", out, verify=False)
    assert _leftovers(out.parent) == [] and sorted(os.listdir(out.parent)) == ["seg"]
