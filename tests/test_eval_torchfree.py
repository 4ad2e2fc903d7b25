"""The evaluation side (vdeploy.runtime, eval, to-bin/from-bin commands) must not need torch."""
import subprocess
import sys

CODE = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
import vdeploy.runtime, vdeploy.runtime.binio, vdeploy.eval
from vdeploy.eval.datasets import _load_all
_load_all()
import vdeploy.eval.synthetic, vdeploy.eval.report
import vdeploy.cli.eval, vdeploy.cli.to_bin, vdeploy.cli.from_bin
from vdeploy.cli import build_parser
build_parser()
print("ok")
"""


def test_runtime_eval_imports_without_torch():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")
