"""`vdeploy convert-weights SRC --from timm|torchvision|detectron2 --to native-backbone OUT`."""
from __future__ import annotations

NAME = "convert-weights"
HELP = "Rename ResNet / Swin / ViT backbone weights into vdeploy's native names, with a coverage report."

TARGETS = ("native-backbone", "mmseg-vit")


def add_arguments(parser) -> None:
    parser.add_argument("src", help="source checkpoint (.pth, .pkl, .safetensors)")
    parser.add_argument("out", help="output file: .safetensors, .pth or .pt")
    parser.add_argument("--from", dest="source", required=True, choices=("timm", "torchvision", "detectron2"),
                        help="naming of the source checkpoint")
    parser.add_argument("--to", dest="target", default="native-backbone", choices=TARGETS,
                        help="naming to write (default native-backbone, see docs/tools.md; mmseg-vit: "
                             "mmseg's VisionTransformer names under backbone.)")
    parser.add_argument("--prefix", default="",
                        help="prepended to every output key, e.g. backbone.bottom_up. for a detectron2 R-CNN")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the output even when backbone weights are missing from the source")
    parser.add_argument("--report", metavar="JSON", help="write the full coverage lists as JSON")


def run(args) -> int:
    from ..errors import CheckpointError, UserError
    from ..runtime.io import atomic_write_json
    from ..tools.convert_weights import convert_state_dict, load_source, save_state_dict

    if not args.out.endswith((".safetensors", ".pth", ".pt")):
        raise UserError(f"{args.out}: output must end in .safetensors, .pth or .pt")
    conv = convert_state_dict(load_source(args.src), args.source)
    print_coverage(conv)
    if args.report:
        atomic_write_json(args.report, conv.summary())
    if conv.mismatched:
        raise CheckpointError(f"{len(conv.mismatched)} weight(s) have the wrong shape for {conv.arch}, "
                              f"e.g. {conv.mismatched[0][0]}; nothing written")
    if conv.missing and not args.allow_missing:
        raise CheckpointError(f"{len(conv.missing)} backbone weight(s) missing, e.g. {conv.missing[0]}; "
                              "nothing written (--allow-missing writes a partial file)")
    sd = conv.state_dict
    if args.target == "mmseg-vit":
        sd = mmseg_vit_names(conv)
    save_state_dict({args.prefix + k: v for k, v in sd.items()}, args.out)
    print(f"wrote {args.out}: {len(sd)} tensors")
    return 0


def mmseg_vit_names(conv, out=print) -> dict:
    from ..errors import UserError
    from ..tools.convert_mmseg_vit import DROPPED_NOTE, native_vit_to_mmseg

    if not conv.arch.startswith("vit"):
        raise UserError(f"--to mmseg-vit needs a ViT checkpoint; this one is {conv.arch}")
    sd, dropped = native_vit_to_mmseg(conv.state_dict)
    if dropped:
        out(f"  note: {DROPPED_NOTE}" if dropped == ["patch_embed.proj.bias"] else f"  dropped: {dropped}")
    return sd


def print_coverage(conv, out=print) -> None:
    out(f"{conv.arch}: source keys used {len(conv.used)}, unused {len(conv.unused)}; "
        f"target keys filled {len(conv.filled)}, missing {len(conv.missing)}, wrong shape {len(conv.mismatched)}")
    counters = [k for k in conv.unused if k.endswith("num_batches_tracked")]
    if counters:
        out(f"  unused: {len(counters)} x *.num_batches_tracked (BatchNorm step counters)")
    for k in conv.unused:
        if not k.endswith("num_batches_tracked"):
            out(f"  unused: {k}")
    for k in conv.missing:
        out(f"  missing: {k}")
    for k, expected, got in conv.mismatched:
        out(f"  wrong shape: {k} expects {expected}, source has {got}")
    if conv.synthesized:
        out(f"  {len(conv.synthesized)} BatchNorm statistics set to identity (the source stores scale and bias only)")
    for note in conv.notes:
        out(f"  note: {note}")
