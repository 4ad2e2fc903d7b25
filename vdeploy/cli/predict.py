from __future__ import annotations

from pathlib import Path

NAME = "predict"
HELP = "Run a bundle (or a model spec through PyTorch) on images and write the results."


def add_arguments(p):
    p.add_argument("source", help="bundle folder, config file, or torchvision:NAME")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--weights", help="checkpoint for a model spec")
    p.add_argument("--backend", help="onnxruntime, openvino, torchscript or torch (default: the bundle's first)")
    p.add_argument("--out", required=True, help="results file (.json) or folder (label maps, embeddings)")
    p.add_argument("--save-vis", metavar="DIR", help="also draw the predictions into DIR")
    p.add_argument("--input-size", help="fixed HxW letterbox input for a model spec")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from ..runtime.io import atomic_save_npy, atomic_write_image, atomic_write_json, read_image
    from ..runtime.results import classification_result, to_coco_results
    from .common import expand_images, open_predictor, parse_size

    images = expand_images(args.images)
    predictor = open_predictor(args.source, args.weights, args.backend, input_size=parse_size(args.input_size),
                               threads=args.threads, device=args.device)
    task, classes = predictor.task, predictor.classes
    results, per_image = [], []
    for path in images:
        img = read_image(path)
        pred = predictor.predict(img)
        per_image.append((path, img, pred))
        if task in ("detection", "instance_segmentation"):
            results += to_coco_results(pred, path.name, classes)
        elif task == "classification":
            results.append(classification_result(pred, path.name, classes))
    # Everything succeeded: only now touch the outputs.
    out = Path(args.out)
    if task in ("detection", "instance_segmentation", "classification"):
        atomic_write_json(out, results)
        summary = f"{len(results)} results" if task != "classification" else f"{len(results)} images classified"
    elif task == "semantic_segmentation":
        for path, _, pred in per_image:
            atomic_write_image(out / f"{path.stem}.png", pred.label_map.astype("uint8" if pred.label_map.max() < 256 else "uint16"))
        summary = f"{len(per_image)} label maps"
    else:
        for path, _, pred in per_image:
            atomic_save_npy(out / f"{path.stem}.npy", pred.features[None])
        summary = f"{len(per_image)} embeddings"
    if args.save_vis:
        from ..runtime.vis import draw

        for path, img, pred in per_image:
            atomic_write_image(Path(args.save_vis) / f"{path.stem}.jpg", draw(img, pred, classes))
    print(f"{summary} from {len(images)} images ({predictor.backend_name}) -> {out}")
    return 0


