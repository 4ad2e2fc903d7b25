from __future__ import annotations

import contextlib
from pathlib import Path

NAME = "eval"
HELP = "Score every backend of a bundle on a dataset (COCO, semantic, depth, Market-1501, ImageFolder), side by side."


def add_arguments(p):
    p.add_argument("source", help="bundle folder (or a model spec, scored through PyTorch)")
    p.add_argument("--dataset", required=True, metavar="SPEC",
                   help="COCO instances .json, or a folder: images/+labels/ (semantic), images/+depth/ or NYU's "
                        "images/+annotations/ (depth), query/+bounding_box_test/ (Market-1501), class sub-folders "
                        "(ImageFolder)")
    p.add_argument("--backends", help="comma-separated, e.g. torch,onnxruntime,openvino "
                                      "(default: every format in the bundle; torch for a model spec)")
    p.add_argument("--out", metavar="DIR", help="keep predictions, report.md and report.json here; "
                                                "a re-run with the same DIR resumes")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--format", dest="dataset_format", metavar="NAME",
                   help="dataset format, one of the registered ones (coco, semantic, depth, market1501, imagefolder, "
                        "...); default: detected from SPEC")
    p.add_argument("--class-map", type=Path, metavar="FILE",
                   help="JSON {model class name or index: dataset category id or name}")
    p.add_argument("--images", type=Path, metavar="DIR", help="COCO: folder of the json's file_name entries")
    p.add_argument("--ignore-index", type=int, default=255, help="semantic: label value not scored (255)")
    p.add_argument("--label-transform", default="none", choices=("none", "cityscapes", "reduce_zero_label"),
                   help="semantic: map Cityscapes label ids to train ids, or ADE20K's 0=other")
    p.add_argument("--split", help="semantic and depth, MMSegmentation layouts (img_dir/<split>, ann_dir/<split>; "
                                   "NYU's images/<split>, annotations/<split>): the split (default: semantic val, "
                                   "validation or test; depth test, val or validation; whichever is there)")
    # depth: defaults live in DatasetOptions (mmseg's NYU evaluation); None here means "not given"
    p.add_argument("--min-depth", type=float, metavar="M",
                   help="depth: score ground truth above this many metres (0.001)")
    p.add_argument("--max-depth", type=float, metavar="M",
                   help="depth: score ground truth below this many metres (10)")
    p.add_argument("--depth-crop", choices=("auto", "none", "nyu"),
                   help="depth: score only NYU's Eigen crop (rows 45:471, cols 41:601) or the whole map; "
                        "auto (default): nyu for NYU's images/+annotations/ layout, none otherwise")
    p.add_argument("--depth-scale", type=float, metavar="S",
                   help="depth: metres per unit of the 16-bit ground-truth PNGs (0.001 = millimetres, NYU's)")
    p.add_argument("--predictions", type=Path, action="append", default=[], metavar="FILE",
                   help="also score saved predictions (from-bin results, predict output); repeatable")
    p.add_argument("--weights", help="checkpoint for a model spec")
    p.add_argument("--threads", type=int, help="backend threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from ..scale.ray_batch import add_ray_arguments

    add_ray_arguments(p)


def run(args) -> int:
    from ..errors import UserError
    from ..eval import DatasetOptions, build_report, check_task, evaluate, open_dataset, print_table, write_report
    from ..scale.ray_batch import RayOptions
    from .common import is_bundle, open_predictor, parse_list

    if args.limit is not None and args.limit <= 0:
        raise UserError("--limit must be a positive number of images")
    ray_options = RayOptions.from_args(args)
    depth = {k: v for k, v in (("min_depth", args.min_depth), ("max_depth", args.max_depth),
                               ("depth_crop", args.depth_crop), ("depth_scale", args.depth_scale)) if v is not None}
    options = DatasetOptions(class_map=args.class_map, images_dir=args.images, ignore_index=args.ignore_index,
                             label_transform=args.label_transform, split=args.split, **depth)
    dataset = open_dataset(args.dataset, args.dataset_format, options)
    if depth and dataset.format != "depth":
        flags = ", ".join("--" + k.replace("_", "-") for k in depth)
        raise UserError(f"{flags}: only for a depth dataset; {args.dataset} is {dataset.format}")
    probe = None
    if is_bundle(args.source):
        from ..runtime.backends import runnable_backends
        from ..bundle import load_bundle

        bundle = load_bundle(args.source)
        task, classes, model_id = bundle.task, bundle.classes, f"bundle:{bundle.meta['digest']}"
        default = runnable_backends(bundle)
    else:
        probe = open_predictor(args.source, args.weights, "torch")
        task, classes, model_id = probe.task, probe.classes, f"{args.source}|{args.weights}"
        default = ["torch"]
    check_task(dataset.format, task)
    backends = parse_list(args.backends) or ([] if args.predictions else default)
    if len(set(backends)) != len(backends):
        raise UserError(f"--backends names a backend twice: {args.backends}")
    if not backends and not args.predictions:
        raise UserError("nothing to evaluate: give --backends or --predictions")

    def make_local_predictor(name):
        if name in ("torch", "pytorch") and not is_bundle(args.source) and not args.threads:
            return probe  # the model spec was built once already
        return open_predictor(args.source, args.weights, name, threads=args.threads)

    out = Path(args.out) if args.out else None
    with contextlib.ExitStack() as stack:
        make_predictor = (_ray_predictors(stack, ray_options, args) if ray_options is not None and backends
                          else make_local_predictor)
        results = evaluate(dataset, backends, make_predictor, model_id=model_id, classes=classes, out=out,
                           limit=args.limit, predictions=args.predictions, progress=not args.no_progress)
    report = build_report(results, args.source, dataset.describe(), args.limit)
    print_table(report)
    if out is not None:
        write_report(report, out)
        print(f"report: {out / 'report.md'}, {out / 'report.json'}")
    return 0


def _ray_predictors(stack, options, args):
    """make_predictor for evaluate(): each backend as a pool of Ray actors (vdeploy.scale.ray_batch)."""
    from functools import partial

    from ..scale.ray_batch import RayCluster
    from .common import open_predictor

    cluster = stack.enter_context(RayCluster(options))
    source, weights = (str(Path(p).resolve()) if p and Path(p).exists() else p for p in (args.source, args.weights))
    threads = args.threads or options.backend_threads
    return lambda name: cluster.pool(partial(open_predictor, source, weights, name, threads=threads))
