from __future__ import annotations

NAME = "triton-serve"
HELP = ("Serve `vdeploy export-triton` repositories with the Triton Inference Server of the nvidia-pytriton "
        "wheel, run from a Python environment of its own (built on first use).")


def add_arguments(p):
    p.add_argument("repositories", nargs="+", help="model repositories written by vdeploy export-triton")
    p.add_argument("--env", help="Triton's Python environment (default: ~/.cache/vdeploy/triton-env-pyXY; "
                                 "built there when absent: nvidia-pytriton, numpy<2, vdeploy's runtime)")
    p.add_argument("--host", default="127.0.0.1", help="address of the HTTP, gRPC and metrics endpoints")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics; 0: none")


def run(args) -> int:
    import signal
    import subprocess
    from pathlib import Path

    from ..errors import UserError
    from ..serve.triton_server import build_env, default_env, server_command, stop

    for repo in args.repositories:
        if not Path(repo).is_dir():
            raise UserError(f"{repo}: no such model repository")
    env = Path(args.env) if args.env else default_env()
    print(f"Triton's Python environment: {env} (built on first use)", flush=True)
    build_env(env)
    argv, environ = server_command(env, args.repositories, http_port=args.http_port, grpc_port=args.grpc_port,
                                   metrics_port=args.metrics_port or None, host=args.host)
    process = subprocess.Popen(argv, env=environ)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    # a SIGTERM to this process (a supervisor, `kill PID`) must not orphan the server
    signal.signal(signal.SIGTERM, terminate)
    try:
        return process.wait()
    finally:
        stop(process, timeout=45)  # past Triton's 30 s exit timeout; Triton unloads its models (and their Python stub processes) before it exits
