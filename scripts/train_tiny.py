#!/usr/bin/env python
"""Train the tiny shape models (vdeploy.models.tiny) on freshly generated synthetic scenes and
save their weights under vdeploy/data/tiny/. Deterministic (fixed seeds); a few minutes on
2 CPU cores for all three.

    python scripts/train_tiny.py [shapes_det shapes_seg shapes_cls] [--out DIR] [--steps N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vdeploy.models.tiny import DET_SIZE, DET_STRIDE, TINY_MODELS, WEIGHTS_DIR  # noqa: E402
from vdeploy.eval.synthetic import SHAPES, background, draw_shape, random_color, scene  # noqa: E402

STEPS = {"shapes_det": 900, "shapes_seg": 300, "shapes_cls": 500}


def _images(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32))


def det_batch(rng, n: int):
    """Images and CenterNet targets: class heatmaps, box regression at centres, foreground."""
    cells = DET_SIZE // DET_STRIDE
    imgs, heat, box, box_mask, fg = [], np.zeros((n, 3, cells, cells), np.float32), \
        np.zeros((n, 4, cells, cells), np.float32), np.zeros((n, 1, cells, cells), np.float32), []
    yy, xx = np.mgrid[0:cells, 0:cells]
    for i in range(n):
        img, objects = scene(rng, DET_SIZE, DET_SIZE)
        imgs.append(img)
        m_all = np.zeros((DET_SIZE, DET_SIZE), np.float32)
        for k, mask in objects:
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            gx, gy = cx / DET_STRIDE - 0.5, cy / DET_STRIDE - 0.5
            ix, iy = int(round(gx)), int(round(gy))
            sigma = max(w, h) / DET_STRIDE / 6 + 0.5
            g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma ** 2))
            heat[i, k] = np.maximum(heat[i, k], g)
            box[i, :, iy, ix] = (gx - ix, gy - iy, np.log(w), np.log(h))
            box_mask[i, 0, iy, ix] = 1
            m_all[mask] = 1
        fg.append(m_all)
    return _images(imgs), torch.from_numpy(heat), torch.from_numpy(box), torch.from_numpy(box_mask), \
        torch.from_numpy(np.stack(fg))[:, None]


def det_loss(model, rng, n=16):
    x, heat, box, box_mask, fg = det_batch(rng, n)
    h_logit, b, m_logit = model.heads(x)
    p = torch.sigmoid(h_logit).clamp(1e-4, 1 - 1e-4)
    pos = (heat > 0.99).float()
    # CenterNet's penalty-reduced focal loss
    focal = -(pos * (1 - p) ** 2 * torch.log(p) + (1 - pos) * (1 - heat) ** 4 * p ** 2 * torch.log(1 - p)).sum()
    focal = focal / pos.sum().clamp(min=1)
    reg = (F.l1_loss(b, box, reduction="none") * box_mask).sum() / box_mask.sum().clamp(min=1)
    full = F.interpolate(m_logit, scale_factor=float(DET_STRIDE), mode="bilinear", align_corners=False)
    return focal + reg + F.binary_cross_entropy_with_logits(full, fg)


def seg_loss(model, rng, n=8):
    imgs, labels = [], []
    for _ in range(n):
        img, objects = scene(rng, 64, 64)  # fully convolutional: small scenes train it as well
        lab = np.zeros((64, 64), np.int64)
        for k, mask in objects:
            lab[mask] = k + 1
        imgs.append(img)
        labels.append(lab)
    return F.cross_entropy(model(_images(imgs)), torch.from_numpy(np.stack(labels)))


def cls_loss(model, rng, n=16):
    imgs, labels = [], []
    for _ in range(n):
        img = background(rng, 64, 64)
        k = int(rng.integers(0, 3))
        r = int(rng.integers(10, 20))
        draw_shape(img, SHAPES[k], int(rng.integers(r + 1, 63 - r)), int(rng.integers(r + 1, 63 - r)), r, random_color(rng))
        imgs.append(img)
        labels.append(k)
    return F.cross_entropy(model(_images(imgs)), torch.tensor(labels))


LOSSES = {"shapes_det": det_loss, "shapes_seg": seg_loss, "shapes_cls": cls_loss}


def train(name: str, out_dir: Path, steps: int | None = None, log=print) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    model = TINY_MODELS[name][0]()
    steps = steps or STEPS[name]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    t0 = time.time()
    for step in range(steps):
        loss = LOSSES[name](model, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=list(TINY_MODELS), help="which tiny models (default: all)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for NAME.safetensors")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: per model)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.models:
        if name not in TINY_MODELS:
            ap.error(f"unknown model {name!r}; choose from {', '.join(TINY_MODELS)}")
        print(f"wrote {train(name, args.out, args.steps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
