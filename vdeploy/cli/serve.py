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
    p.add_argument("--max-pixels", default="50M", metavar="N",
                   help="largest image accepted, in pixels, checked from its header before decoding (413); "
                        "e.g. 50M (default)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="close a connection whose request head is not complete within S seconds (default 10)")
    p.add_argument("--body-timeout", type=float, default=60.0, metavar="S",
                   help="answer 408 and close when a request body takes longer than S seconds (default 60)")
    p.add_argument("--keep-alive", type=float, default=5.0, metavar="S",
                   help="close idle keep-alive connections after S seconds (default 5)")
    p.add_argument("--max-connections", type=int, default=256, metavar="N",
                   help="connections or requests in progress past which new requests get 503 (default 256)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="S",
                   help="after SIGTERM/SIGINT, let requests in progress finish for S seconds, then close (default 10)")
    p.add_argument("--public-key", default=os.environ.get("VDEPLOY_PUBLIC_KEY"), metavar="PUBLIC.pem",
                   help="serve only bundles signed by this Ed25519 key (`vdeploy sign`; default: $VDEPLOY_PUBLIC_KEY)")
    p.add_argument("--require-signature", action="store_true", help="refuse to start without --public-key")


def run(args) -> int:
    from ..errors import UserError
    from ..runtime.io import parse_pixel_count
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
    for flag, value in [("--header-timeout", args.header_timeout), ("--body-timeout", args.body_timeout),
                        ("--keep-alive", args.keep_alive), ("--shutdown-timeout", args.shutdown_timeout),
                        ("--max-connections", args.max_connections)]:
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    max_pixels = parse_pixel_count(args.max_pixels, "--max-pixels")
    token = args.token or os.environ.get("VDEPLOY_TOKEN") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"vdeploy serve: warning: listening on {args.host} without --token; anyone who can reach it can use it")
    predictors = {}
    for name, bundle in zip(names, args.bundles):
        if args.public_key or args.require_signature:
            from ..bundle.signing import check_signature

            bundle = check_signature(bundle, args.public_key)  # the checked Bundle is the one served
        predictors[name] = Predictor(bundle, args.backend, threads=args.threads).load()
        print(f"{name}: {predictors[name].task}, {predictors[name].backend_name}, "
              f"{'batchable' if predictors[name].spec.get('batchable') else 'one image per call'}")
    policy = BatchPolicy(max_batch_size=args.max_batch_size, max_delay_s=args.max_delay_ms / 1000,
                         max_queue=args.max_queue, timeout_s=args.timeout)
    config = ServeConfig(host=args.host, port=args.port, token=token,
                         max_body_bytes=int(args.max_body_mb * (1 << 20)), policy=policy,
                         max_image_pixels=max_pixels, header_timeout_s=args.header_timeout,
                         body_timeout_s=args.body_timeout, keep_alive_s=args.keep_alive,
                         max_connections=args.max_connections, shutdown_timeout_s=args.shutdown_timeout)
    print(f"serving {', '.join(names)} on http://{args.host}:{args.port}/ (v2: /v2/models/NAME/infer)", flush=True)
    serve(predictors, config)
    return 0
