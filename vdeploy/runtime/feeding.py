"""How to feed a bundle's graph by hand, without vdeploy: every number from deploy.json turned
into a minimal numpy + OpenCV snippet, for onnxruntime and for TorchScript. What `vdeploy info`
prints. The snippet is generated from the same fields the runtime's preprocessing reads."""
from __future__ import annotations

from ..bundle import Bundle

_INTERP = {"cv2_linear": "cv2.INTER_LINEAR", "cv2_cubic": "cv2.INTER_CUBIC", "cv2_area": "cv2.INTER_AREA",
           "cv2_nearest": "cv2.INTER_NEAREST"}


def feeding_facts(bundle: Bundle) -> list[tuple[str, str]]:
    """(what, value) pairs: everything needed to build the graph's inputs and read its outputs."""
    meta = bundle.meta
    pre = meta.get("preprocess", {})
    inp = meta["inputs"][0]
    rs = pre.get("resize", {"type": "none"})
    norm = pre.get("normalize")
    facts = [("task", meta["task"]), ("classes", f"{len(meta['classes'])}: " + ", ".join(meta["classes"][:8])
                                        + (" ..." if len(meta["classes"]) > 8 else "")),
             ("image input", f"{inp['name']}: {inp.get('dtype', 'float32')} {inp.get('layout', 'NCHW')} "
                             f"shape {inp.get('shape')}, colour order {inp.get('color', 'BGR')}, pixel values 0..255"),
             ("resize", _describe_resize(rs, meta.get("input_size")))]
    if norm:
        where = norm.get("where", "graph")
        facts.append(("normalisation", f"(x - mean) / std with mean {norm['mean']}, std {norm['std']}, "
                                       + ("inside the graph: feed raw pixel values" if where == "graph" else "on the host, before feeding")))
    facts.append(("padding", _describe_padding(pre, meta.get("input_size"), norm)))
    for extra in meta["inputs"][1:]:
        facts.append((f"input {extra['name']}", f"{extra.get('dtype', 'float32')} {extra.get('shape')}: {extra.get('meaning', '')}"))
    for o in meta["outputs"]:
        facts.append((f"output {o['name']}", f"{o.get('dtype', '(dtype not recorded)')} {o.get('shape')}"
                      + (f": {o['meaning']}" if o.get("meaning") else "")))
    if "torchscript" in bundle.formats:
        facts.append(("model.ts", "needs torch and, for detectors, torchvision imported first (it registers "
                                  "torchvision::nms and torchvision::roi_align, which the graph calls)"))
    return facts


def _describe_resize(rs: dict, input_size) -> str:
    kind = rs.get("type", "none")
    text = {"shortest_edge": lambda: f"shortest edge to {rs['min_size']}, longest at most {rs['max_size']} "
                                      f"(detectron2's ResizeShortestEdge, int(x + 0.5) rounding)",
            "fixed": lambda: f"to exactly {rs['height']}x{rs['width']} (HxW)",
            "shorter_center_crop": lambda: f"shorter side to {rs['size']}, then a centre crop of {rs['crop']}",
            "none": lambda: "none"}.get(kind, lambda: kind)()
    if kind != "none":
        text += f", {rs.get('interp', 'cv2_linear')} interpolation"
    if input_size and rs.get("letterbox") == "fill":
        return (f"scaled (up or down, aspect ratio kept, int(x + 0.5) rounding) to fill the fixed "
                f"{input_size[0]}x{input_size[1]} canvas, top-left, {rs.get('interp', 'cv2_linear')} interpolation")
    if input_size:
        text += f"; then shrunk (never enlarged) to fit the fixed {input_size[0]}x{input_size[1]} canvas, top-left"
    return text


def _describe_padding(pre: dict, input_size, norm) -> str:
    value = "the pixel mean " + str(norm["mean"]) if norm and norm.get("where", "graph") == "graph" else "0"
    if input_size:
        return f"bottom and right to {input_size[0]}x{input_size[1]} with {value} (zero after normalisation)"
    d = int(pre.get("pad", {}).get("size_divisibility", 0) or 0)
    return f"bottom and right to a multiple of {d} with {value}" if d > 1 else "none"


def snippet(bundle: Bundle, engine: str = "onnxruntime") -> str:
    """A runnable script that feeds one photo to the bundle's model the way vdeploy does."""
    meta = bundle.meta
    pre = meta.get("preprocess", {})
    inp = meta["inputs"][0]
    rs = pre.get("resize", {"type": "none"})
    norm = pre.get("normalize")
    input_size = meta.get("input_size")
    lines = ["import cv2", "import numpy as np"]
    if rs.get("interp") == "pil_bilinear":
        lines.append("from PIL import Image")
    lines += ["", 'img = cv2.imread("photo.jpg")  # H x W x 3 uint8, BGR']
    if inp.get("color", "BGR") == "RGB":
        lines.append("img = img[:, :, ::-1]  # the model takes RGB")
    lines.append("h, w = img.shape[:2]")
    kind = rs.get("type", "none")
    if input_size and rs.get("letterbox") == "fill":
        kind = "fill"
        lines += [f"H, W = {input_size[0]}, {input_size[1]}  # the fixed canvas, filled", "s = min(H / h, W / w)",
                  "nh, nw = min(H, max(1, int(h * s + 0.5))), min(W, max(1, int(w * s + 0.5)))"]
    elif kind == "shortest_edge":
        lines += [f"s = {rs['min_size']} / min(h, w)",
                  f"nh, nw = ({rs['min_size']}.0, s * w) if h < w else (s * h, {rs['min_size']}.0)",
                  f"if max(nh, nw) > {rs['max_size']}:",
                  f"    k = {rs['max_size']} / max(nh, nw); nh, nw = nh * k, nw * k",
                  "nh, nw = int(nh + 0.5), int(nw + 0.5)"]
    elif kind == "fixed":
        lines.append(f"nh, nw = {rs['height']}, {rs['width']}")
    elif kind == "shorter_center_crop":
        lines += [f"nh, nw = ({rs['size']}, int({rs['size']} * w / h)) if h <= w else (int({rs['size']} * h / w), {rs['size']})"]
    else:
        lines.append("nh, nw = h, w")
    if input_size and kind not in ("fixed", "fill"):
        lines += [f"H, W = {input_size[0]}, {input_size[1]}  # the fixed canvas",
                  "if nh > H or nw > W:", "    k = min(H / nh, W / nw); nh, nw = max(1, int(nh * k)), max(1, int(nw * k))"]
    if kind != "none":
        if rs.get("interp") == "pil_bilinear":
            lines.append("x = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))")
        else:
            lines.append(f"x = cv2.resize(img, (nw, nh), interpolation={_INTERP.get(rs.get('interp', 'cv2_linear'), 'cv2.INTER_LINEAR')})")
    else:
        lines.append("x = img")
    if kind == "shorter_center_crop":
        c = rs["crop"]
        lines += [f"top, left = int(round((nh - {c}) / 2.0)), int(round((nw - {c}) / 2.0))",
                  f"x = x[top:top + {c}, left:left + {c}]; nh, nw = {c}, {c}"]
    lines.append("x = x.astype(np.float32)")
    pad_value = "0.0"
    if norm:
        if norm.get("where", "graph") == "host":
            lines.append(f"x = (x - np.array({norm['mean']}, np.float32)) / np.array({norm['std']}, np.float32)")
        else:
            pad_value = f"np.array({norm['mean']}, np.float32)  # normalised to 0 inside the graph"
    d = int(pre.get("pad", {}).get("size_divisibility", 0) or 0)
    if input_size:
        lines.append(f"PH, PW = {input_size[0]}, {input_size[1]}")
    elif d > 1:
        lines.append(f"PH, PW = -(-nh // {d}) * {d}, -(-nw // {d}) * {d}")
    if input_size or d > 1:
        lines += ["canvas = np.empty((PH, PW, 3), np.float32)", f"canvas[...] = {pad_value}",
                  "canvas[:nh, :nw] = x", "x = canvas"]
    lines.append("x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # 1 x 3 x H x W")
    feed = {inp["name"]: "x"}
    if any(i["name"] == "im_info" for i in meta["inputs"]):
        feed["im_info"] = "np.array([[nh, nw]], np.float32)  # the valid region inside the padding"
    out_names = [o["name"] for o in meta["outputs"]]
    lines.append("")
    if engine == "torchscript":
        lines += ["import torch", "import torchvision  # noqa: F401  registers torchvision::nms / roi_align for the graph",
                  f'model = torch.jit.load("{bundle.path}/model.ts")',
                  "with torch.no_grad():",
                  "    outs = model(" + ", ".join(f"torch.from_numpy({v.split('  #')[0]})" for v in feed.values()) + ")",
                  "outs = [o.numpy() for o in (outs if isinstance(outs, (tuple, list)) else [outs])]"]
    else:
        lines += ["import onnxruntime as ort", f'sess = ort.InferenceSession("{bundle.path}/model.onnx")',
                  "outs = sess.run(None, {" + ", ".join(f'"{k}": {v.split("  #")[0]}' for k, v in feed.items()) + "})"]
    lines.append(f"{', '.join(out_names)} = outs" if len(out_names) > 1 else f"{out_names[0]} = outs[0]")
    if meta["task"] in ("detection", "instance_segmentation"):
        lines.append("boxes = boxes * np.array([w / nw, h / nh, w / nw, h / nh], np.float32)  # to original pixels")
    return "\n".join(lines) + "\n"
