"""Top-k accuracy: the label is among the k highest-scoring classes."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def topk_accuracy(ranked: Sequence[Sequence[int]], labels: Sequence[int], ks=(1, 5)) -> dict[str, float]:
    """`ranked[i]` lists image i's class indices, best first (at least max(ks) long, or all
    classes when there are fewer)."""
    if len(ranked) != len(labels) or not len(labels):
        raise ValueError("need one ranking per label, and at least one")
    out = {}
    for k in ks:
        hit = [int(lbl) in list(r[:k]) for r, lbl in zip(ranked, labels)]
        out[f"top-{k}"] = float(np.mean(hit))
    return out
