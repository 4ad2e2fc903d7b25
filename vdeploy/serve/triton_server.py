"""Run a real Triton Inference Server from the `nvidia-pytriton` wheel, without the NGC image.

The wheel bundles a `tritonserver` binary, its shared libraries and the Python backend (stubs for
Python 3.8-3.13). Its Python backend runs model.py with the packages of the first `python3` on
PATH (PYTHONPATH is ignored) and needs numpy < 2, while vdeploy's own environment may hold numpy 2:
so Triton gets an environment of its own (`build_env`), holding the wheel itself, numpy < 2,
vdeploy's runtime dependencies and vdeploy (a .pth file naming its source folder), and that
environment goes first on PATH for the server process only.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..errors import UserError

# What Triton's Python backend needs to run a bundle with vdeploy's runtime (the `runtime` extra
# minus OpenVINO, faster-coco-eval and cryptography, which serving an ONNX bundle does not import).
ENV_REQUIREMENTS = ("nvidia-pytriton>=0.5", "numpy>=1.24,<2", "onnxruntime>=1.18", "opencv-python-headless>=4.8",
                    "pillow>=10", "pyyaml>=6", "rich>=13", "pycocotools>=2.0.7")
SOURCE = Path(__file__).resolve().parents[2]  # the folder holding the vdeploy package


def env_python(env: Path) -> Path:
    return Path(env) / "bin" / "python3"


def build_env(env: str | os.PathLike, *, python: str = sys.executable, extra: tuple[str, ...] = (),
              timeout: float = 900) -> Path:
    """Create (or complete) the Python environment Triton runs from; idempotent and resumable: the
    marker file is written last, so an interrupted build is redone."""
    env = Path(env)
    marker = env / ".vdeploy-triton-env"
    wanted = "\n".join(ENV_REQUIREMENTS + tuple(extra) + (str(SOURCE),))
    if marker.is_file() and marker.read_text() == wanted:
        return env
    subprocess.run([python, "-m", "venv", str(env)], check=True, timeout=120)
    r = subprocess.run([str(env_python(env)), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        *ENV_REQUIREMENTS, *extra], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise UserError(f"building Triton's Python environment {env} failed: {_last_line(r.stderr)}")
    site = subprocess.run([str(env_python(env)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # vdeploy from its source folder, without its dependencies (numpy 2 among them)
    (Path(site) / "vdeploy_source.pth").write_text(str(SOURCE) + "\n")
    marker.write_text(wanted)
    return env


def pytriton_dir(env: Path) -> Path:
    r = subprocess.run([str(env_python(env)), "-c", "import importlib.util as u; "
                        "print(u.find_spec('pytriton').submodule_search_locations[0])"], capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"{env}: has no nvidia-pytriton (build it with build_env)")
    return Path(r.stdout.strip())


def backend_dir(env: Path) -> Path:
    """A backends folder whose Python backend has the stub for the environment's Python version
    (the wheel keeps one stub per version apart; Triton looks for it beside libtriton_python.so)."""
    wheel = pytriton_dir(env) / "tritonserver"
    version = subprocess.run([str(env_python(env)), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"the pytriton wheel has no Python backend stub for Python {version}")
    out = Path(env) / "triton-backends"
    python = out / "python"
    python.mkdir(parents=True, exist_ok=True)
    for src in [*(wheel / "backends" / "python").iterdir(), stub]:
        link = python / src.name
        if not link.exists():
            link.symlink_to(src)
    return out


def default_env() -> Path:
    return Path.home() / ".cache" / "vdeploy" / f"triton-env-py{sys.version_info[0]}{sys.version_info[1]}"


def server_command(env: Path, repositories, *, http_port: int, grpc_port: int, metrics_port: int | None = None,
                   host: str = "127.0.0.1", extra: tuple[str, ...] = ()) -> tuple[list[str], dict]:
    """(argv, environment) of a tritonserver serving one or more repositories on `host` (loopback by
    default: Triton's own default is every interface)."""
    env = Path(env)
    wheel = pytriton_dir(env)
    repositories = [repositories] if isinstance(repositories, (str, os.PathLike)) else list(repositories)
    argv = [str(wheel / "tritonserver" / "bin" / "tritonserver"),
            *(f"--model-repository={Path(r).resolve()}" for r in repositories),
            "--backend-directory", str(backend_dir(env)), "--http-address", host, "--http-port", str(http_port),
            "--grpc-address", host, "--grpc-port", str(grpc_port)]
    argv += (["--metrics-address", host, "--metrics-port", str(metrics_port)] if metrics_port
             else ["--allow-metrics", "false"])
    environ = dict(os.environ)
    environ["PATH"] = f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}"  # Triton's python3: this env's
    environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(wheel.parent / "nvidia_pytriton.libs"),
                                                               environ.get("LD_LIBRARY_PATH")]))
    environ.pop("PYTHONPATH", None)
    return argv + list(extra), environ


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll /v2/health/ready until it answers 200; bounded in time, and stops early if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"tritonserver at {url} not ready after {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (Triton unloads its models and exits), then SIGKILL if it does not within `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
