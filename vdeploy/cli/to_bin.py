from __future__ import annotations

from pathlib import Path

NAME = "to-bin"
HELP = "Write each image's preprocessed input as raw .bin files, for runtimes vdeploy does not drive."


def add_arguments(p):
    p.add_argument("source", help="bundle folder")
    p.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for inputs/NNNNNN/<input>.bin, info.txt, input_list.txt and preprocess.json")


def run(args) -> int:
    from ..runtime.binio import to_bin
    from ..bundle import load_bundle

    n = to_bin(load_bundle(args.source), args.images, args.out)
    print(f"{n} images -> {args.out} (info.txt, input_list.txt, preprocess.json; see docs/bin-workflow.md)")
    return 0
