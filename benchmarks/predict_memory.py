"""Peak memory of `vdeploy predict` against the number of images: it should stay flat.

usage: python benchmarks/predict_memory.py [BUNDLE] [--counts 100,1500] [--size 480x640] [--no-vis]
Without BUNDLE, exports tiny:shapes_seg (label maps) into a temporary folder first. Generates the
largest count of synthetic JPEGs once, runs `python -m vdeploy predict BUNDLE DIR --out ...
--save-vis ...` on the first N of them for each N (a fresh process each time), and prints each
run's peak RSS: the child's VmHWM (Linux), read by the child itself as it exits. (Not wait4's
ru_maxrss: that also counts the pages the child shared with this process, torch and all, before exec.)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Runs `vdeploy ARGS` and, at exit, writes its own high-water RSS to stderr's last line.
CHILD = """
import atexit, re, runpy, sys
def report():
    hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())
    sys.stderr.write(f"\\nVmHWM_KB {hwm.group(1)}\\n")
atexit.register(report)
sys.argv = ["vdeploy", *sys.argv[1:]]
runpy.run_module("vdeploy", run_name="__main__")
"""


def peak_rss_mb(args: list[str]) -> tuple[float, float, int]:
    """Run `vdeploy ARGS` in a fresh process; (its peak RSS in MB, wall seconds, exit status)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    if not last.startswith("VmHWM_KB") or r.returncode not in (0, 1):
        sys.stderr.write(r.stderr[-2000:])
        return float("nan"), time.perf_counter() - t, r.returncode
    return int(last.split()[1]) / 1024, time.perf_counter() - t, r.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--counts", default="100,1500")
    ap.add_argument("--size", default="480x640", help="HxW of the generated images")
    ap.add_argument("--no-vis", action="store_true", help="without --save-vis")
    args = ap.parse_args()
    import cv2

    from vdeploy.runtime.synthetic import synthetic_image

    counts = [int(c) for c in args.counts.split(",")]
    h, w = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="predict-memory-"))
    bundle = args.bundle
    if bundle is None:
        from vdeploy.export import export_bundle
        from vdeploy.frameworks import build_model

        bundle = str(work / "shapes_seg")
        export_bundle(build_model("tiny:shapes_seg"), bundle, ["onnx"], verify=False, log=lambda *a: None)
    # A few distinct pictures reused under many names: generating 1500 distinct ones is slow and
    # the decoder does the same work either way.
    pics = [cv2.imencode(".jpg", synthetic_image(h, w, seed=s))[1].tobytes() for s in range(8)]
    for n in counts:
        folder = work / f"images-{n}"
        folder.mkdir()
        for i in range(n):
            (folder / f"{i:05d}.jpg").write_bytes(pics[i % len(pics)])
    from vdeploy.bundle import load_bundle

    task = load_bundle(bundle, check_hashes=False).task
    one_file_per_image = task in ("semantic_segmentation", "embedding")
    print(f"bundle {bundle} ({task}), {h}x{w} images, work folder {work}")
    for n in counts:
        out = work / f"out-{n}"
        cmd = ["predict", bundle, str(work / f"images-{n}"), "--out",
               str(out / ("maps" if one_file_per_image else "results.json"))]
        if not args.no_vis:
            cmd += ["--save-vis", str(out / "vis")]
        mb, secs, rc = peak_rss_mb(cmd)
        print(f"N={n:5d}: peak RSS {mb:7.1f} MB, {secs:6.1f} s, exit {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
