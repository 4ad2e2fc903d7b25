"""Image decoding and atomic file writes: the two places user data enters and leaves."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError

# Decoding bombs: a 50k x 50k PNG is a few KB compressed but gigabytes in memory.
MAX_IMAGE_PIXELS = 100_000_000
_UMASK = os.umask(0)
os.umask(_UMASK)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 BGR (OpenCV order). UserError when undecodable."""
    import cv2

    if not data:
        raise UserError(f"{name}: empty image data")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{name}: not a decodable image (corrupt or unsupported format)")
    if img.shape[0] * img.shape[1] > MAX_IMAGE_PIXELS:
        raise UserError(f"{name}: image of {img.shape[1]}x{img.shape[0]} pixels is larger than allowed")
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR; a clear UserError when missing or unreadable."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{p}: no such image file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a folder, not an image") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read image: {e.strerror}") from None
    return decode_image(data, str(p))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside `path`; it replaces `path` only if the block succeeds."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    with atomic_output(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def atomic_write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    import cv2

    suffix = Path(path).suffix or ".png"
    ok, buf = cv2.imencode(suffix, image)
    if not ok:
        raise UserError(f"{path}: cannot encode an image as {suffix}")
    atomic_write(path, buf.tobytes())


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_output(path, "wb") as f:
        np.save(f, array)
