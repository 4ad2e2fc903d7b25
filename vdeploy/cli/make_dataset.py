from __future__ import annotations

NAME = "make-dataset"
HELP = "Make a small labelled dataset: the synthetic shapes, or photos labelled by a bundle's predictions."


def add_arguments(p):
    p.add_argument("out", help="new folder to write the dataset into")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", metavar="FORMAT", help="generated shapes scenes: coco, semantic, imagefolder, market1501")
    src.add_argument("--photos", nargs="+", metavar="PATH", help="image files or folders to label with --bundle")
    p.add_argument("--bundle", help="the model whose predictions become the labels (with --photos)")
    p.add_argument("--backend", help="backend to label with (default: the bundle's first)")
    p.add_argument("--score-thr", type=float, default=0.5, help="detections: keep those scoring at least this (0.5)")
    p.add_argument("--n", type=int, default=24, help="synthetic: images (per class for imagefolder, identities for market1501)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..eval.make_dataset import make_from_predictions, make_synthetic
    from ..runtime.predictor import Predictor
    from .common import expand_images

    out = Path(args.out)
    if args.synthetic:
        if args.bundle:
            raise UserError("--bundle labels --photos; a synthetic dataset has its own labels")
        spec = make_synthetic(out, args.synthetic, args.n, args.seed)
    else:
        if not args.bundle:
            raise UserError("--photos needs --bundle: the model whose predictions become the labels")
        predictor = Predictor(args.bundle, args.backend).load()
        spec = make_from_predictions(out, expand_images(args.photos), predictor, args.score_thr)
        print("labels are this model's predictions: scoring with them measures agreement with it, not accuracy")
    print(f"dataset written; evaluate with: vdeploy eval BUNDLE --dataset {spec}")
    return 0
