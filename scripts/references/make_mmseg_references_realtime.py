"""Reference label maps of the real MMSegmentation 1.2.2 for ResNeSt, the real-time nets
(MobileNetV3 + LRASPPHead, STDC, PIDNet + PIDHead, DDRNet + DDRHead, CGNet, ERFNet, Fast-SCNN +
DepthwiseSeparableFCNHead) and PointRend (PointHead on semantic FPN), for
tests/test_mmseg_families_b.py. Run it beside the project, in a scratch virtualenv
with mmseg 1.2.2 and mmcv-lite (never a project dependency):

    python make_mmseg_references_realtime.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

The case layout is make_mmseg_references.py's: per case `manifest.json` (state-dict keys and
shapes, config, overrides, stand-in weights' SHA-256, fairness), `bn_stats.npz` (BatchNorm
statistics calibrated on the first image, layer by layer in forward order) and per image a
compressed npz with the label map, the mean logit per class and top-two margin quantiles.
`test_resize` overrides the test pipeline's Resize scale (a smaller test size, so that a case
runs in seconds on a CPU); the stand-ins' `conv_seg` is scaled by ../shared/goldens/weights.py
(x4 weight, x60 bias) so that a few classes win per image; the manifest records, per image, the
classes present, the share of pixels with a top-two margin under 1e-3 and the label agreement
when the backbone's output is perturbed by 1e-4 relative noise.
"""
import copy, hashlib, json, os, sys
import numpy as np
import torch
import cv2

zoo, goldens, out_dir = sys.argv[1:4]
sys.path.insert(0, goldens)
from weights import golden_state_dict  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmseg.apis import inference_model, init_model  # noqa: E402

IMAGES = ("astronaut.png", "chelsea.png", "coffee.png")
SMALL = {"test_resize": [512, 256]}
# DDRNet / PIDNet add stride-8 maps to maps resized to (h // 8, w // 8): mmseg fails unless the
# input size is a multiple of 8, so these cases resize to a fixed 512x256
FIXED = {"test_resize": [512, 256], "test_keep_ratio": False}
CASES = {
    # ResNeSt-50 in the S-101 config (the maths of every block, half the weights and time)
    "resnest_deeplabv3plus": ("resnest/resnest_s101-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024.py",
                              {"test_resize": [384, 192], "model.backbone.depth": 50}),
    # LRASPP pools 49x49 windows of the stride-8 features: images need >= 392 pixels a side
    "mobilenet_v3_large_lraspp": ("mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py",
                                  {"test_resize": [1024, 400]}),
    "mobilenet_v3_small_lraspp": ("mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py",
                                  {"test_resize": [1024, 400]}),
    "stdc1": ("stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py", SMALL),
    "stdc2": ("stdc/stdc2_4xb12-80k_cityscapes-512x1024.py", SMALL),
    "pidnet_s": ("pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py", FIXED),
    "pidnet_l": ("pidnet/pidnet-l_2xb6-120k_1024x1024-cityscapes.py", FIXED),
    "ddrnet_23_slim": ("ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py", FIXED),
    "cgnet": ("cgnet/cgnet_fcn_4xb8-60k_cityscapes-512x1024.py", SMALL),
    "erfnet": ("erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py", SMALL),
    "fastscnn": ("fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py", SMALL),
    # PointRend: both subdivision steps pick 8196 of 96x144 / 192x288 points (the top-k path)
    "pointrend_r50": ("point_rend/pointrend_r50_4xb2-80k_cityscapes-512x1024.py", {"test_resize": [384, 192]}),
}


def apply_overrides(cfg, overrides):
    """`test_resize`: the test pipeline's Resize scale (w, h); `test_keep_ratio`: its keep_ratio;
    other keys: dotted paths into the config."""
    fields = {"test_resize": "scale", "test_keep_ratio": "keep_ratio"}
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
                if step.get("type") == "Resize":
                    step[fields[key]] = tuple(value) if isinstance(value, list) else value


def to_bn(node):
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for v in node.values():
            to_bn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            to_bn(v)


def calibrate_bn(model, bgr):
    """Running statistics of each BatchNorm from its input on one image, in forward order."""
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
        inference_model(model, bgr)
    for h in hooks:
        h.remove()
    return stats


def dataset_classes(model, cfg):
    """init_model without a checkpoint does not always set dataset_meta: the dataset's own names."""
    from mmseg.registry import DATASETS

    meta = getattr(model, "dataset_meta", None) or {}
    return list(meta.get("classes") or DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO["classes"])


def make_case(name):
    config, overrides = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    apply_overrides(cfg, overrides)
    to_bn(cfg.model)
    cfg.model.pretrained = None
    for part in (cfg.model.backbone, cfg.model.backbone.get("backbone_cfg") or {}):
        part.pop("init_cfg", None)
        part.pop("pretrained", None)
    model = init_model(cfg, None, device="cpu").eval()
    manifest = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    sd = golden_state_dict(manifest)
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        h.update(v.tobytes())
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    img_dir = os.path.join(goldens, "images")
    stats = calibrate_bn(model, cv2.imread(os.path.join(img_dir, IMAGES[0])))
    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    np.savez_compressed(os.path.join(case_dir, "bn_stats.npz"), **stats)

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

    hook = model.backbone.register_forward_hook(perturb)
    for img in IMAGES:
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
                      "agreement_under_1e-4_backbone_noise": float((noisy == label).mean())}
        print(name, img, "input", res.metainfo.get("img_shape"), fair[stem], flush=True)
    hook.remove()
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": dataset_classes(model, cfg),
                   "scaled": "conv_seg as ../shared/goldens/weights.py scales it (weight x4, bias x60)",
                   "weights_sha256": h.hexdigest(), "fairness": fair, "keys": manifest}, f, indent=0)


if __name__ == "__main__":
    for case in sys.argv[4:] or sorted(CASES):
        make_case(case)
