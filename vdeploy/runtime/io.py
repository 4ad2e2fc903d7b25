"""Image decoding and atomic file writes: the two places user data enters and leaves.

Every image is checked from its header before any pixel is decoded: a 30000 x 30000 PNG is
875 KB on disk and 2.7 GB once decoded, so the pixel count, the dimensions and the frame count
are read by Pillow's header parsers (`Image.open` parses the header only, lazily) and refused
over the limit; OpenCV then decodes what passed (the pixels the rest of vdeploy was validated
on). Only the formats below are read, the same set from a folder and from a direct path.
"""
from __future__ import annotations

import io as _bytes_io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_output, atomic_write, atomic_write_json  # noqa: F401  (re-exported)

# Decoding bombs: a 50k x 50k PNG is a few KB compressed but gigabytes in memory. The default for
# every command; VDEPLOY_MAX_IMAGE_PIXELS overrides it, `vdeploy serve --max-pixels` for a server.
MAX_IMAGE_PIXELS = 100_000_000
MAX_IMAGE_PIXELS_ENV = "VDEPLOY_MAX_IMAGE_PIXELS"
# Only the first frame is decoded; a count beyond this is a crafted file, not a photo.
MAX_IMAGE_FRAMES = 1000

# The formats read (Pillow's names, checked from the header) and the file suffixes that list them
# in a folder: the one place that decides which files are images. Each one is decoded by OpenCV
# and its header parsed by Pillow (tests/test_image_reading.py writes and reads every suffix).
IMAGE_FORMATS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "GIF": (".gif",),
    "BMP": (".bmp", ".dib"),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
    "PPM": (".ppm", ".pgm", ".pbm", ".pnm"),
}
IMAGE_SUFFIXES = frozenset(s for suffixes in IMAGE_FORMATS.values() for s in suffixes)
_FORMAT_LIST = ", ".join(IMAGE_FORMATS)


class ImageTooLarge(UserError):
    """An image whose header declares more pixels or frames than allowed (HTTP 413 in the server)."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    frames: int


def max_image_pixels() -> int:
    """The pixel limit in force: $VDEPLOY_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    return parse_pixel_count(text, MAX_IMAGE_PIXELS_ENV)


def parse_pixel_count(text: str, option: str) -> int:
    """'50000000', '50M', '50MP', '1.5e8' -> pixels; the one parser of pixel limits."""
    t = str(text).strip().upper().removesuffix("P").removesuffix("PX")
    scale = 1
    if t.endswith("M"):
        t, scale = t[:-1], 1_000_000
    try:
        value = int(float(t) * scale)
    except ValueError:
        raise UserError(f"{option} must be a pixel count such as 100000000 or 100M, got {text!r}") from None
    if value <= 0:
        raise UserError(f"{option} must be positive, got {text!r}")
    return value


_pil_setup = threading.Lock()
_pil_ready = False


def _pil():
    """Pillow, set up once so that vdeploy's limit, not Pillow's, decides on the pixel count."""
    global _pil_ready
    from PIL import Image

    if not _pil_ready:
        with _pil_setup:
            if not _pil_ready:
                import warnings

                # Pillow warns past 89 MP and refuses past twice that; vdeploy refuses past its
                # own, configurable limit first, so Pillow's warning would only be noise.
                warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
                # A corrupt TIFF/EXIF directory is reported by Pillow as a warning per odd field;
                # such a file is refused or read here, with vdeploy's one-line message if refused.
                warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
                _pil_ready = True
    return Image


def probe_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> ImageHeader:
    """Read an image's header only and check it against the limits; UserError when refused."""
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if not data:
        raise UserError(f"{name}: empty image data")
    Image = _pil()
    # Pillow refuses past twice its own limit before vdeploy's check runs: keep its bar at
    # least at vdeploy's (raised only, never lowered, so other limits in the process hold).
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with Image.open(_bytes_io.BytesIO(data), formats=list(IMAGE_FORMATS)) as im:
            width, height = (int(v) for v in im.size)
            fmt = "JPEG" if im.format == "MPO" else str(im.format)
            # Counting walks the file's frame headers (GIF, TIFF), never their pixels: linear in
            # the bytes received, which the caller bounded.
            frames = int(getattr(im, "n_frames", 1) or 1)
    except Image.DecompressionBombError:
        # Pillow's bar is at least vdeploy's limit, so this is more than twice the limit
        raise ImageTooLarge(f"{name}: its header declares more than twice the limit of {limit / 1e6:g} MP "
                            f"(raise {MAX_IMAGE_PIXELS_ENV} or --max-pixels only for trusted images)") from None
    except Exception:  # any failure of the header parsers on untrusted bytes is a property of the bytes
        raise UserError(f"{name}: not a decodable image (corrupt, or not one of {_FORMAT_LIST})") from None
    if width <= 0 or height <= 0:
        raise UserError(f"{name}: the image header declares a size of {width}x{height}")
    if width * height > limit:
        raise ImageTooLarge(f"{name}: image of {width}x{height} pixels ({width * height / 1e6:.1f} MP) is over the "
                            f"limit of {limit / 1e6:g} MP (raise {MAX_IMAGE_PIXELS_ENV} or --max-pixels "
                            "only for trusted images)")
    if frames > MAX_IMAGE_FRAMES:
        raise ImageTooLarge(f"{name}: {frames} frames, more than the {MAX_IMAGE_FRAMES} allowed "
                            "(only the first frame is used)")
    return ImageHeader(fmt, width, height, frames)


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 BGR (OpenCV order), its header checked first.

    UserError when undecodable, ImageTooLarge when over `max_pixels` (default: max_image_pixels())
    or MAX_IMAGE_FRAMES.
    """
    import cv2

    limit = max_image_pixels() if max_pixels is None else max_pixels
    header = probe_image(data, name, limit)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None:
        img = _decode_with_pillow(data, name)
    # A decoder reading a size other than the header's (a GIF frame past its screen) is held to
    # the same limit.
    if img.shape[0] * img.shape[1] > limit:
        raise ImageTooLarge(f"{name}: decoded to {img.shape[1]}x{img.shape[0]} pixels, over the limit of "
                            f"{limit / 1e6:g} MP although its {header.format} header declares "
                            f"{header.width}x{header.height}")
    return img


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    """The first frame through Pillow, for the variants of an accepted format OpenCV's decoders
    reject (some GIFs); called only after probe_image passed, so the size is bounded."""
    Image = _pil()
    from PIL import ImageOps

    try:
        with Image.open(_bytes_io.BytesIO(data), formats=list(IMAGE_FORMATS)) as im:
            im.seek(0)
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception:  # truncated or corrupt pixel data: a property of the bytes
        raise UserError(f"{name}: not a decodable image (corrupt pixel data)") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR; a clear UserError when missing, unreadable or too large."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{p}: no such image file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a folder, not an image") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read image: {e.strerror}") from None
    return decode_image(data, str(p), max_pixels)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a folder listing counts this file as an image (by suffix, IMAGE_SUFFIXES)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


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
