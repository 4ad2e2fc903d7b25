from __future__ import annotations

NAME = "export-triton"
HELP = ("Write a Triton Inference Server model repository: one Python-backend model running the bundle "
        "with vdeploy's runtime (default), or an ensemble around Triton's onnxruntime backend.")


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("out", help="new (or empty) folder for the model repository")
    p.add_argument("--name", help="model name on Triton (default: the bundle's folder name)")
    p.add_argument("--variant", choices=("python", "ensemble"), default="python",
                   help="python: runs on any Triton with the Python backend (the nvidia-pytriton wheel's "
                        "included); ensemble: Python pre/postprocessing around Triton's onnxruntime backend "
                        "(the full NGC image; needs an ONNX bundle). See docs/serving.md")
    p.add_argument("--max-batch-size", type=int, default=8, help="most images Triton's dynamic batcher gathers")
    p.add_argument("--max-delay-us", type=int, default=5000, help="dynamic batching queue delay")
    p.add_argument("--backend", help="python variant: the vdeploy backend to run (default: the bundle's first)")
    p.add_argument("--threads", type=int, help="python variant: intra-op threads of each instance")
    p.add_argument("--instances", type=int, default=1,
                   help="python variant: model instances (processes), each with an equal share of the cores "
                        "unless --threads is given")


def run(args) -> int:
    from ..errors import UserError
    from ..bundle import load_bundle
    from ..serve.triton_repo import write_triton_repository

    if args.max_batch_size < 1 or args.max_delay_us < 0 or args.instances < 1:
        raise UserError("--max-batch-size and --instances must be at least 1, --max-delay-us not negative")
    if args.variant == "ensemble" and (args.backend or args.threads):
        raise UserError("--backend and --threads are for the python variant (the ensemble runs Triton's onnxruntime)")
    bundle = load_bundle(args.bundle)
    out = write_triton_repository(bundle, args.out, name=args.name, variant=args.variant,
                                  max_batch_size=args.max_batch_size, max_delay_us=args.max_delay_us,
                                  backend=args.backend, threads=args.threads, instances=args.instances)
    models = sorted(p.name for p in out.iterdir())
    print(f"Triton model repository -> {out} ({', '.join(models)}); run: tritonserver --model-repository {out}")
    return 0
