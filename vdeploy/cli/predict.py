from __future__ import annotations

import sys
from pathlib import Path

NAME = "predict"
HELP = "Run a bundle (or a model spec through PyTorch) on images and write the results."

NAMING = """\
Output names: every image is named by its path under the folder argument it came from (a file
argument: its file name). When the images come from more than one folder, each name starts with
that folder's name (`a/x.png`, `b/x.png`; two folders of the same name get `imgs`, `imgs-2`).
The name is the `file_name` in the JSON results; the other outputs replace the image's suffix with
their own: label maps NAME.png, embeddings NAME.npy, drawings NAME.jpg (x.png gives x.png, x.npy,
x.jpg), except where two images differ only by their suffix: x.png and x.jpg give x.png.png and
x.jpg.png. An image that cannot be read is reported and skipped; the
others are written and the exit status is 1 (--strict: stop at the first one, exit 2).
"""


def add_arguments(p):
    import argparse

    from .common import add_config_override_arguments

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = NAMING
    p.add_argument("source", help="bundle folder, config file, or torchvision:NAME")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--weights", help="checkpoint for a model spec")
    p.add_argument("--backend", help="onnxruntime, openvino, torchscript or torch (default: the bundle's first)")
    p.add_argument("--out", required=True,
                   help="results file (.json) or folder (label maps NAME.png, embeddings NAME.npy)")
    p.add_argument("--save-vis", metavar="DIR", help="also draw the predictions into DIR (NAME.jpg)")
    p.add_argument("--score-thr", type=float, metavar="S",
                   help="--save-vis: draw the detections scoring at least S (default 0.5); results keep them all")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first image that cannot be read (default: skip it, exit 1 at the end)")
    p.add_argument("--input-size", help="fixed HxW letterbox input for a model spec")
    add_config_override_arguments(p)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    from ..scale.ray_batch import add_ray_arguments

    add_ray_arguments(p)


def named_images(items) -> list[tuple[Path, str]]:
    """(image path, output name) for the image arguments, each image once; see NAMING."""
    from ..errors import UserError
    from .common import expand_images

    for it in items:
        if not Path(it).exists():
            raise UserError(f"{it}: no such image file")
    folders = [Path(it) for it in items if Path(it).is_dir()]
    seen, rows = set(), []  # rows: (path, root, path under root)
    for path in expand_images(items):
        key = path.resolve()
        if key in seen:  # `predict a a/x.png`: one input, one output
            continue
        seen.add(key)
        # expand_images lists a folder's images as paths under that folder, so a lexical test finds it
        root = next((f for f in folders if path.is_relative_to(f)), path.parent)
        rows.append((path, root, path.relative_to(root).as_posix()))
    roots = list(dict.fromkeys(root.resolve() for _, root, _ in rows))
    if len(roots) == 1:
        return [(path, rel) for path, _, rel in rows]
    labels: dict[Path, str] = {}
    for r in roots:
        base = r.name or "root"
        label, n = base, 1
        while label in labels.values():
            n += 1
            label = f"{base}-{n}"
        labels[r] = label
    return [(path, f"{labels[root.resolve()]}/{rel}") for path, root, rel in rows]


def run(args) -> int:
    from ..errors import UserError
    from ..runtime.io import atomic_write_image, read_image
    from ..runtime.outputs import ResultsWriter
    from ..runtime.vis import draw
    from ..scale.ray_batch import RayOptions
    from .common import open_predictor, parse_config_overrides, parse_size

    ray_options = RayOptions.from_args(args)
    images = named_images(args.images)
    out = Path(args.out)
    vis_dir = Path(args.save_vis) if args.save_vis else None
    if args.score_thr is not None and not 0.0 <= args.score_thr <= 1.0:
        raise UserError(f"--score-thr must be in [0, 1], got {args.score_thr}")
    predictor = open_predictor(args.source, args.weights, args.backend, input_size=parse_size(args.input_size),
                               threads=args.threads, device=args.device, config_overrides=parse_config_overrides(args))
    classes = predictor.classes
    writer = ResultsWriter(out, predictor.task, classes, names=[name for _, name in images])
    if vis_dir is not None and vis_dir.exists() and not vis_dir.is_dir():
        raise UserError(f"--save-vis {vis_dir}: is a file, not a folder")
    verification = predictor.bundle.meta.get("verification") or {}
    if verification and not verification.get("passed", True):
        print(f"warning: this bundle failed its verification ({verification.get('first_failure', '')}); "
              "its predictions may not be the model's", file=sys.stderr)

    # Streamed: one image and its prediction in memory at a time (see vdeploy.runtime.outputs:
    # an interrupted run leaves the old results file).
    bad = []
    if ray_options is not None:
        bad = _predict_on_ray(args, ray_options, images, writer, predictor, vis_dir)
    else:
        with writer:
            for path, name in images:
                try:
                    img = read_image(path)
                    pred = predictor.predict(img)
                except UserError as e:
                    if args.strict:
                        raise
                    print(f"skipped: {e}", file=sys.stderr)
                    bad.append(str(e))
                    continue
                writer.add(name, pred)
                if vis_dir is not None:
                    atomic_write_image(vis_dir / f"{writer.file_stem(name)}.jpg",
                                       draw(img, pred, classes, args.score_thr))
    print(f"{writer.summary()} from {writer.images} images ({predictor.backend_name}) -> {out}" if writer.images
          else f"no image could be read; nothing written to {out}")
    if bad:
        print(f"{len(bad)} of {len(images)} images could not be read and were skipped:\n  " + "\n  ".join(bad),
              file=sys.stderr)
        return 1
    return 0


def _predict_on_ray(args, options, images, writer, predictor, vis_dir) -> list[str]:
    """The same images on Ray actors (vdeploy.scale.ray_batch), resumable; returns the skipped ones."""
    from functools import partial

    from ..runtime.io import atomic_write_image, read_image
    from ..runtime.vis import draw
    from ..scale.ray_batch import RayCluster, predict_images
    from .common import open_predictor, parse_config_overrides, parse_size

    def absolute(p):  # the actors' working folder is not ours
        return str(Path(p).resolve()) if p and Path(p).exists() else p

    make_predictor = partial(open_predictor, absolute(args.source), absolute(args.weights), predictor.backend_name,
                             input_size=parse_size(args.input_size), threads=args.threads or options.backend_threads,
                             device=args.device, config_overrides=parse_config_overrides(args))
    model_id = "|".join(map(str, (predictor.spec.get("digest") or args.source, args.weights, predictor.backend_name)))

    def draw_one(path, name, pred):
        if vis_dir is not None:
            atomic_write_image(vis_dir / f"{writer.file_stem(name)}.jpg",
                               draw(read_image(path), pred, predictor.classes, args.score_thr))

    with RayCluster(options) as cluster:
        return predict_images(cluster.pool(make_predictor), images, writer, model_id, on_prediction=draw_one,
                              on_skip=lambda reason: print(f"skipped: {reason}", file=sys.stderr), strict=args.strict)
