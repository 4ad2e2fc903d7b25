"""Image reading: every accepted type read from a folder and from a direct path alike, headers
checked before any decoding (pixels, frames), the limit configurable, one-line UserErrors."""
import io
import resource
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

from bombs import png_bomb  # noqa: E402
from conftest import run_cli  # noqa: E402

from vdeploy.cli.common import expand_images  # noqa: E402
from vdeploy.errors import UserError  # noqa: E402
from vdeploy.runtime import io as vio  # noqa: E402
from vdeploy.runtime.io import (IMAGE_FORMATS, IMAGE_SUFFIXES, ImageTooLarge, decode_image,  # noqa: E402
                                parse_pixel_count, probe_image, read_image)

RGB = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
LOSSY = {"JPEG", "WEBP", "GIF", "PPM"}  # GIF: palette; .pbm/.pgm: fewer channels


def encoded(fmt: str, suffix: str = "") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(RGB)
    if suffix == ".pbm":
        img = img.convert("1")
    elif suffix == ".pgm":
        img = img.convert("L")
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("suffix", sorted(IMAGE_SUFFIXES))
def test_every_listed_suffix_is_read_from_a_folder_and_directly(tmp_path, suffix):
    fmt = next(f for f, suffixes in IMAGE_FORMATS.items() if suffix in suffixes)
    path = tmp_path / f"img{suffix}"
    path.write_bytes(encoded(fmt, suffix))
    assert expand_images([tmp_path]) == [path]
    img = read_image(path)
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    if fmt not in LOSSY:
        np.testing.assert_array_equal(img, RGB[:, :, ::-1])


def test_a_folder_lists_exactly_the_types_read(tmp_path):
    for name, data in [("a.gif", encoded("GIF")), ("b.png", encoded("PNG")), ("c.JPG", encoded("JPEG")),
                       ("d.tiff", encoded("TIFF"))]:
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder named like an image is not one
    listed = expand_images([tmp_path])
    assert [p.name for p in listed] == ["a.gif", "b.png", "c.JPG", "d.tiff"]
    assert all(read_image(p).shape == (20, 30, 3) for p in listed)


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb())  # 875 KB, 900 MB decoded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(ImageTooLarge, match="limit of 100 MP"):
        read_image(path)
    assert time.monotonic() - start < 5  # a hang bound: the header check takes milliseconds
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"peak memory grew by {grown_mb:.0f} MB"


def test_the_limit_is_configurable_and_the_message_names_the_size(monkeypatch):
    data = encoded("PNG")  # 30 x 20 = 600 pixels
    with pytest.raises(ImageTooLarge, match=r"30x20 pixels .* over the limit of 0.0005 MP"):
        decode_image(data, "x.png", max_pixels=500)
    monkeypatch.setenv(vio.MAX_IMAGE_PIXELS_ENV, "500")
    with pytest.raises(ImageTooLarge, match="x.png: image of 30x20"):
        decode_image(data, "x.png")
    monkeypatch.setenv(vio.MAX_IMAGE_PIXELS_ENV, "600")
    assert decode_image(data).shape == (20, 30, 3)
    monkeypatch.setenv(vio.MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(UserError, match="VDEPLOY_MAX_IMAGE_PIXELS must be a pixel count"):
        decode_image(data)


def test_a_limit_above_pillows_own_is_honoured():
    # Pillow refuses past 2 x 89 MP by itself; vdeploy's limit must decide, in both directions
    header = probe_image(png_bomb(15000, 14000), max_pixels=250_000_000)
    assert (header.width, header.height) == (15000, 14000)


def test_too_many_frames_are_refused_from_the_header():
    frames = [Image.fromarray(np.full((4, 4, 3), i % 256, np.uint8)) for i in range(vio.MAX_IMAGE_FRAMES + 1)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageTooLarge, match=r"1001 frames"):
        decode_image(buf.getvalue())
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:5])
    assert decode_image(buf.getvalue()).shape == (4, 4, 3)  # the first frame


@pytest.mark.parametrize("data, message", [
    (b"", "empty image data"),
    (b"hello", "not a decodable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a decodable image"),
    (encoded("PNG")[:60], "not a decodable image"),
])
def test_undecodable_bytes_are_one_line_user_errors(data, message):
    with pytest.raises(UserError, match=message) as e:
        decode_image(data, "upload")
    assert "\n" not in str(e.value) and str(e.value).startswith("upload: ")


@pytest.mark.parametrize("text, pixels", [("100000000", 100_000_000), ("50M", 50_000_000), ("50MP", 50_000_000),
                                          ("1.5e8", 150_000_000), ("0.5m", 500_000)])
def test_pixel_counts_parse(text, pixels):
    assert parse_pixel_count(text, "--max-pixels") == pixels


@pytest.mark.parametrize("text", ["0", "-5", "many", ""])
def test_bad_pixel_counts_are_user_errors(text):
    with pytest.raises(UserError, match="--max-pixels"):
        parse_pixel_count(text, "--max-pixels")


def test_serve_rejects_a_bad_max_pixels(tmp_path):
    r = run_cli("serve", tmp_path, "--max-pixels", "lots")
    assert r.returncode == 2 and "--max-pixels" in r.stderr and "Traceback" not in r.stderr
