"""`vdeploy convert-weights SRC OUT --from timm|torchvision|detectron2|segformer --to native-backbone|mmseg-*`."""
from __future__ import annotations

NAME = "convert-weights"
HELP = "Rename ResNet / Swin / ViT backbone weights into vdeploy's native names, with a coverage report."

TARGETS = ("native-backbone", "mmseg-vit", "mmseg-swin", "mmseg-mit")


def add_arguments(parser) -> None:
    parser.add_argument("src", help="source checkpoint (.pth, .pkl, .safetensors)")
    parser.add_argument("out", help="output file: .safetensors, .pth or .pt")
    parser.add_argument("--from", dest="source", required=True, choices=("timm", "torchvision", "detectron2", "segformer"),
                        help="naming of the source checkpoint (segformer: the official SegFormer code's MiT "
                             "checkpoints, for --to mmseg-mit)")
    parser.add_argument("--to", dest="target", default="native-backbone", choices=TARGETS,
                        help="naming to write (default native-backbone, see docs/tools.md; mmseg-vit, mmseg-swin, "
                             "mmseg-mit: the names of mmseg's VisionTransformer, SwinTransformer, "
                             "MixVisionTransformer under backbone.)")
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
    if (args.source == "segformer") != (args.target == "mmseg-mit"):
        raise UserError("--from segformer goes with --to mmseg-mit: MiT exists only in those two namings")
    if args.source == "segformer":
        from ..tools.convert_mmseg_mit import convert_segformer_mit
        conv = convert_segformer_mit(load_source(args.src))
    else:
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
    if args.target in ("mmseg-vit", "mmseg-swin"):
        sd = mmseg_names(conv, args.target)
    save_state_dict({args.prefix + k: v for k, v in sd.items()}, args.out)
    print(f"wrote {args.out}: {len(sd)} tensors")
    return 0


def mmseg_names(conv, target: str, out=print) -> dict:
    """Native ViT / Swin names -> mmseg's, with what has no place there reported."""
    from ..errors import UserError
    from ..tools import convert_mmseg_swin, convert_mmseg_vit

    arch, name, rename, expected_drop, note = {
        "mmseg-vit": ("vit", "ViT", convert_mmseg_vit.native_vit_to_mmseg, ["patch_embed.proj.bias"],
                      convert_mmseg_vit.DROPPED_NOTE),
        "mmseg-swin": ("swin", "Swin", convert_mmseg_swin.native_swin_to_mmseg, ["norm.weight", "norm.bias"],
                       convert_mmseg_swin.DROPPED_NOTE)}[target]
    if not conv.arch.startswith(arch):
        raise UserError(f"--to {target} needs a {name} checkpoint; this one is {conv.arch}")
    sd, dropped = rename(conv.state_dict)
    if dropped:
        out(f"  note: {note}" if sorted(dropped) == sorted(expected_drop) else f"  dropped: {dropped}")
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
