import itertools
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDENS = SHARED / "goldens"
# Tests write configs into tmp folders whose `_BASE_` names the shared reference configs: that tree
# is an allowed config root here, as users allow theirs (docs/configs.md).
os.environ.setdefault("VDEPLOY_CONFIG_ROOTS", str(SHARED))


def goldens_or_skip() -> Path:
    if not GOLDENS.is_dir():
        pytest.skip(f"{GOLDENS} is absent (the reference outputs live outside the repository)")
    return GOLDENS


@pytest.fixture(scope="session")
def goldens() -> Path:
    return goldens_or_skip()


class ModuleTemp:
    """`tmp_path_factory` for one test module: numbered folders under the module's own."""

    def __init__(self, root: Path):
        self.root = root
        self._numbers = itertools.count()

    def mktemp(self, name: str) -> Path:
        path = self.root / f"{name}{next(self._numbers)}"
        path.mkdir()
        return path


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """Folders for a module's shared fixtures, removed when the module is done.

    Checkpoints and bundles of real-size models weigh hundreds of MB each; kept for the whole
    session (as `tmp_path_factory` keeps them) they filled CI's disk.
    """
    root = tmp_path_factory.mktemp(re.sub(r"\W", "_", request.module.__name__)[-30:])
    yield ModuleTemp(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def small_classifier_bundle(tmp_path_factory):
    """resnet18 at 64x64 in every format: small enough to export once per session."""
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model

    out = tmp_path_factory.mktemp("bundles") / "resnet18"
    dm = build_model("torchvision:resnet18", None, input_size=(64, 64))
    return export_bundle(dm, out, ["onnx", "openvino", "torchscript"], log=lambda *a: None)


def run_cli(*args, env=None):
    """Run `python -m vdeploy ARGS` in a subprocess; returns CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
