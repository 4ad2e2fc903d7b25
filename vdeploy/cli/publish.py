"""`vdeploy publish CKPT OUT [--safetensors]`: a release checkpoint, weights only, named by its hash."""
from __future__ import annotations

NAME = "publish"
HELP = "Strip a training checkpoint to its model weights and name the file by its SHA-256 (OUT-1a2b3c4d.pth)."


def add_arguments(parser) -> None:
    parser.add_argument("ckpt", help="training checkpoint (.pth/.pt, detectron2 .pkl, .safetensors)")
    parser.add_argument("out", help="output name; the hash is appended before the suffix: pub.pth -> pub-<sha8>.pth")
    parser.add_argument("--safetensors", action="store_true", help="write a .safetensors file instead of torch.save")


def run(args) -> int:
    from ..tools.publish import publish_checkpoint

    print(publish_checkpoint(args.ckpt, args.out, safetensors=args.safetensors))
    return 0
