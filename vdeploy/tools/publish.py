"""Turn a training checkpoint into a release file: model weights only, named by its content hash.

Everything that only resumes training (optimizer, scheduler, iteration counters) is dropped; the
weights are written bit for bit, as CPU tensors of their original dtypes, in the same container
the input used (`{"model": sd}` stays `{"model": sd}`, MMSegmentation's `{"state_dict": sd,
"meta": ...}` keeps its meta, which holds the dataset classes). The first 8 hex digits of the
SHA-256 of the written bytes are appended to the file name (`pub.pth` -> `pub-1a2b3c4d.pth`), as
MMSegmentation's publish tool does, so a download can be checked against its own name.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

# Entries of a detectron2 container that change how its weights are read, so they travel along.
_KEPT_MODEL_ENTRIES = ("__author__", "matching_heuristics")


def _release_tensors(state_dict: dict) -> dict:
    # clone(): a view must not drag its whole parent storage into the file.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def publish_bytes(ckpt, *, safetensors: bool = False) -> bytes:
    """The release file's content for a loaded `Checkpoint`."""
    tensors = _release_tensors(ckpt.state_dict)
    if safetensors:
        from safetensors.torch import save

        metadata = {"format": "pt"}
        if ckpt.meta:
            metadata["meta"] = json.dumps(ckpt.meta, default=str, sort_keys=True)
        return save(tensors, metadata=metadata)
    import torch

    if ckpt.container == "state_dict":
        obj = {"state_dict": tensors, **({"meta": ckpt.meta} if ckpt.meta else {})}
    elif ckpt.container in ("model", "blobs"):  # a Detectron "blobs" file becomes detectron2's layout
        obj = {"model": tensors, **{k: ckpt.meta[k] for k in _KEPT_MODEL_ENTRIES if k in ckpt.meta}}
    else:
        obj = tensors
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def published_path(out: str | Path, data: bytes, *, safetensors: bool = False) -> Path:
    out = Path(out)
    suffix = ".safetensors" if safetensors else (out.suffix or ".pth")
    stem = out.stem if out.suffix else out.name
    return out.with_name(f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{suffix}")


def publish_checkpoint(src: str | Path, out: str | Path, *, safetensors: bool = False) -> Path:
    """Write the release file for checkpoint `src` next to `out` (atomically); returns its path."""
    from ..frameworks.checkpoint import load_checkpoint
    from ..runtime.io import atomic_write

    data = publish_bytes(load_checkpoint(src), safetensors=safetensors)
    final = published_path(out, data, safetensors=safetensors)
    atomic_write(final, data)
    return final
