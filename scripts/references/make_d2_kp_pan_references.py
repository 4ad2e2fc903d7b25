"""Reference outputs of the real detectron2 for keypoint R-CNN and panoptic FPN. Run beside the
project, in the scratch virtualenv that has detectron2 (../shared/reference/README.md), never as a
project dependency:

    python make_d2_kp_pan_references.py SHARED_REFERENCE_DIR D2_SRC OUT_DIR IMAGES CASE... [--perturb]

OUT_DIR/../images must hold the images; IMAGES are their names, comma-separated. The weights,
BatchNorm calibration and manifest are ../shared/reference/make_d2_goldens.py's (`build`,
`calibrate_frozen_bn`); what is kept per case (tests/data/references/README.md):

- keypoint cases: `keypoints.json`, detectron2's final detections per image: box x1 y1 x2 y2,
  score, class and keypoints [[x, y, score] * K] in detectron2's continuous coordinates (COCO's
  pixel indices plus 0.5), rounded to 1e-4 (a keypoint AP bar needs no more);
- panoptic cases: `panoptic.json` ({image: segments_info, as detectron2 returns it}) and
  `panoptic/IMAGE.png`, the segment-id map in COCO's panoptic PNG encoding (id = R + 256 G + 256^2 B).

`--perturb` writes the same outputs under OUT_DIR/CASE/perturbed/ with detectron2's own backbone
features multiplied by (1 + 1e-4 N(0, 1)), for the fairness measure in the README (not committed).
"""
import hashlib
import json
import os
import sys

args = [a for a in sys.argv[1:] if a != "--perturb"]
PERTURB = "--perturb" in sys.argv
ref_dir, src, out_dir = args[:3]
images = args[3].split(",")
sys.path.insert(0, ref_dir)
import make_d2_goldens as base  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import detectron2.data.transforms as T  # noqa: E402

SMALL = ["INPUT.MIN_SIZE_TEST", 320, "INPUT.MAX_SIZE_TEST", 512]  # keeps the conformance tests quick
# No output layer is rescaled beyond weights.py's: keypoints are the argmax of the upsampled heatmap
# and panoptic stuff the argmax of the semantic logits, both unchanged by scaling the logits.
CASES = {
    "keypoint_rcnn_R_50_FPN_3x": ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml", SMALL),
    # The stand-in box classifier is overconfident: ~350-390 detections per image score above the
    # combination's 0.5, so the top-100 cut (scores 3e-4 apart there, as far as float32 rounding moves
    # them) would decide which instances become segments. At 0.95, 60 and 23 instances are combined, the
    # cut plays no part and the nearest score is 1.5e-3 from the threshold on both images.
    "panoptic_fpn_R_50_3x": ("COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
                             SMALL + ["MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.95]),
}


def id_to_rgb(ids):
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def run(name, perturb):
    config, overrides = CASES[name]
    torch.manual_seed(0)
    cfg, model, manifest = base.build(src, config, [str(v) for v in overrides])
    case_dir = os.path.join(out_dir, name)
    bgr0 = cv2.imread(os.path.join(out_dir, "..", "images", images[0]))
    stats = base.calibrate_frozen_bn(model, cfg, bgr0)
    dest = os.path.join(case_dir, "perturbed") if perturb else case_dir
    os.makedirs(os.path.join(dest, "panoptic"), exist_ok=True)
    if not perturb:
        np.savez_compressed(os.path.join(case_dir, "bn_stats.npz"), **stats)
        h = hashlib.sha256()
        for k, v in base.golden_state_dict(manifest).items():
            h.update(k.encode()); h.update(v.tobytes())
        with open(os.path.join(case_dir, "manifest.json"), "w") as f:
            json.dump({"config": config, "overrides": [str(v) for v in overrides], "weights_sha256": h.hexdigest(),
                       "keys": manifest}, f, indent=0)
    if perturb:
        g = torch.Generator().manual_seed(1)
        model.backbone.register_forward_hook(
            lambda m, i, o: {k: v * (1 + 1e-4 * torch.randn(v.shape, generator=g)) for k, v in o.items()})
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    dets, panoptic = [], {}
    for img_name in images:
        bgr = cv2.imread(os.path.join(out_dir, "..", "images", img_name))
        h, w = bgr.shape[:2]
        resized = aug.get_transform(bgr).apply_image(bgr)
        inp = {"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)), "height": h, "width": w}
        with torch.no_grad():
            out = model([inp])[0]  # detectron2's own postprocessing (detector_postprocess, combination)
        inst = out["instances"]
        if inst.has("pred_keypoints"):
            for i in range(len(inst)):
                dets.append({"image": img_name, "category_id": int(inst.pred_classes[i]), "score": float(inst.scores[i]),
                             "bbox": [round(float(v), 4) for v in inst.pred_boxes.tensor[i]],
                             "keypoints": [[round(v, 4) for v in kp] for kp in inst.pred_keypoints[i].tolist()]})
            s = np.sort(inst.scores.numpy())
            print(name, img_name, "dets", len(inst), "min score gap", float(np.diff(s).min()) if len(s) > 1 else None,
                  "median keypoint score", float(inst.pred_keypoints[:, :, 2].median()))
        if "panoptic_seg" in out:
            seg, info = out["panoptic_seg"]
            cv2.imwrite(os.path.join(dest, "panoptic", os.path.splitext(img_name)[0] + ".png"),
                        id_to_rgb(seg.numpy())[..., ::-1])
            panoptic[img_name] = [{k: (v.item() if hasattr(v, "item") else v) for k, v in s.items()} for s in info]
            print(name, img_name, "segments", len(info), "thing classes",
                  len({s["category_id"] for s in info if s["isthing"]}),
                  "stuff classes", len({s["category_id"] for s in info if not s["isthing"]}))
    if dets:
        with open(os.path.join(dest, "keypoints.json"), "w") as f:
            json.dump(dets, f)
    if panoptic:
        with open(os.path.join(dest, "panoptic.json"), "w") as f:
            json.dump(panoptic, f, indent=0)
    else:
        os.rmdir(os.path.join(dest, "panoptic"))


for case in args[4:]:
    run(case, False)
    if PERTURB:
        run(case, True)
