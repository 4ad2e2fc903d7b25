from __future__ import annotations

import os
from pathlib import Path

NAME = "serve"
HELP = "Serve bundles over HTTP (Open Inference Protocol v2, TorchServe-style /predictions, a web page)."


def add_arguments(p):
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle folders; each is served under its folder name")
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="model name for the bundle in the same position (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backend", help="onnxruntime, openvino or torchscript (default: each bundle's first)")
    p.add_argument("--threads", type=int, help="backend threads per model")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on all but health (default: $VDEPLOY_TOKEN)")
    p.add_argument("--max-batch-size", type=int, default=8, help="dynamic batching, for bundles marked batchable")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="how long a batch waits to fill")
    p.add_argument("--max-queue", type=int, default=64, help="images in flight per model before 503")
    p.add_argument("--timeout", type=float, default=100.0, help="per-request timeout in seconds (504)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit (413)")


def run(args) -> int:
    from ..errors import UserError
    from ..runtime.predictor import Predictor
    from ..serve import BatchPolicy, ServeConfig, serve
    from ..serve.names import check_model_name

    if len(args.name) > len(args.bundles):
        raise UserError(f"{len(args.name)} --name for {len(args.bundles)} bundles")
    names = args.name + [Path(b).resolve().name for b in args.bundles[len(args.name):]]
    for n in names:
        check_model_name(n)
    if len(set(names)) != len(names):
        raise UserError(f"two bundles share a model name ({', '.join(names)}); give --name")
    for flag, value in [("--port", args.port), ("--max-batch-size", args.max_batch_size), ("--max-queue", args.max_queue)]:
        if value < 1 or (flag == "--port" and value > 65535):
            raise UserError(f"{flag} {value} is out of range")
    if args.timeout <= 0 or args.max_delay_ms < 0 or args.max_body_mb <= 0:
        raise UserError("--timeout and --max-body-mb must be positive, --max-delay-ms not negative")
    token = args.token or os.environ.get("VDEPLOY_TOKEN") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"vdeploy serve: warning: listening on {args.host} without --token; anyone who can reach it can use it")
    predictors = {}
    for name, bundle in zip(names, args.bundles):
        predictors[name] = Predictor(bundle, args.backend, threads=args.threads).load()
        print(f"{name}: {predictors[name].task}, {predictors[name].backend_name}, "
              f"{'batchable' if predictors[name].spec.get('batchable') else 'one image per call'}")
    policy = BatchPolicy(max_batch_size=args.max_batch_size, max_delay_s=args.max_delay_ms / 1000,
                         max_queue=args.max_queue, timeout_s=args.timeout)
    config = ServeConfig(host=args.host, port=args.port, token=token,
                         max_body_bytes=int(args.max_body_mb * (1 << 20)), policy=policy)
    print(f"serving {', '.join(names)} on http://{args.host}:{args.port}/ (v2: /v2/models/NAME/infer)", flush=True)
    serve(predictors, config)
    return 0
