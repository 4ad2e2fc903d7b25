"""The image reader fuzzed with Hypothesis: random bytes and mutated files of every accepted format
(flipped, inserted, truncated, spliced bytes; header dimensions rewritten to huge values). Each
input gives a BGR image within the limit or a one-line UserError: never another exception, a
crash or a memory blow-up.

Bounded: VDEPLOY_FUZZ_EXAMPLES (default 400) examples per test, no per-example deadline.
"""
import io
import os
import resource
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (dev extra) is not installed")
Image = pytest.importorskip("PIL.Image")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vdeploy.errors import UserError  # noqa: E402
from vdeploy.runtime.io import IMAGE_FORMATS, decode_image  # noqa: E402

EXAMPLES = int(os.environ.get("VDEPLOY_FUZZ_EXAMPLES", "400"))
LIMIT = 4_000_000  # pixels: the same code path as the default limit, at a fraction of the time
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed(fmt: str, size=(24, 17), **save) -> bytes:
    rgb = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **save)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((9, 7, 3), 40 * i, np.uint8)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


SEEDS = [_seed(fmt) for fmt in IMAGE_FORMATS] + [_seed("JPEG", progressive=True), _seed("PNG", optimize=True),
                                                   _seed("TIFF", compression="tiff_lzw"), _animated_gif()]


def _set_dimensions(data: bytes, value: int) -> bytes:
    """Rewrite the width and height fields where each format keeps them (a crafted bomb header)."""
    b = bytearray(data)
    if b.startswith(b"\x89PNG") and len(b) >= 24:
        b[16:24] = struct.pack(">II", value, value)
    elif b.startswith(b"GIF") and len(b) >= 10:
        b[6:10] = struct.pack("<HH", value & 0xFFFF, value & 0xFFFF)
    elif b.startswith(b"BM") and len(b) >= 26:
        b[18:26] = struct.pack("<ii", value & 0x7FFFFFFF, value & 0x7FFFFFFF)
    elif b.startswith(b"\xff\xd8"):
        at = b.find(b"\xff\xc0")
        if at < 0:
            at = b.find(b"\xff\xc2")
        if at >= 0 and at + 9 <= len(b):
            b[at + 5:at + 9] = struct.pack(">HH", value & 0xFFFF, value & 0xFFFF)
    return bytes(b)


@st.composite
def mutated_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice", "dims"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            data[at:] = other[draw(st.integers(0, len(other) - 1)):]
        elif kind == "dims":
            data = bytearray(_set_dimensions(bytes(data), draw(st.sampled_from([0, 1, 2047, 4097, 30000, 65535,
                                                                                   1 << 20, 1 << 31]))))
    return bytes(data)


def check(data: bytes) -> None:
    try:
        img = decode_image(data, "fuzz", max_pixels=LIMIT)
    except UserError as e:
        assert str(e).startswith("fuzz: ") and "\n" not in str(e)
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] * img.shape[1] <= LIMIT


@pytest.fixture(scope="module")
def memory_bound():
    """Peak memory may not grow by more than 512 MB over all the examples of this module."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 512, f"peak memory grew by {grown_mb:.0f} MB while fuzzing"


def test_every_seed_decodes():
    for data in SEEDS:
        assert decode_image(data).ndim == 3


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(memory_bound, data):
    check(data)


@FUZZ
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                        b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b"P1\n"]), st.binary(max_size=2048))
def test_random_bytes_behind_a_real_signature(memory_bound, magic, rest):
    check(magic + rest)


@FUZZ
@given(mutated_images())
def test_mutated_images(memory_bound, data):
    check(data)
