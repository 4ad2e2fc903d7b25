"""Mask R-CNN training losses for vdeploy's native detectron2 modules (vdeploy.models.detectron2).

The deployable model code is inference only; this module is what detectron2's training-mode
forward adds, driving the model's own submodules (backbone, RPN head, box head and predictor,
mask head) so that what is trained is exactly what is exported. It follows detectron2's defaults
and reads their values from the config:

- RPN: anchors matched to ground truth by IoU (MODEL.RPN.IOU_THRESHOLDS 0.3 / 0.7, each ground
  truth box also keeping its best anchors), BATCH_SIZE_PER_IMAGE anchors sampled with
  POSITIVE_FRACTION positives; binary cross-entropy on objectness, L1 (SMOOTH_L1_BETA 0) on the
  deltas of positives, both normalised by the number of sampled anchors.
- ROI heads: RPN proposals (no gradient) plus the ground truth boxes, matched at IoU 0.5,
  BATCH_SIZE_PER_IMAGE sampled with POSITIVE_FRACTION foreground; softmax cross-entropy with the
  background class last, class-specific L1 box regression (BBOX_REG_WEIGHTS 10, 10, 5, 5)
  normalised by the number of sampled boxes.
- Mask head: per-pixel binary cross-entropy of the ground-truth class's mask logits on the
  foreground proposals, targets cut from the full-image masks by RoIAlign (aligned, as
  detectron2's BitMasks.crop_and_resize) and thresholded at 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, roi_align

from vdeploy.models.detectron2.poolers import assign_boxes_to_levels
from vdeploy.models.detectron2.rpn import find_top_rpn_proposals


@dataclass
class Target:
    """One image's ground truth: boxes [G, 4] (x1, y1, x2, y2), classes [G] int64, masks [G, H, W] float."""

    boxes: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor


def get_deltas(src: torch.Tensor, dst: torch.Tensor, weights) -> torch.Tensor:
    """The (dx, dy, dw, dh) that Box2BoxTransform.apply_deltas turns `src` [N, 4] into `dst` [N, 4]."""
    wx, wy, ww, wh = weights
    sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    sx, sy = src[:, 0] + 0.5 * sw, src[:, 1] + 0.5 * sh
    dw, dh = dst[:, 2] - dst[:, 0], dst[:, 3] - dst[:, 1]
    dx, dy = dst[:, 0] + 0.5 * dw, dst[:, 1] + 0.5 * dh
    return torch.stack((wx * (dx - sx) / sw, wy * (dy - sy) / sh, ww * torch.log(dw / sw), wh * torch.log(dh / sh)), 1)


def match(iou: torch.Tensor, thresholds, labels, allow_low_quality: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's Matcher: iou [G, N] -> (matched ground-truth index [N], label [N] in `labels`).

    thresholds [t1, ..., tk] cut IoU into k+1 intervals labelled by `labels` (1 foreground,
    0 background, -1 ignored). With `allow_low_quality`, the predictions that have a ground truth
    box's highest IoU are foreground even below the top threshold (every box gets an anchor).
    """
    values, idx = iou.max(dim=0)
    out = torch.empty_like(idx)
    bounds = [-float("inf"), *thresholds, float("inf")]
    for label, low, high in zip(labels, bounds[:-1], bounds[1:]):
        out[(values >= low) & (values < high)] = label
    if allow_low_quality:
        best = iou.max(dim=1, keepdim=True).values
        _, pred = torch.nonzero((iou == best) & (best > 0), as_tuple=True)
        out[pred] = 1
    return idx, out


def subsample(labels: torch.Tensor, num: int, positive_fraction: float, gen: torch.Generator):
    """detectron2's subsample_labels: (positive indices, negative indices), at most `num` in all."""
    pos = torch.nonzero(labels == 1).squeeze(1)
    neg = torch.nonzero(labels == 0).squeeze(1)
    n_pos = min(pos.numel(), int(num * positive_fraction))
    n_neg = min(neg.numel(), num - n_pos)
    pos = pos[torch.randperm(pos.numel(), generator=gen)[:n_pos]]
    neg = neg[torch.randperm(neg.numel(), generator=gen)[:n_neg]]
    return pos, neg


def rpn_losses(model, cfg: dict, features: dict, targets: list[Target], image_hw: torch.Tensor,
               gen: torch.Generator) -> tuple[dict, list[torch.Tensor]]:
    """RPN objectness and box losses, and each image's proposals for the ROI heads (no gradient)."""
    r = cfg["MODEL"]["RPN"]
    rpn = model.proposal_generator
    feats = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(feats)
    logits, deltas = rpn.rpn_head(feats)
    n = len(targets)
    # [N, A, H, W] -> [N, H*W*A] and [N, A*4, H, W] -> [N, H*W*A, 4]: the anchors' (y, x, a) order.
    logits_l = [x.permute(0, 2, 3, 1).reshape(n, -1) for x in logits]
    deltas_l = [d.view(n, a, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
                for d, a in zip(deltas, rpn.anchor_generator.num_anchors)]
    all_anchors = torch.cat(anchors)
    all_logits, all_deltas = torch.cat(logits_l, 1), torch.cat(deltas_l, 1)

    obj_terms, box_terms, proposals = [], [], []
    for i, t in enumerate(targets):
        idx, lab = match(box_iou(t.boxes, all_anchors), r["IOU_THRESHOLDS"], r["IOU_LABELS"], True)
        pos, neg = subsample(lab, int(r["BATCH_SIZE_PER_IMAGE"]), float(r["POSITIVE_FRACTION"]), gen)
        sampled = torch.cat([pos, neg])
        gt = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        obj_terms.append(F.binary_cross_entropy_with_logits(all_logits[i, sampled], gt, reduction="sum"))
        target_deltas = get_deltas(all_anchors[pos], t.boxes[idx[pos]], rpn.box2box.weights)
        box_terms.append(F.l1_loss(all_deltas[i, pos], target_deltas, reduction="sum"))
        with torch.no_grad():
            boxes = [rpn.box2box.apply_deltas(d[i].detach(), a) for d, a in zip(deltas_l, anchors)]
            p, _ = find_top_rpn_proposals(boxes, [x[i].detach() for x in logits_l], image_hw,
                                          nms_thresh=float(r["NMS_THRESH"]), pre_nms_topk=int(r["PRE_NMS_TOPK_TRAIN"]),
                                          post_nms_topk=int(r["POST_NMS_TOPK_TRAIN"]),
                                          min_box_size=float(cfg["MODEL"]["PROPOSAL_GENERATOR"]["MIN_SIZE"]))
        proposals.append(p)
    norm = float(n * int(r["BATCH_SIZE_PER_IMAGE"]))
    return {"loss_rpn_cls": sum(obj_terms) / norm, "loss_rpn_loc": sum(box_terms) / norm}, proposals


def mask_logits(mask_head, x: torch.Tensor) -> torch.Tensor:
    """MaskRCNNConvUpsampleHead's per-class logits [R, K, 2S, 2S] (its forward keeps only probabilities)."""
    for conv in mask_head._convs:
        x = conv(x)
    return mask_head.predictor(F.relu(mask_head.deconv(mask_head._attend(x))))


def pool(pooler, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
    """ROIPooler.forward for a batch: rois [R, 5] = (image index, x1, y1, x2, y2).

    The model's pooler pools one image (index 0) at inference; this is the same level assignment
    and RoIAlign for boxes of several images at once, so the heads run once per batch (and the
    backward pass does not build a full-size gradient per image)."""
    levels = assign_boxes_to_levels(rois[:, 1:], pooler.min_level, pooler.max_level,
                                    pooler.canonical_box_size, pooler.canonical_level)
    out = rois.new_zeros((rois.shape[0], features[0].shape[1]) + pooler.output_size)
    for level, (feature, scale) in enumerate(zip(features, pooler.scales)):
        inds = torch.nonzero(levels == level).squeeze(1)
        out = out.index_put((inds,), pooler._pool(feature, rois[inds], scale))
    return out


def roi_losses(model, cfg: dict, features: dict, proposals: list[torch.Tensor], targets: list[Target],
               gen: torch.Generator, max_mask_rois: int = 0) -> dict:
    """Box classification + regression on sampled proposals; mask loss on their foreground.

    `max_mask_rois` > 0 caps the foreground boxes per image that train the mask head (a random
    subset; a CPU-time saving, 0 = all of them as detectron2)."""
    h = cfg["MODEL"]["ROI_HEADS"]
    heads = model.roi_heads
    num_classes = heads.box_predictor.num_classes
    rois, gt_cls, gt_boxes, fg, mask_rois, mask_cls, mask_targets = [], [], [], [], [], [], []
    side = 2 * heads.mask_pooler.output_size[0]
    for i, (props, t) in enumerate(zip(proposals, targets)):
        props = torch.cat([props, t.boxes])  # PROPOSAL_APPEND_GT
        idx, lab = match(box_iou(t.boxes, props), h["IOU_THRESHOLDS"], h["IOU_LABELS"], False)
        pos, neg = subsample(lab, int(h["BATCH_SIZE_PER_IMAGE"]), float(h["POSITIVE_FRACTION"]), gen)
        boxes = props[torch.cat([pos, neg])]
        image = torch.full((len(boxes), 1), float(i))
        rois.append(torch.cat([image, boxes], 1))
        gt_cls.append(torch.cat([t.classes[idx[pos]], torch.full((len(neg),), num_classes, dtype=torch.int64)]))
        gt_boxes.append(torch.cat([t.boxes[idx[pos]], boxes[len(pos):]]))
        fg.append(torch.arange(len(boxes)) < len(pos))

        keep = torch.arange(len(pos))
        if max_mask_rois and len(pos) > max_mask_rois:
            keep = torch.randperm(len(pos), generator=gen)[:max_mask_rois]
        m_boxes, m_gt = boxes[keep], idx[pos][keep]
        mask_rois.append(torch.cat([image[keep], m_boxes], 1))
        mask_cls.append(t.classes[m_gt])
        crop = roi_align(t.masks[:, None], torch.cat([m_gt[:, None].to(m_boxes.dtype), m_boxes], 1), (side, side),
                         1.0, 0, aligned=True)
        mask_targets.append((crop[:, 0] >= 0.5).float())
    rois, gt_cls, gt_boxes, fg = torch.cat(rois), torch.cat(gt_cls), torch.cat(gt_boxes), torch.cat(fg)

    logits, deltas = heads.box_predictor(heads.box_head(pool(heads.box_pooler, [features[f] for f in heads.in_features], rois)))
    n = max(len(rois), 1)
    losses = {"loss_cls": F.cross_entropy(logits, gt_cls, reduction="sum") / n}
    d = deltas[fg].view(int(fg.sum()), -1, 4)
    d = d[torch.arange(d.shape[0]), gt_cls[fg].clamp(max=d.shape[1] - 1)]
    target_deltas = get_deltas(rois[fg, 1:], gt_boxes[fg], heads.box_predictor.box2box.weights)
    losses["loss_box_reg"] = F.l1_loss(d, target_deltas, reduction="sum") / n

    mask_rois, mask_cls, mask_targets = torch.cat(mask_rois), torch.cat(mask_cls), torch.cat(mask_targets)
    if len(mask_rois):
        logits_m = mask_logits(heads.mask_head, pool(heads.mask_pooler, [features[f] for f in heads.mask_in_features],
                                                       mask_rois))
        sel = logits_m[:, 0] if heads.mask_head.cls_agnostic else logits_m[torch.arange(len(mask_cls)), mask_cls]
        losses["loss_mask"] = F.binary_cross_entropy_with_logits(sel, mask_targets)
    else:
        losses["loss_mask"] = logits.sum() * 0.0
    return losses
