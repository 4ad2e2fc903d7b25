#!/usr/bin/env python
"""Train the demo's Mask R-CNN (demo/shapes/*.yaml, a detectron2 config) from scratch on generated
shapes scenes, and write its checkpoint in detectron2's layout ({"model": state_dict}).

The model is vdeploy's native detectron2 build of the YAML (vdeploy.frameworks.build_model), so
the trained weights are those of the architecture that is exported and deployed; the losses are
in scripts/maskrcnn_losses.py. Every image is generated on the fly by
vdeploy.eval.synthetic.hard_scene (overlaps, clutter, scales 12..128 px) from a seeded stream,
so a run is deterministic for a given thread count. The schedule (batch, learning rate,
iterations, warm-up) is the config's SOLVER section; about 20 minutes on 2 CPU cores.

    python scripts/train_maskrcnn.py [--config demo/shapes/...yaml] [--out demo/shapes/model_final.pth]
                                     [--iters N] [--eval-images 40]

At the end the checkpoint is loaded back through vdeploy's checkpoint loader (every key must
match) and its segm/bbox AP measured with `vdeploy eval` on a held-out generated set.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from maskrcnn_losses import Target, roi_losses, rpn_losses  # noqa: E402
from vdeploy.eval.synthetic import hard_scene, make_coco  # noqa: E402

CONFIG = ROOT / "demo" / "shapes" / "mask_rcnn_R_50_narrow_FPN_shapes.yaml"
WEIGHTS = CONFIG.with_name("model_final.pth")
TRAIN_SEED = 1234      # the training scenes' stream
HELD_OUT_SEED = 90210  # a different stream: scenes the model never saw
MAX_MASK_ROIS = 16     # foreground boxes per image that train the mask head (CPU time)


def batch(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, list[Target]]:
    """n generated scenes as a raw BGR 0-255 batch [n, 3, size, size] and their targets."""
    images, targets = [], []
    for _ in range(n):
        img, objects = hard_scene(rng, size, size)
        masks = np.stack([m for _, m in objects]).astype(np.float32)
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])  # pixel-edge box, as COCO's
        images.append(img.transpose(2, 0, 1))
        targets.append(Target(torch.tensor(boxes, dtype=torch.float32),
                              torch.tensor([k for k, _ in objects], dtype=torch.int64), torch.from_numpy(masks)))
    return torch.from_numpy(np.stack(images).astype(np.float32)), targets


def lr_at(it: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up from 0.1 % of the base rate, then cosine decay to zero."""
    if it < warmup:
        return base * (0.001 + (1 - 0.001) * it / warmup)
    return base * 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(total - warmup, 1)))


def save(module, path: Path, iteration: int) -> None:
    """detectron2's checkpoint layout: {"model": state_dict} under detectron2's key names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": {k: v.detach().clone() for k, v in module.state_dict().items()}, "iteration": iteration}, tmp)
    tmp.replace(path)


def check_load(config: Path, weights: Path) -> None:
    """The checkpoint through vdeploy's own loader: no missing, no unexpected key."""
    from vdeploy.frameworks.checkpoint import load_checkpoint
    from vdeploy.frameworks import build_model

    module = build_model(str(config), str(weights)).module
    keys = set(load_checkpoint(str(weights)).state_dict)
    own = set(module.state_dict())
    if keys != own:
        raise SystemExit(f"checkpoint keys differ from the model: missing {sorted(own - keys)[:3]}, "
                         f"unexpected {sorted(keys - own)[:3]}")
    print(f"loaded back through vdeploy's checkpoint loader: {len(keys)} keys, none missing or unexpected")


def evaluate(config: Path, weights: Path, n: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ann = make_coco(Path(tmp) / "held_out", n=n, seed=HELD_OUT_SEED, size=(size, size), hard=True)
        subprocess.run([sys.executable, "-m", "vdeploy", "eval", str(config), "--weights", str(weights),
                        "--dataset", str(ann), "--backends", "torch", "--no-progress"], check=True, cwd=ROOT)


def train(config: Path, out: Path, iters: int | None, solver_opts: dict | None = None, log=print) -> Path:
    from vdeploy.frameworks import build_model
    from vdeploy.frameworks.detectron2.config import load_config

    cfg = load_config(str(config))
    solver = {**cfg["SOLVER"], **(solver_opts or {})}
    seed = int(cfg.get("SEED", 0)) if int(cfg.get("SEED", -1)) >= 0 else 0
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # anchor and proposal sampling
    rng = np.random.default_rng(TRAIN_SEED)
    size = int(cfg["INPUT"]["MIN_SIZE_TRAIN"][0])
    total = int(iters or solver["MAX_ITER"])
    ims, base_lr = int(solver["IMS_PER_BATCH"]), float(solver["BASE_LR"])
    warmup = min(int(solver["WARMUP_ITERS"]), total // 10)  # a short --iters run still decays
    period = int(solver.get("CHECKPOINT_PERIOD", 0))

    model = build_model(str(config)).module  # the deployable module itself, randomly initialised
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)  # no weight decay on norms and biases
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(solver["WEIGHT_DECAY"])},
                             {"params": no_decay, "weight_decay": 0.0}], lr=base_lr)
    image_hw = torch.tensor([float(size), float(size)])
    t0, c0, smooth = time.time(), time.process_time(), {}
    for it in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(it, base_lr, warmup, total)
        images, targets = batch(rng, ims, size)
        features = model.features(images)
        losses, proposals = rpn_losses(model, cfg, features, targets, image_hw, gen)
        losses.update(roi_losses(model, cfg, features, proposals, targets, gen, MAX_MASK_ROIS))
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        for k, v in losses.items():
            smooth[k] = 0.9 * smooth.get(k, v.item()) + 0.1 * v.item()
        if it % 20 == 0 or it == total - 1:
            parts = " ".join(f"{k[5:]} {v:.3f}" for k, v in smooth.items())
            log(f"iter {it}/{total} loss {sum(smooth.values()):.3f} ({parts}) lr {opt.param_groups[0]['lr']:.2e} "
                f"{time.time() - t0:.0f}s")
        if period and (it + 1) % period == 0 and it + 1 < total:
            save(model, out, it + 1)
    model.eval()
    save(model, out, total)
    log(f"trained {total} iterations of {ims} images in {time.time() - t0:.0f}s wall, "
        f"{time.process_time() - c0:.0f}s CPU; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=WEIGHTS, help="checkpoint to write")
    ap.add_argument("--iters", type=int, help="iterations (default: the config's SOLVER.MAX_ITER)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--solver", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override SOLVER keys of the config, e.g. BASE_LR=0.002 IMS_PER_BATCH=2")
    ap.add_argument("--eval-images", type=int, default=40, help="held-out scenes to measure AP on (0: none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    opts = {}
    for item in args.solver:
        key, _, value = item.partition("=")
        opts[key] = float(value) if "." in value or "e" in value else int(value)
    out = train(args.config, args.out, args.iters, opts)
    check_load(args.config, out)
    if args.eval_images:
        evaluate(args.config, out, args.eval_images, 256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
