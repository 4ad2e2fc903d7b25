"""Image decoding and atomic file writes: the two places user data enters and leaves."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_output, atomic_write, atomic_write_json  # noqa: F401  (re-exported)

# Decoding bombs: a 50k x 50k PNG is a few KB compressed but gigabytes in memory.
MAX_IMAGE_PIXELS = 100_000_000


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
