from __future__ import annotations

from .common import add_config_override_arguments
from .verify import add_gate_argument

NAME = "export"
HELP = "Export a model to a bundle (onnx, openvino, torchscript) and verify it against PyTorch."


def add_arguments(p):
    p.add_argument("model", help="config file (detectron2, centermask2, fast-reid, MMSegmentation) or torchvision:NAME")
    p.add_argument("--weights", help="checkpoint (.pth, .pkl, .safetensors); random init when absent")
    p.add_argument("--format", default="onnx", help="comma-separated: onnx,openvino,torchscript")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--input-size", help="fixed HxW input (letterbox for detectors)")
    size.add_argument("--dynamic", action="store_true", help="dynamic height/width (the default for detectors)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--slim", action="store_true", help="simplify the ONNX graph with onnxslim")
    p.add_argument("--letterbox", choices=("shrink", "fill"), default="shrink",
                   help="with a fixed --input-size: shrink (the framework's own resize, shrunk only when it does not "
                        "fit the canvas: the framework's detections) or fill (scaled up or down to fill the canvas)")
    p.add_argument("--precision", default="fp32", metavar="LIST",
                   help="comma-separated precisions to run and verify: fp32 (always), bf16 (OpenVINO's inference "
                        "precision; run as --backend openvino-bf16) and int8 (post-training static quantization: "
                        "model.int8.onnx, model.int8.xml; run as onnxruntime-int8, openvino-int8)")
    p.add_argument("--calib", metavar="DIR",
                   help="int8: a folder of calibration images like the model's data (default: generated scenes plus the "
                        "--images photos); from 8 images a quarter is held out to choose the float layers on and, from "
                        "16, another quarter to verify the int8 files on")
    p.add_argument("--static-outputs", action="store_true",
                   help="detectors: pad every output to the maximum detections, with a num_detections output, so "
                        "that every tensor has a fixed shape (NPU compilers, static TensorRT engines)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    add_gate_argument(p)
    add_config_override_arguments(p)
    p.add_argument("--classes", metavar="NAMES",
                   help="the model's class names, in class-index order: a comma-separated list or a file (a JSON "
                        "list, or one name per line); detectron2 and MMSegmentation configs name classes only "
                        "through their dataset, so a custom dataset's names are given here")
    p.add_argument("--images", nargs="*", default=[], help="photos to verify on (besides synthetic ones)")


def run(args) -> int:
    from ..errors import UserError
    from ..export import export_bundle
    from ..frameworks import build_model
    from ..runtime.tasks import get_task, parse_gate_options
    from .common import expand_images, parse_config_overrides, parse_list, parse_size, read_class_names

    size = parse_size(args.input_size)
    dm = build_model(args.model, args.weights, config_overrides=parse_config_overrides(args),
                     **({"input_size": size} if size else {}))
    if args.dynamic and dm.input_size:
        raise UserError(f"{args.model} only runs at a fixed size {dm.input_size}; --dynamic does not apply")
    if args.classes:
        dm.spec["classes"] = read_class_names(args.classes, len(dm.spec.get("classes") or []))
    if args.letterbox == "fill":
        if not dm.input_size:
            raise UserError("--letterbox fill needs a fixed --input-size (the canvas to fill)")
        dm.spec["preprocess"].setdefault("resize", {"type": "none"})["letterbox"] = "fill"
    if args.static_outputs:
        from ..export.static_outputs import with_static_outputs

        dm = with_static_outputs(dm)
    gates = parse_gate_options(args.gate)
    get_task(dm.spec["task"]).resolve_gates(gates)  # an unknown gate fails before any export work
    images = expand_images(args.images) if args.images else []
    bundle = export_bundle(dm, args.out, parse_list(args.format), input_size=size, opset=args.opset,
                           slim=args.slim, verify=not args.no_verify, verify_images=images,
                           gates=gates, precisions=parse_list(args.precision), calib=args.calib)
    print(f"bundle written: {bundle.path} ({', '.join(bundle.formats)})")
    return 0
