"""How far float32 PyTorch's own outputs move when the input image changes imperceptibly.

A reduced-precision file perturbs every layer by about as much as rounding the image by one grey
level perturbs the first one. When the float32 model itself does not keep the task's gates under
that input noise, no bf16 or int8 file can, and verification says so beside its verdict instead of
leaving the user to search for a quantization fault. Measured on the golden Mask R-CNN's stand-in
weights (random convolutions): +-1 grey level gives bbox AP 0.05 against the unperturbed outputs,
because its FPN features move by 35-66 % (a trained network's barely move).
"""
from __future__ import annotations

import numpy as np

from ..runtime.postprocess import postprocess
from ..runtime.preprocess import preprocess

GREY_LEVELS = 1
SEED = 0


def perturbed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image with each value moved by at most GREY_LEVELS, uniformly at random."""
    noise = rng.integers(-GREY_LEVELS, GREY_LEVELS + 1, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def input_stability(reference, task, meta: dict, images, refs) -> dict[str, float]:
    """The task's agreement figures of `reference` (a loaded backend) on `images` (BGR arrays) with
    +-GREY_LEVELS of noise, against its predictions `refs` on the same images unperturbed."""
    rng = np.random.default_rng(SEED)
    gots = []
    for image in images:
        prep = preprocess(perturbed(image, rng), meta, meta.get("input_size"))
        gots.append(postprocess(reference.infer(prep.inputs), prep.meta, meta))
    return task.agreement(refs, gots, meta).metrics


def stability_note(metrics: dict[str, float], gates) -> str:
    """One line for a failed reduced-precision backend: the float32 model's own figures under the noise."""
    figures = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    short = [g.describe() for g in gates if not g.passes(metrics.get(g.metric))]
    head = f"float32 PyTorch against itself with the input moved by at most {GREY_LEVELS} grey level: {figures}"
    if short:
        return (head + f"; that alone misses {', '.join(short)}: the float32 model's own outputs move more under "
                "imperceptible input noise than the gates allow, and a reduced precision perturbs every layer at least "
                "as much, so no bf16 or int8 file can be expected to meet them. A property of the weights, not of the "
                "export: judge the reduced precision on your dataset (vdeploy eval) and, if its loss there is "
                "acceptable, export with the gate you accept (--gate; docs/precision.md)")
    return head + "; the model itself is stable under such noise, so the loss is the reduced precision's"
