"""`vdeploy export --classes`: a custom dataset's class names, recorded in the bundle, checked
against the model's class count (detectron2 and MMSegmentation configs name classes only through
their dataset registry)."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli


def _export(tmp_path, classes, name="b"):
    return run_cli("export", "tiny:shapes_det", "--format", "onnx", "--no-verify", "--out", tmp_path / name,
                   "--classes", classes)


def test_comma_list_is_recorded_in_deploy_json(tmp_path):
    r = _export(tmp_path, "disc, box ,wedge")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "deploy.json").read_text())["classes"] == ["disc", "box", "wedge"]


@pytest.mark.parametrize("suffix,body", [(".txt", "disc\nbox\n\nwedge\n"), (".json", '["disc", "box", "wedge"]')])
def test_names_from_a_file(tmp_path, suffix, body):
    f = tmp_path / f"names{suffix}"
    f.write_text(body)
    r = _export(tmp_path, f)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "deploy.json").read_text())["classes"] == ["disc", "box", "wedge"]


@pytest.mark.parametrize("classes,message", [
    ("disc,box", "gives 2 names; the model has 3 classes"),
    ("disc,box,disc", "'disc' more than once"),
])
def test_wrong_names_are_one_line_user_errors_and_write_nothing(tmp_path, classes, message):
    r = _export(tmp_path, classes)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "b").exists()


def test_bad_json_file_is_a_user_error(tmp_path):
    f = tmp_path / "names.json"
    f.write_text('{"0": "disc"')
    r = _export(tmp_path, f)
    assert r.returncode == 2 and "not valid JSON" in r.stderr, r.stderr
