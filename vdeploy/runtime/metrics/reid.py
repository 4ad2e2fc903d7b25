"""Re-identification ranking metrics with fast-reid's `evaluate_rank` semantics (Market-1501
protocol): gallery entries of the query's own id *and* camera are removed from its ranking;
a query whose id is absent from the rest of the gallery is not counted; CMC is clamped to 1
after the first match; AP is the mean precision at each true match."""
from __future__ import annotations

import numpy as np

from ...errors import UserError


def cosine_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """fast-reid's default TEST.METRIC "cosine": 1 - <q, g> of L2-normalised features."""
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T


def rank_metrics(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids,
                 ranks=(1, 5, 10), max_rank: int = 50) -> dict[str, float]:
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    # stable: equal distances keep gallery order, so results do not depend on the sort algorithm
    order = np.argsort(distmat, axis=1, kind="stable")
    cmc_sum = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(num_q):
        o = order[i]
        keep = ~((g_pids[o] == q_pids[i]) & (g_camids[o] == q_camids[i]))
        hits = (g_pids[o][keep] == q_pids[i]).astype(np.float64)
        if not hits.any():
            continue
        cum = np.cumsum(hits)
        cmc = np.minimum(cum, 1.0)[:max_rank]
        # a ranking shorter than max_rank has already found its match: pad with ones
        cmc_sum += np.pad(cmc, (0, max_rank - cmc.size), constant_values=1.0)
        precision_at_hit = cum / np.arange(1, hits.size + 1)
        aps.append(float((precision_at_hit * hits).sum() / hits.sum()))
        last = int(np.nonzero(hits)[0].max())
        inps.append(float(cum[last] / (last + 1)))
    if not aps:
        raise UserError("no query identity appears in the gallery (from another camera): "
                        "mAP and CMC are undefined for this dataset")
    cmc = cmc_sum / len(aps)
    out = {"mAP": float(np.mean(aps)), "mINP": float(np.mean(inps))}
    for r in ranks:
        out[f"rank-{r}"] = float(cmc[min(r, max_rank) - 1])
    out["queries"] = len(aps)
    return out
