"""`vdeploy predict/eval --ray` on a real two-node Ray cluster: the same metrics and predictions as
a single-process run, and a driver killed mid-way resumes to the same result, each image once.

The cluster (a head and a second node, `ray start --block`, one CPU each) runs inside a network
namespace that has only loopback (`unshare -n` as root, else `unshare -rn`), because Ray listens on
every interface whatever --node-ip-address says; the drivers enter it with nsenter. Where neither
works, the nodes run in the machine's own network bound to 127.0.0.1 (--node-ip-address), and Ray
may still listen on other interfaces for the test's minute. The cluster is stopped by the PIDs of
its processes (the `ray start` processes, their descendants, and everything in the namespace),
never with `ray stop`, which would stop every Ray on the machine.
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("torch")  # to export the tiny bundle

from vdeploy.eval.synthetic import make_coco  # noqa: E402
from vdeploy.models.tiny import default_weights  # noqa: E402

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 120
# The cluster's own token, for its nodes and drivers alone (Ray would otherwise use, or a local
# ray.init() create, ~/.ray/auth_token, which is the machine's and not this test's).
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _namespace_holder():
    """(holder process, nsenter prefix) of a new loopback-only network namespace, or (None, [])."""
    for unshare, enter in ((["unshare", "-n"], ["-n"]), (["unshare", "-rn"], ["-U", "-n", "--preserve-credentials"])):
        try:
            holder = subprocess.Popen([*unshare, "sleep", "3600"], stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            return None, []
        time.sleep(0.3)
        prefix = ["nsenter", "-t", str(holder.pid), *enter]
        if holder.poll() is None and subprocess.run([*prefix, "ip", "link", "set", "lo", "up"],
                                                    capture_output=True).returncode == 0:
            return holder, prefix
        holder.kill()
        holder.wait()
    return None, []


def _descendants(pids: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _in_namespace(holder_pid: int) -> set[int]:
    try:
        ns = os.readlink(f"/proc/{holder_pid}/ns/net")
    except OSError:
        return set()
    pids = set()
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(p / "ns" / "net") == ns:
                pids.add(int(p.name))
        except OSError:
            continue
    return pids


def _start_node(prefix, args) -> subprocess.Popen:
    """`ray start --block ARGS`, returned once it says the node runs."""
    p = subprocess.Popen([*prefix, str(RAY), "start", "--block", "--num-cpus", "1", "--object-store-memory",
                          str(100 * 2**20), "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=RAY_ENV)
    lines, started = [], threading.Event()

    def read():
        for line in p.stdout:
            lines.append(line)
            if "Ray runtime started" in line:
                started.set()
    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + START_TIMEOUT
    while not started.wait(0.2) and p.poll() is None and time.time() < deadline:
        pass
    if not started.is_set():
        p.kill()
        raise AssertionError("ray start did not come up:\n" + "".join(lines[-30:]))
    return p


@pytest.fixture(scope="module")
def cluster():
    """(nsenter prefix for the drivers, head address) of a running two-node cluster."""
    holder, prefix = _namespace_holder()
    if holder is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    else:
        port = 6379  # the namespace is ours alone
    temp = tempfile.mkdtemp(prefix="vdray")  # short: Ray's socket paths live under it
    nodes = []
    try:
        nodes.append(_start_node(prefix, ["--head", "--port", str(port), "--include-dashboard=false",
                                          "--temp-dir", temp]))
        nodes.append(_start_node(prefix, ["--address", f"127.0.0.1:{port}"]))
        yield prefix, f"127.0.0.1:{port}"
    finally:
        pids = _descendants({n.pid for n in nodes})
        if holder is not None:
            pids |= _in_namespace(holder.pid) - {holder.pid}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(1.0)
        for n in nodes:
            n.wait(10)
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["rm", "-rf", temp])


def vd(*args, prefix=(), check=True):
    r = subprocess.run([*prefix, sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=RAY_ENV)
    if check and r.returncode != 0:
        raise AssertionError(f"vdeploy {args[0]} failed ({r.returncode}): {r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def det_bundle(module_tmp):
    if not default_weights("shapes_det").is_file():
        pytest.skip("no trained weights for tiny:shapes_det; run scripts/train_tiny.py shapes_det")
    out = module_tmp.mktemp("det") / "b"
    vd("export", "tiny:shapes_det", "--format", "onnx", "--out", out)
    return out


@pytest.fixture(scope="module")
def coco(module_tmp):
    return make_coco(module_tmp.mktemp("coco"), n=48, seed=11)


def _kill_when(p: subprocess.Popen, path: Path, lines: int) -> int:
    """SIGKILL the driver once `path` holds `lines` lines; returns the lines there after it died."""
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            os.kill(p.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    p.wait()
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_eval_on_two_nodes_equals_one_process_and_resumes_after_a_killed_driver(cluster, det_bundle, coco, tmp_path):
    prefix, address = cluster
    common = ["eval", det_bundle, "--dataset", coco, "--backends", "onnxruntime", "--no-progress"]
    vd(*common, "--threads", "1", "--out", tmp_path / "one")
    vd(*common, "--out", tmp_path / "ray", "--ray", address, "--ray-actors", "2", prefix=prefix)
    one = json.loads((tmp_path / "one" / "report.json").read_text())["backends"]
    assert one["onnxruntime"]["bbox/AP"] > 0.5  # the tiny model really detects: a comparison that means something
    assert json.loads((tmp_path / "ray" / "report.json").read_text())["backends"] == one

    def records(out):
        return sorted((tmp_path / out / "predictions" / "onnxruntime" / "predictions.jsonl").read_text().splitlines())
    assert records("ray") == records("one")  # the same predictions, image by image

    killed = tmp_path / "killed"
    store = killed / "predictions" / "onnxruntime" / "predictions.jsonl"
    p = subprocess.Popen([*prefix, sys.executable, "-m", "vdeploy", *map(str, common), "--out", str(killed),
                          f"--ray={address}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=RAY_ENV)
    stored = _kill_when(p, store, 6)
    assert p.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    assert 0 < stored < 48 and not (killed / "report.json").exists()
    vd(*common, "--out", killed, f"--ray={address}", prefix=prefix)
    assert json.loads((killed / "report.json").read_text())["backends"] == one
    keys = [json.loads(line)["image"] for line in store.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 48
    assert records("killed") == records("one")


def test_predict_on_two_nodes_writes_the_same_results_and_resumes(cluster, det_bundle, coco, tmp_path):
    prefix, address = cluster
    images = coco.parent / "images"
    vd("predict", det_bundle, images, "--out", tmp_path / "one.json", "--threads", "1")
    r = vd("predict", det_bundle, images, "--out", tmp_path / "ray.json", "--ray", address, prefix=prefix)
    assert "from 48 images" in r.stdout
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "one.json").read_bytes()  # same results, same order
    assert not (tmp_path / "ray.json.ray-partial").exists()
    r = vd("predict", det_bundle, images, "--out", tmp_path / "x.json", "--ray", address, "--ray-actors", "3",
           prefix=prefix, check=False)
    assert r.returncode == 2 and "need 3 CPUs; the cluster has 2" in r.stderr, r.stderr
    assert not (tmp_path / "x.json").exists()

    out = tmp_path / "killed.json"
    journal = tmp_path / "killed.json.ray-partial" / "predictions.jsonl"
    p = subprocess.Popen([*prefix, sys.executable, "-m", "vdeploy", "predict", str(det_bundle), str(images),
                          "--out", str(out), f"--ray={address}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=RAY_ENV)
    stored = _kill_when(p, journal, 6)
    assert p.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    assert 0 < stored < 48 and not out.exists()
    r = vd("predict", det_bundle, images, "--out", out, f"--ray={address}", prefix=prefix)
    assert "from 48 images" in r.stdout
    assert out.read_bytes() == (tmp_path / "one.json").read_bytes()
    assert not journal.parent.exists()


def test_ray_option_errors_are_one_line(tmp_path, coco):
    # without Ray installed: how to install it, exit 2
    code = ("import sys; sys.modules['ray'] = None; from vdeploy.cli import main; "
            f"sys.exit(main(['eval', 'x', '--dataset', {str(coco)!r}, '--out', {str(tmp_path / 'e')!r}, '--ray']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'vdeploy[ray]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # an image folder taken as the address by `--ray IMAGES`
    images = coco.parent / "images"
    r = vd("predict", "x", images / "0000.png", "--out", tmp_path / "p.json", "--ray", images, check=False)
    assert r.returncode == 2 and "not a cluster address" in r.stderr, r.stderr
    r = vd("predict", "x", images, "--out", tmp_path / "p.json", "--ray-actors", "2", check=False)
    assert r.returncode == 2 and "--ray-actors needs --ray" in r.stderr, r.stderr


def test_a_journal_of_another_run_is_refused(tmp_path):
    from vdeploy.errors import UserError
    from vdeploy.scale.ray_batch import _open_journal

    out = tmp_path / "r.json"
    journal = _open_journal(out, {"model": "a", "names_sha256": "1"})
    journal.add({"image": "x.png", "results": []})
    journal.close()
    again = _open_journal(out, {"model": "a", "names_sha256": "1"})
    assert again.done() == {"x.png"}
    again.close()
    with pytest.raises(UserError, match="interrupted run of another model"):
        _open_journal(out, {"model": "b", "names_sha256": "1"})


def test_ray_module_is_torch_free():
    src = (Path(__file__).resolve().parents[1] / "vdeploy" / "scale" / "ray_batch.py").read_text()
    for name in ("models", "frameworks", "export", "api"):
        assert f"vdeploy.{name}" not in src and f"..{name}" not in src
    code = "import sys; sys.modules['torch'] = None; import vdeploy.scale.ray_batch, vdeploy.cli.predict; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
