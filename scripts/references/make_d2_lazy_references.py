"""Reference outputs of detectron2 LazyConfig models, made with the real detectron2.

Run with a Python that has detectron2 (never a vdeploy dependency):

    python scripts/references/make_d2_lazy_references.py CONFIG.py OUT.npz [key=value ...]

The model is `LazyConfig.load` + `instantiate`d, given the deterministic stand-in weights of
shared/goldens/weights.py (regenerated from its own state-dict keys and shapes, so the reference
file holds no weights), and run on one golden photo resized as the config's test mapper says
(the `key=value` overrides shrink it for a quick test). Saved, slim (well under 1 MB a case, so
the files live in tests/data/references/detectron2_lazy/): the key/shape manifest, the calibrated
BatchNorm statistics (float16), the resized image (uint8, as PNG bytes), the detections before pasting (boxes in
resized-image pixels, scores, classes, mask probabilities as float16), the backbone's smallest
feature maps whole and the channel means of the others, and for PanopticFPN the semantic logits at
a fixed random sample of pixel positions. tests/test_detectron2_lazyconfig.py compares vdeploy's
native model against it.

The committed cases (S = dataloader.test.mapper.augmentations.0.short_edge_length, M = ...max_size;
each file also records its own overrides): new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ,
COCO-Detection/retinanet_R_50_FPN_1x and fcos_R_50_FPN_1x, COCO-PanopticSegmentation/
panoptic_fpn_R_50_1x with S=320 M=512; ViTDet COCO/mask_rcnn_vitdet_b_100ep with S=256 M=256
model.backbone.square_pad=256 (cascade_mask_rcnn_swin_b_in21k_50ep: the same and
model.roi_heads.box_predictors.2.test_score_thresh=0.02); MViTv2 cascade_mask_rcnn_mvitv2_t_3x with
S=256 M=384.
"""
import io
import json
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "goldens"))
from weights import golden_state_dict  # noqa: E402

# detectron2's model_zoo needs pkg_resources only to find its bundled configs: use the zoo's copy
_pr = types.ModuleType("pkg_resources")
_pr.resource_filename = lambda pkg, p: os.path.join(SHARED, "zoo", "detectron2", p[len("configs/"):])
sys.modules.setdefault("pkg_resources", _pr)

from PIL import Image  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402


def calibrate_norms(model, images):
    """Set each batch norm's running statistics to its input's on this image, layer by layer in
    forward order (as make_d2_goldens.py does for FrozenBN), so activations stay normalised as in
    a trained network rather than exploding through dozens of stand-in norms. The statistics are
    rounded to float16 before use, so the reference file can keep them as float16 exactly.
    Returns the stats."""
    names = {m: n for n, m in model.named_modules()}
    stats, hooks = {}, []

    def pre(mod, inp):
        x = inp[0]
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)).half())
        mod.running_var.copy_(x.var(dim=(0, 2, 3)).half())
        stats[names[mod] + ".running_mean"] = mod.running_mean.numpy().astype(np.float16)
        stats[names[mod] + ".running_var"] = mod.running_var.numpy().astype(np.float16)

    for m in model.backbone.modules():
        if hasattr(m, "running_mean") and hasattr(m, "running_var") and m.running_mean is not None:
            hooks.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        model.backbone(images)
    for h in hooks:
        h.remove()
    return stats


SEM_SEG_SAMPLES = 1024  # pixel positions of the semantic logits kept (all classes at each)
WHOLE_FEATURES = 16384  # values of the smallest feature maps kept whole (at least the smallest one)


def slim_features(feats: dict) -> dict:
    """The smallest levels whole (up to WHOLE_FEATURES values); the others as their channel mean
    (a [1, H, W] map), which still catches a wrong spatial layout or scale at a fraction of the size."""
    out, kept = {}, 0
    for k in sorted(feats, key=lambda k: feats[k].size):
        if not out or kept + feats[k].size <= WHOLE_FEATURES:
            out[f"feature_{k}"] = feats[k]
            kept += feats[k].size
        else:
            out[f"feature_mean_{k}"] = feats[k].mean(axis=1)
    return out


def png_bytes(image: np.ndarray) -> np.ndarray:
    """A uint8 image as lossless PNG bytes (a third smaller than the zipped pixels)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, "PNG", optimize=True)
    return np.frombuffer(buf.getvalue(), np.uint8)


def slim_sem_seg(logits: np.ndarray) -> dict:
    """[C, H, W] semantic logits -> the logits at SEM_SEG_SAMPLES fixed random positions."""
    c, h, w = logits.shape
    index = np.sort(np.random.default_rng(0).choice(h * w, size=min(SEM_SEG_SAMPLES, h * w), replace=False))
    return {"sem_seg_index": index.astype(np.int64), "sem_seg_logits": logits.reshape(c, -1)[:, index]}


def main(config, out, overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    manifest = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in golden_state_dict(manifest).items()}, strict=True)
    aug = instantiate(cfg.dataloader.test.mapper.augmentations[0])
    rgb = np.asarray(Image.open(os.path.join(SHARED, "goldens", "images", "astronaut.png")).convert("RGB"))
    # FCOS has no input_format: its test mapper's image_format is what it is fed
    fmt = cfg.model.get("input_format", cfg.dataloader.test.mapper.get("image_format", "BGR"))
    img = rgb if fmt == "RGB" else rgb[:, :, ::-1]
    resized = aug.get_transform(img).apply_image(img)
    h, w = img.shape[:2]
    inp = {"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1).copy()), "height": h, "width": w}
    stats = calibrate_norms(model, model.preprocess_image([inp]).tensor)
    feats, extra = {}, {}
    model.backbone.register_forward_hook(lambda m, i, o: feats.update({k: v.detach().numpy() for k, v in o.items()}))
    with torch.no_grad():
        if hasattr(model, "forward_inference"):  # dense detectors (RetinaNet): boxes before rescaling
            images = model.preprocess_image([inp])
            features = model.backbone(images.tensor)
            features = [features[f] for f in model.head_in_features]
            inst = model.forward_inference(images, features, model.head(features))[0]
        else:
            inst = model.inference([inp], do_postprocess=False)
            if isinstance(inst, tuple):  # PanopticFPN: (instances, semantic logits over the padded input)
                extra.update(slim_sem_seg(inst[1][0].numpy()))
                inst = inst[0]
            inst = inst[0]
    masks = inst.pred_masks[:, 0].numpy() if inst.has("pred_masks") else np.zeros((0, 0, 0), np.float32)
    np.savez_compressed(out, manifest=json.dumps(manifest), config=os.path.basename(config),
                        overrides=json.dumps(overrides), resized_png=png_bytes(resized.astype(np.uint8)),
                        boxes=inst.pred_boxes.tensor.numpy(), scores=inst.scores.numpy(),
                        classes=inst.pred_classes.numpy(), mask_probs=masks.astype(np.float16),
                        **extra, **slim_features(feats),
                        **{f"bn_stats/{k}": v for k, v in stats.items()})
    print(f"{out}: {len(inst)} detections (top scores {inst.scores[:5].tolist()}), features {[(k, v.shape) for k, v in feats.items()]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
