"""The Open Inference Protocol v2 REST API of `vdeploy serve`, fuzzed by schemathesis from the
protocol's OpenAPI document (tests/data/oip_v2_rest.yaml, where it came from is written there)
against a running server on 127.0.0.1: zero 5xx over every generated request.

Most requests name the served model and carry BYTES inputs drawn from real image files (every
accepted format, a 30000 x 30000 PNG bomb, a truncated file), so the fuzz reaches decoding and
inference, not only the 404 of an unknown model; the rest are schemathesis's own, positive and
negative. Time-bounded: VDEPLOY_FUZZ_SECONDS (default 60; 120 for the two-minute run).
"""
import base64
import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kserve", reason="the serve extra (KServe's model server) is not installed")
pytest.importorskip("schemathesis", reason="schemathesis (dev extra) is not installed")
Image = pytest.importorskip("PIL.Image")

from bombs import png_bomb  # noqa: E402
from serve_fake import running  # noqa: E402

from vdeploy.runtime.io import IMAGE_FORMATS  # noqa: E402

SPEC = Path(__file__).parent / "data" / "oip_v2_rest.yaml"
SECONDS = int(os.environ.get("VDEPLOY_FUZZ_SECONDS", "60"))


def image_values() -> list[str]:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    files = []
    for fmt in IMAGE_FORMATS:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        files.append(buf.getvalue())
    files += [png_bomb(), files[0][:40]]
    return [base64.b64encode(f).decode() for f in files]


def write_config(path: Path) -> Path:
    path.write_text(f"""
[dictionaries.served_models]
values = ["det"]
[dictionaries.input_names]
values = ["image"]
[dictionaries.datatypes]
values = ["BYTES"]
[dictionaries.ones]
values = [1]
[dictionaries.images]
values = {json.dumps(image_values())}

[parameters]
"path.MODEL_NAME" = {{ dictionary = "served_models", probability = 0.8 }}
"body.inputs[*].name" = {{ dictionary = "input_names", probability = 0.8 }}
"body.inputs[*].datatype" = {{ dictionary = "datatypes", probability = 0.8 }}
"body.inputs[*].shape[*]" = {{ dictionary = "ones", probability = 0.8 }}
"body.inputs[*].data[*]" = {{ dictionary = "images", probability = 0.9 }}
""")
    return path


def test_schemathesis_finds_no_server_error(tmp_path):
    st = Path(sys.executable).parent / "st"
    config = write_config(tmp_path / "schemathesis.toml")
    with running(tmp_path / "server.log", log_level="warning") as (port, _):
        r = subprocess.run([str(st), "--config-file", str(config), "run", str(SPEC), "--url", f"http://127.0.0.1:{port}",
                            "--max-time", str(SECONDS), "--checks", "not_a_server_error", "--workers", "1",
                            "--request-timeout", "30", "--generation-database", "none", "--no-color",
                            "--report-dir", str(tmp_path / "report")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS + 180)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, out
    generated = re.search(r"(\d+) generated", r.stdout)
    assert generated and int(generated.group(1)) > 100, out
    codes = {m[0]: float(m[1]) for m in re.findall(r'vdeploy_requests_total\{code="(\d+)",endpoint="v2_infer",'
                                                    r'model="det"\} (\S+)', metrics)}
    assert not any(code.startswith("5") for code in codes), codes
    assert sum(codes.values()) > 50, codes  # the fuzz reached the served model's infer
    assert "Traceback" not in (tmp_path / "server.log").read_text()
    print(f"schemathesis: {generated.group(0)} in {SECONDS} s; v2 infer answers on the served model: {codes}")
