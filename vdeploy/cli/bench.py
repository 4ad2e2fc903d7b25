from __future__ import annotations

NAME = "bench"
HELP = "Latency, throughput and memory of every backend of a bundle, PyTorch eager as the baseline."


def add_arguments(p):
    p.add_argument("source", nargs="?", help="bundle folder (or a model spec, run through PyTorch); not with --serve")
    p.add_argument("--backends", help="comma-separated (default: torch when installed, then every format in the bundle)")
    p.add_argument("--batch", default="1", help="batch sizes, e.g. 1,2,4")
    p.add_argument("--threads", type=int, help="intra-op threads per backend (default: all cores)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--image-size", "--input-size", dest="image_size", metavar="HxW",
                   help="size of the synthetic images (default: the bundle's fixed size, or the task's typical one: "
                        "800x1333 for detectors)")
    p.add_argument("--mode", choices=("pure", "e2e"), default="pure")
    p.add_argument("--streams", metavar="LIST",
                   help="throughput mode: requests in flight at once, e.g. 1,2,4 (OpenVINO's THROUGHPUT hint, "
                        "onnxruntime run from as many threads); a row per backend and count, samples/s against streams")
    p.add_argument("--images", nargs="*", default=[], help="photos for --mode e2e (default: synthetic)")
    p.add_argument("--weights", help="checkpoint when SOURCE is a model spec")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument("--plot", metavar="FILE", help="write a bar chart PNG of latency per backend")
    p.add_argument("--serve", metavar="URL", help="bench a running server instead (vdeploy serve, Triton): "
                   "http://HOST:PORT[/v2/models/NAME]; a concurrency sweep over the Open Inference Protocol")
    p.add_argument("--model", help="--serve: the model's name (default: the server's only model)")
    p.add_argument("--concurrency", default="1,2,4,8", help="--serve: clients in flight, e.g. 1,2,4,8")
    p.add_argument("--duration", type=float, default=10.0, help="--serve: measured seconds per concurrency")


def _default_backends(source: str) -> list[str]:
    import importlib.util

    from ..api import is_bundle
    from ..runtime.backends import runnable_backends
    from ..bundle import load_bundle

    if not is_bundle(source):
        return ["torch"]
    bundle = load_bundle(source)
    names = ["torch"] if importlib.util.find_spec("torch") and bundle.meta.get("provenance", {}).get("source") else []
    return names + runnable_backends(bundle)


def run(args) -> int:
    from ..errors import UserError
    from ..bench.runner import BenchConfig, run_bench
    from ..bench.report import plot_rows, print_rows
    from ..runtime.io import atomic_write_json
    from .common import expand_images, parse_list, parse_size

    if args.serve:
        return _run_serve(args)
    if not args.source:
        raise UserError("give a bundle or model spec to bench, or --serve URL")
    try:
        batches = [int(b) for b in parse_list(args.batch)]
    except ValueError:
        raise UserError(f"--batch must be integers like 1,2,4, got {args.batch!r}") from None
    if args.iters < 1 or args.warmup < 0 or any(b < 1 for b in batches):
        raise UserError("--iters and --batch must be at least 1, --warmup at least 0")
    try:
        streams = [int(s) for s in parse_list(args.streams)] if args.streams else [0]
    except ValueError:
        raise UserError(f"--streams must be integers like 1,2,4, got {args.streams!r}") from None
    if any(s < 1 for s in streams) and args.streams:
        raise UserError("--streams must be at least 1")
    images = [str(p) for p in expand_images(args.images)] if args.images else []
    backends = parse_list(args.backends) or _default_backends(args.source)
    rows = []
    for backend in backends:
        for batch in batches:
            for n in streams:
                cfg = BenchConfig(args.source, backend, batch, args.mode, args.iters, args.warmup, args.threads,
                                  parse_size(args.image_size, "--image-size"), images, args.weights, streams=n)
                print(f"bench {backend} batch {batch}{f' streams {n}' if n else ''} ({args.mode}) ...", flush=True)
                rows.append(run_bench(cfg))
    print_rows(rows)
    if args.json:
        atomic_write_json(args.json, rows)
    if args.plot:
        plot_rows(rows, args.plot)
    return 0


def _run_serve(args) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..bench.serve_sweep import SweepConfig, print_sweep, run_sweep
    from ..runtime.io import atomic_write_json
    from .common import expand_images, parse_list, parse_size

    if args.source:
        raise UserError("--serve benches a server: give no bundle (name the model with --model)")
    try:
        levels = [int(c) for c in parse_list(args.concurrency)]
    except ValueError:
        raise UserError(f"--concurrency must be integers like 1,2,4,8, got {args.concurrency!r}") from None
    if not levels or any(c < 1 or c > 256 for c in levels) or not 0 < args.duration <= 600:
        raise UserError("--concurrency must be 1..256 and --duration in (0, 600] seconds")
    images = expand_images(args.images) if args.images else []
    image = Path(images[0]).read_bytes() if images else _synthetic_png(parse_size(args.image_size, "--image-size"))
    cfg = SweepConfig(args.serve, args.model, levels, args.duration, min(2.0, args.duration), image)
    rows = run_sweep(cfg)
    print_sweep(rows)
    if args.json:
        atomic_write_json(args.json, rows)
    return 1 if any(r["errors"] for r in rows) else 0


def _synthetic_png(size) -> bytes:
    import cv2
    import numpy as np

    h, w = size or (480, 640)
    rng = np.random.default_rng(0)
    return cv2.imencode(".png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()
