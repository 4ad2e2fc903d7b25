"""COCO AP of predictions against reference predictions used as ground truth (test helper)."""
import contextlib
import io

from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def ap_against(ref: list[dict], pred: list[dict], kind: str = "bbox") -> float:
    names = sorted({r["file_name"] for r in ref})
    ids = {n: i + 1 for i, n in enumerate(names)}
    cats = sorted({r["category_id"] for r in ref} | {p["category_id"] for p in pred})
    anns = []
    for k, r in enumerate(ref):
        a = {"id": k + 1, "image_id": ids[r["file_name"]], "category_id": r["category_id"], "bbox": r["bbox"],
             "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
        if kind == "segm":
            a["segmentation"] = r["segmentation"]
            a["area"] = float(mask_util.area(r["segmentation"]))
            if a["area"] == 0:  # an empty reference mask can never be matched
                continue
        anns.append(a)
    size = {r["file_name"]: r["segmentation"]["size"] for r in ref if "segmentation" in r}
    gt = COCO()
    gt.dataset = {"images": [{"id": ids[n], "file_name": n, "height": size.get(n, [9999])[0], "width": size.get(n, [0, 9999])[1]}
                             for n in names], "annotations": anns, "categories": [{"id": c} for c in cats]}
    dts = [dict(p, image_id=ids[p["file_name"]]) for p in pred if p["file_name"] in ids]
    if kind == "segm":
        dts = [d for d in dts if mask_util.area(d["segmentation"]) > 0]
    if not dts:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dts), kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])
