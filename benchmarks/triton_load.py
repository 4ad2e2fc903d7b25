"""Load check of a served bundle against the bundle's own `vdeploy bench` (issue 20's check).

    python benchmarks/triton_load.py BUNDLE --image IMG [--clients 8] [--duration 60] [--backend onnxruntime]
    python benchmarks/triton_load.py BUNDLE --image IMG --server vdeploy      # `vdeploy serve` instead
    python benchmarks/triton_load.py BUNDLE --image IMG --url http://127.0.0.1:8000/v2/models/NAME

Without --url the script serves BUNDLE itself on free 127.0.0.1 ports for the run: Triton
(`vdeploy export-triton` + `vdeploy triton-serve`, the default) or `vdeploy serve`. N clients each
keep one request in flight for T seconds (`vdeploy bench --serve`'s closed loop, at the one
concurrency N), counting errors, throughput and p50/p90/p99. The reference is `vdeploy bench
BUNDLE --mode e2e` on the same image and backend (decode, preprocess, graph, postprocess in one
process), run before and after the load so that a change in the machine's load shows as a spread.
Prints one summary line and exits 1 when any request failed or the served throughput is under
--min-ratio (0.9) times the reference's mean.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import MAX_DURATION_S, free_port, start_server  # noqa: E402  (the script beside this one)


def vdeploy(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True, **kw)


def bench_reference(bundle: str, image: str, backend: str, iters: int, workdir: Path) -> float:
    """Images/s of `vdeploy bench` end to end, one image at a time, on the same image and backend."""
    out = workdir / f"bench{len(list(workdir.glob('bench*.json')))}.json"
    r = vdeploy("bench", bundle, "--backends", backend, "--mode", "e2e", "--images", image, "--iters", iters,
                "--warmup", 3, "--json", out, timeout=MAX_DURATION_S)
    if r.returncode != 0:
        raise SystemExit(f"vdeploy bench failed: {r.stderr.strip()[-500:]}")
    return float(json.loads(out.read_text())[0]["throughput"])


def start_triton(bundle: str, name: str, args, workdir: Path):
    """`vdeploy export-triton` then `vdeploy triton-serve` on free loopback ports: (process, HOST:PORT)."""
    from vdeploy.serve.triton_server import wait_ready

    repo = workdir / "repository"
    r = vdeploy("export-triton", bundle, repo, "--name", name, "--backend", args.backend, "--max-delay-us",
                args.max_delay_us, "--max-batch-size", args.max_batch_size, "--instances", args.instances,
                *(["--threads", args.threads] if args.threads else []))
    if r.returncode != 0:
        raise SystemExit(f"vdeploy export-triton failed: {r.stderr.strip()[-500:]}")
    http, grpc = free_port(), free_port()
    log = open(workdir / "tritonserver.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "vdeploy", "triton-serve", repo, "--http-port", str(http),
                                "--grpc-port", str(grpc), "--metrics-port", "0", *(["--env", args.env] if args.env else [])],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{http}", process, timeout=900)  # the first run builds Triton's environment
    except Exception:
        stop_server(process)
        raise SystemExit(f"tritonserver did not come up; see {workdir / 'tritonserver.log'}") from None
    return process, f"127.0.0.1:{http}"


def stop_server(process: subprocess.Popen) -> None:
    from vdeploy.serve.triton_server import stop

    stop(process, timeout=60)  # SIGTERM: triton-serve stops its tritonserver before it exits


def summary(report: dict) -> str:
    row, lat = report["load"], report["load"]["latency_ms"]
    srv = row.get("server_ms")
    server = f", server queue {srv['queue']:.0f} / compute {srv['compute']:.0f} ms" if srv else ""
    return (f"{report['verdict']} {report['server']} {row['model']} ({report['backend']}): {row['concurrency']} clients "
            f"x {row['duration_s']:.0f} s: {row['answers']} answers, {row['errors']} errors, "
            f"{row['throughput']:.2f}/s (p50 {lat['p50']:.0f} / p90 {lat['p90']:.0f} / p99 {lat['p99']:.0f} ms{server}); "
            f"vdeploy bench {report['bench_throughput']:.2f}/s (runs {', '.join(f'{t:.2f}' for t in report['bench_runs'])})"
            f" -> {report['ratio']:.2f}x (min {report['min_ratio']}); load average {report['loadavg']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="the bundle served (and benched as the reference)")
    p.add_argument("--image", required=True, help="the image every request sends")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--server", choices=("triton", "vdeploy"), default="triton", help="what to start without --url")
    p.add_argument("--url", help="a server already running: http://HOST:PORT[/v2/models/NAME]")
    p.add_argument("--model", help="model name (default: the bundle's folder name)")
    p.add_argument("--env", help="Triton's Python environment (vdeploy triton-serve --env)")
    p.add_argument("--max-delay-us", type=int, default=5000, help="Triton's dynamic batching queue delay")
    p.add_argument("--max-batch-size", type=int, default=8, help="vdeploy export-triton --max-batch-size")
    p.add_argument("--instances", type=int, default=1, help="vdeploy export-triton --instances")
    p.add_argument("--threads", type=int, help="vdeploy export-triton --threads (default: all cores)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--bench-iters", type=int, default=30)
    p.add_argument("--min-ratio", type=float, default=0.9)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        p.error(f"--duration must be in (0, {MAX_DURATION_S}]")
    if args.clients < 1:
        p.error("--clients must be at least 1")
    if not (Path(args.bundle) / "deploy.json").is_file():
        p.error(f"{args.bundle}: not a bundle (no deploy.json)")
    if not Path(args.image).is_file():
        p.error(f"{args.image}: no such image file")

    from vdeploy.bench.serve_sweep import SweepConfig, run_sweep
    from vdeploy.errors import UserError

    model = args.model or Path(args.bundle).resolve().name
    loadavg_before = os.getloadavg()  # the others' load on a shared machine, before ours
    with tempfile.TemporaryDirectory(prefix="triton-load-") as tmp:
        workdir = Path(tmp)
        bench_runs = [bench_reference(args.bundle, args.image, args.backend, args.bench_iters, workdir)]
        process, url, server = None, args.url, "server at " + (args.url or "")
        try:
            if not url and args.server == "triton":
                process, url = start_triton(args.bundle, model, args, workdir)
                server = "Triton"
            elif not url:
                port = free_port()
                process, url = start_server(args.bundle, port, ["--backend", args.backend]), f"127.0.0.1:{port}"
                server = "vdeploy serve"
            cfg = SweepConfig(url=url if "://" in url else f"http://{url}",
                              model=args.model or (None if args.url else model), concurrency=[args.clients],
                              duration_s=args.duration, warmup_s=args.warmup, image=Path(args.image).read_bytes())
            load = run_sweep(cfg)[0]
        except UserError as e:  # no such model on the server, a bad URL: one line
            raise SystemExit(f"load failed: {e}") from None
        finally:
            if process is not None:
                stop_server(process)
        bench_runs.append(bench_reference(args.bundle, args.image, args.backend, args.bench_iters, workdir))
    reference = sum(bench_runs) / len(bench_runs)
    ratio = load["throughput"] / reference if reference > 0 else 0.0
    ok = load["errors"] == 0 and load["answers"] > 0 and ratio >= args.min_ratio
    loads = [" ".join(f"{x:.2f}" for x in avg) for avg in (loadavg_before, os.getloadavg())]
    report = {"verdict": "PASS" if ok else "FAIL", "server": server, "backend": args.backend, "load": load,
              "bench_runs": bench_runs, "bench_throughput": reference, "ratio": ratio, "min_ratio": args.min_ratio,
              "loadavg": f"{loads[0]} before, {loads[1]} after", "cpus": os.cpu_count()}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(summary(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
