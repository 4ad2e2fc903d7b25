"""What the make_mmseg_references*.py scripts share: their command line, the config preparation
(SyncBN read as BN, no pretrained downloads, test-pipeline overrides), the shared stand-in weights,
BatchNorm calibration on one image and the per-image label maps with their fairness figures.
Runs only in a scratch virtualenv with the real mmseg 1.2.2 (never a project dependency).
"""
import argparse, copy, hashlib, json, os, sys
import numpy as np
import torch
import cv2
from mmengine.config import Config
from mmseg.apis import inference_model, init_model

IMAGES = ("astronaut.png", "chelsea.png", "coffee.png")


def parse_args(doc, cases):
    """ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]; an empty case list means every case."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("zoo", metavar="ZOO_DIR", help="MMSegmentation 1.2.2's configs (../shared/zoo/mmseg)")
    p.add_argument("goldens", metavar="GOLDENS_DIR", help="../shared/goldens (weights.py, images/)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder that gets one subfolder per case")
    p.add_argument("cases", metavar="CASE", nargs="*", help="cases to make (default: all): " + ", ".join(cases))
    args = p.parse_args()
    unknown = [c for c in args.cases if c not in cases]
    if unknown:
        p.error("unknown case(s): " + ", ".join(unknown))
    return args


def golden_state_dict_from(goldens):
    """The shared stand-in weight generator, ../shared/goldens/weights.py."""
    sys.path.insert(0, goldens)
    from weights import golden_state_dict
    return golden_state_dict


def apply_overrides(cfg, overrides):
    """`test_resize`: the test pipeline's Resize scale (w, h); `test_keep_ratio`: its keep_ratio;
    `test_shortest_edge`: its ResizeShortestEdge scale; other keys: dotted paths into the config."""
    fields = {"test_resize": "scale", "test_keep_ratio": "keep_ratio", "test_shortest_edge": "scale"}
    steps = {"test_resize": "Resize", "test_keep_ratio": "Resize", "test_shortest_edge": "ResizeShortestEdge"}
    for key, value in overrides.items():
        if key not in fields:
            *parents, last = key.split(".")
            node = cfg
            for part in parents:
                node = node[part]
            node[last] = copy.deepcopy(value)
            continue
        for pipe in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
            for step in pipe:
                if step.get("type") == steps[key]:
                    step[fields[key]] = tuple(value) if isinstance(value, list) else value


def to_bn(node):
    """SyncBN needs a process group; at inference it is plain BN."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for v in node.values():
            to_bn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            to_bn(v)


def prepare_config(cfg, overrides):
    """Overrides applied, SyncBN as BN, and no pretrained checkpoint to fetch (the stand-in
    weights replace every parameter afterwards)."""
    apply_overrides(cfg, overrides)
    to_bn(cfg.model)
    cfg.model.pretrained = None
    backbone = cfg.model.get("backbone") or cfg.model.get("image_encoder")  # SAN: its CLIP image encoder
    for part in (backbone, backbone.get("backbone_cfg") or {}):
        part.pop("init_cfg", None)
        part.pop("pretrained", None)


def stand_in_weights(model, golden_state_dict):
    """(state-dict keys and shapes, the stand-in weights for them, their SHA-256)."""
    manifest = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    sd = golden_state_dict(manifest)
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        h.update(v.tobytes())
    return manifest, sd, h.hexdigest()


def calibrate_bn(model, bgr, seed=None):
    """Running statistics of each BatchNorm from its input on one image, layer by layer in
    forward order; `seed` is set right before the forward (LightHamHead draws random bases)."""
    names = {m: n for n, m in model.named_modules()}
    stats, hooks = {}, []

    def pre(mod, inp):
        x = inp[0]
        if x.shape[0] * x.shape[2] * x.shape[3] > 1:
            mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
            mod.running_var.copy_(x.var(dim=(0, 2, 3)))
        else:  # a 1x1 map (global pooling branches): zero mean, the input's power as variance
            mod.running_mean.zero_()
            mod.running_var.fill_(float((x ** 2).mean()))
        stats[names[mod] + ".running_mean"] = mod.running_mean.numpy().copy()
        stats[names[mod] + ".running_var"] = mod.running_var.numpy().copy()

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        inference_model(model, bgr)
    for h in hooks:
        h.remove()
    return stats


def dataset_classes(cfg, model=None):
    """The model's class names (its dataset_meta when init_model set one), else the dataset's."""
    from mmseg.registry import DATASETS
    import mmseg.datasets  # noqa: F401  (registers the dataset classes)

    meta = (getattr(model, "dataset_meta", None) or {}) if model is not None else {}
    return list(meta.get("classes") or DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO["classes"])


def label_map_references(model, name, img_dir, images, case_dir):
    """Per image, a compressed npz with the label map, the mean logit per class and top-two margin
    quantiles; returns the fairness figures per image stem: the classes present, the share of
    pixels with a top-two margin under 1e-3 and the label agreement when the backbone's output is
    perturbed by 1e-4 relative noise."""
    fair, noise = {}, {"on": False}

    def perturb(mod, inp, out):
        if not noise["on"]:
            return out
        g = torch.Generator().manual_seed(0)

        def jitter(t):
            if isinstance(t, (list, tuple)):
                return type(t)(jitter(x) for x in t)
            return t + 1e-4 * t.abs().mean() * torch.randn(t.shape, generator=g)
        return jitter(out)

    hook = getattr(model, "backbone", getattr(model, "image_encoder", None)).register_forward_hook(perturb)
    for img in images:
        bgr = cv2.imread(os.path.join(img_dir, img))
        with torch.no_grad():
            res = inference_model(model, bgr)
            noise["on"] = True
            noisy = inference_model(model, bgr).pred_sem_seg.data[0].numpy()
            noise["on"] = False
        label = res.pred_sem_seg.data[0].numpy().astype(np.uint8)
        logits = res.seg_logits.data.numpy()
        top2 = np.sort(logits, axis=0)[-2:]
        margin = top2[1] - top2[0]
        stem = os.path.splitext(img)[0]
        np.savez_compressed(os.path.join(case_dir, stem + ".npz"), orig_hw=np.array(bgr.shape[:2]), label_map=label,
                            seg_logits_mean_c=logits.mean(axis=(1, 2)),
                            top2_margin_quantiles=np.quantile(margin, [0.001, 0.01, 0.5]))
        counts = np.bincount(label.ravel(), minlength=logits.shape[0]) / label.size
        fair[stem] = {"classes": int((counts > 0).sum()), "classes_over_1pct": int((counts > 0.01).sum()),
                      "margin_under_1e-3": float((margin < 1e-3).mean()), "margin_median": float(np.median(margin)),
                      "relative_margin_under_1e-3": float((margin < 1e-3 * np.abs(top2[1])).mean()),
                      "agreement_under_1e-4_backbone_noise": float((noisy == label).mean())}
        print(name, img, "input", res.metainfo.get("img_shape"), fair[stem], flush=True)
    hook.remove()
    return fair


def write_references(model, name, bn_stats, img_dir, images, out_dir):
    """OUT_DIR/<name>/bn_stats.npz and the label_map_references of every image;
    -> (the case folder, the fairness figures per image)."""
    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    np.savez_compressed(os.path.join(case_dir, "bn_stats.npz"), **bn_stats)
    return case_dir, label_map_references(model, name, img_dir, images, case_dir)


def make_case(name, config, overrides, zoo, goldens, out_dir, images=IMAGES):
    """One case in OUT_DIR/<name>/: `manifest.json` (state-dict keys and shapes, config, overrides,
    stand-in weights' SHA-256, fairness), `bn_stats.npz` (BatchNorm statistics calibrated on the
    first image) and the label_map_references of every image; `conv_seg` is as
    ../shared/goldens/weights.py scales it (x4 weight, x60 bias) so that a few classes win per image."""
    cfg = Config.fromfile(os.path.join(zoo, config))
    prepare_config(cfg, overrides)
    model = init_model(cfg, None, device="cpu").eval()
    manifest, sd, sha = stand_in_weights(model, golden_state_dict_from(goldens))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    stats = calibrate_bn(model, cv2.imread(os.path.join(img_dir, images[0])))
    case_dir, fair = write_references(model, name, stats, img_dir, images, out_dir)
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": dataset_classes(cfg, model),
                   "scaled": "conv_seg as ../shared/goldens/weights.py scales it (weight x4, bias x60)",
                   "weights_sha256": sha, "fairness": fair, "keys": manifest}, f, indent=0)
