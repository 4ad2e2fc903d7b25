from __future__ import annotations

from pathlib import Path

NAME = "from-bin"
HELP = "Read raw output tensors written by another runtime, apply the bundle's postprocessing, write results."


def add_arguments(p):
    p.add_argument("source", help="bundle folder")
    p.add_argument("--outputs", required=True, type=Path, help="folder of the raw outputs (see --layout)")
    p.add_argument("--layout", default="{sample}/{name}.bin",
                   help="where each output file is under --outputs: {sample} (six-digit index), {stem} (the stem of "
                        "to-bin's input file), {index} (the output's position), {name} (its name); default "
                        "{sample}/{name}.bin (.npy also read); NPU dump folders: {stem}_{index}.bin")
    p.add_argument("--out", required=True, type=Path,
                   help="what `predict --out` writes: a results .json (detection, classification) or a folder "
                        "(label maps, embeddings); scored by `vdeploy eval --predictions`")
    p.add_argument("--bins", type=Path, help="the folder to-bin wrote (default: --outputs or its parent)")
    p.add_argument("--dtype", action="append", default=[], metavar="OUTPUT=DTYPE",
                   help="element type of an output's .bin files when deploy.json records none (then float32), "
                        "e.g. classes=int64")


def run(args) -> int:
    from ..errors import UserError
    from ..runtime.binio import from_bin
    from ..bundle import load_bundle

    dtypes = {}
    for item in args.dtype:
        name, _, dt = item.partition("=")
        if not name or not dt:
            raise UserError(f"--dtype wants OUTPUT=DTYPE, got {item!r}")
        dtypes[name] = dt
    writer = from_bin(load_bundle(args.source), args.outputs, args.out, bins=args.bins, dtypes=dtypes, layout=args.layout)
    print(f"{writer.summary()} from {writer.images} images' outputs -> {args.out}")
    return 0
