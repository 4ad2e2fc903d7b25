"""Reference label maps of the real MMSegmentation 1.2.2 for the ViT family (ViT, BEiT, MAE backbones;
UPerHead with MultiLevelNeck, SETR-UP, SETR-MLA with MLANeck, Segmenter, DPT, UPerHead with
Feature2Pyramid) for tests/test_mmseg_vit.py. Run it beside the project, in a scratch virtualenv
with mmseg 1.2.2 and mmcv-lite (never a project dependency):

    python make_mmseg_references.py ZOO_DIR GOLDENS_DIR OUT_DIR [CASE ...]

Grown from ../shared/reference/make_mmseg_goldens.py, with these changes:
- each case names `overrides` of its zoo config (dotted keys; `test_resize` sets the test
  pipeline's Resize scale): fewer transformer layers, a smaller test size and sliding window, so
  that the whole case runs in seconds on a CPU; the tests apply the same overrides to the
  project's config reader;
- integer buffers of the state dict (BEiT's `relative_position_index`) are not weights: the
  stand-in generator would fill them with floats, so their real values go to `bn_stats.npz`,
  the file of overrides that `../shared/acceptance/make_ckpt.py` applies after the stand-ins;
- Segmenter has no `conv_seg`: its class scores are cosine similarities of patch and class
  tokens LayerNorm-ed over the classes (`mask_norm`). Its stand-in class embeddings (He-scaled
  over 150 x 192, std 0.008) are multiplied by 100 to a trained model's size, else all classes
  look alike and one wins everywhere, and `mask_norm.weight` by 4 as `conv_seg` is in weights.py
  (`scaled` in the manifest);
- per image only the label map (compressed), the mean logit per class and margin statistics are
  kept; the manifest records the fairness of each case (classes present, the share of pixels
  whose top-two margin is tiny, and the label agreement when the backbone's output is perturbed
  by 1e-4 relative noise).
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
SMALL = {"test_resize": [512, 128]}
SMALL_SLIDE = lambda crop, stride: {"test_resize": [4 * crop, crop], "model.test_cfg.crop_size": [crop, crop],  # noqa
                                    "model.test_cfg.stride": [stride, stride]}
SHALLOW_L = {"model.backbone.num_layers": 4, "model.backbone.out_indices": [0, 1, 2, 3]}
CASES = {
    "vit_upernet_mln": ("vit/vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py",
                        dict(SMALL, **{"model.backbone.num_layers": 4, "model.backbone.out_indices": [0, 1, 2, 3]}),
                        {}),
    "setr_pup": ("setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py", dict(SMALL_SLIDE(256, 170), **SHALLOW_L), {}),
    "setr_mla": ("setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py", dict(SMALL_SLIDE(256, 170), **SHALLOW_L), {}),
    "segmenter_mask": ("segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py", SMALL_SLIDE(256, 240),
                       {"decode_head.cls_emb": 100.0, "decode_head.mask_norm.weight": 4.0}),
    "dpt": ("dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py", dict(SMALL), {}),
    "beit_upernet": ("beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py",
                     dict(SMALL_SLIDE(128, 85), **{"model.backbone.img_size": [128, 128]}), {}),
    "mae_upernet": ("mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py",
                    dict(SMALL_SLIDE(128, 85), **{"model.backbone.img_size": [128, 128]}), {}),
}


def set_path(cfg, key, value):
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = copy.deepcopy(value)


def apply_overrides(cfg, overrides):
    for key, value in overrides.items():
        if key == "test_resize":
            for pipe in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
                for step in pipe:
                    if step.get("type") == "Resize":
                        step["scale"] = tuple(value)
        else:
            set_path(cfg, key, value)


def to_bn(node):
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for v in node.values():
            to_bn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            to_bn(v)


def dataset_classes(cfg):
    from mmseg.registry import DATASETS
    import mmseg.datasets  # noqa: F401  (registers the dataset classes)
    return DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO["classes"]


def make_case(name):
    config, overrides, scaled = CASES[name]
    cfg = Config.fromfile(os.path.join(zoo, config))
    apply_overrides(cfg, overrides)
    to_bn(cfg.model)
    cfg.model.pretrained = None
    cfg.model.backbone.pop("init_cfg", None)
    cfg.model.backbone.pop("pretrained", None)
    model = init_model(cfg, None, device="cpu").eval()
    sd_model = model.state_dict()
    manifest = [(k, list(v.shape)) for k, v in sd_model.items()]
    sd = golden_state_dict(manifest)
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode()); h.update(v.tobytes())
    overrides_sd = {k: v.numpy().copy() for k, v in sd_model.items() if not v.is_floating_point()
                    and not k.endswith("num_batches_tracked")}
    for key, factor in scaled.items():
        overrides_sd[key] = sd[key] * np.float32(factor)
    sd.update(overrides_sd)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)

    # calibrate BatchNorm on the first image, layer by layer in forward order (as the goldens do)
    names = {m: n for n, m in model.named_modules()}
    stats, hooks = dict(overrides_sd), []
    def pre(mod, inp):
        x = inp[0]
        if x.shape[0] * x.shape[2] * x.shape[3] > 1:
            mod.running_mean.copy_(x.mean(dim=(0, 2, 3))); mod.running_var.copy_(x.var(dim=(0, 2, 3)))
        else:
            mod.running_mean.zero_(); mod.running_var.fill_(float((x ** 2).mean()))
        stats[names[mod] + ".running_mean"] = mod.running_mean.numpy().copy()
        stats[names[mod] + ".running_var"] = mod.running_var.numpy().copy()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(pre))
    img_dir = os.path.join(goldens, "images")
    with torch.no_grad():
        inference_model(model, cv2.imread(os.path.join(img_dir, IMAGES[0])))
    for hk in hooks:
        hk.remove()
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
    hk = model.backbone.register_forward_hook(perturb)
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
    hk.remove()
    with open(os.path.join(case_dir, "manifest.json"), "w") as f:
        json.dump({"config": config, "overrides": overrides, "checkpoint": "mmseg",
                   "classes": list(dataset_classes(cfg)), "scaled": scaled,
                   "weights_sha256": h.hexdigest(), "fairness": fair, "keys": manifest}, f, indent=0)


if __name__ == "__main__":
    for case in sys.argv[4:] or sorted(CASES):
        make_case(case)
