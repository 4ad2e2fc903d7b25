from __future__ import annotations

NAME = "export-triton"
HELP = "Write a Triton Inference Server model repository (ONNX model + Python pre/postprocessing, as an ensemble)."


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder with an ONNX model")
    p.add_argument("out", help="new (or empty) folder for the model repository")
    p.add_argument("--name", help="model name on Triton (default: the bundle's folder name)")
    p.add_argument("--max-batch-size", type=int, default=8, help="for batchable bundles")
    p.add_argument("--max-delay-us", type=int, default=5000, help="dynamic batching queue delay")


def run(args) -> int:
    from ..errors import UserError
    from ..bundle import load_bundle
    from ..serve.triton_repo import write_triton_repository

    if args.max_batch_size < 1 or args.max_delay_us < 0:
        raise UserError("--max-batch-size must be at least 1 and --max-delay-us not negative")
    bundle = load_bundle(args.bundle)
    out = write_triton_repository(bundle, args.out, name=args.name, max_batch_size=args.max_batch_size,
                                  max_delay_us=args.max_delay_us)
    models = sorted(p.name for p in out.iterdir())
    print(f"Triton model repository -> {out} ({', '.join(models)}); run: tritonserver --model-repository {out}")
    return 0
