"""Decompression bombs for the tests: valid image files, tiny on disk, huge once decoded."""
from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid all-black 8-bit greyscale PNG; 30000 x 30000 is 875 KB, 900 MB once decoded.

    Built in well under a second: after a full flush a deflate stream restarts, so the compressed
    form of a block of zero rows is computed once and repeated."""
    row = width + 1  # the filter byte, then one byte per pixel
    rows_per_block = max(1, min(height, (32 << 20) // row))
    blocks, rest = divmod(height, rows_per_block)
    comp = zlib.compressobj(9)
    block = bytes(row * rows_per_block)
    head = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    unit = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every later block
    tail = comp.compress(bytes(row * rest)) + comp.flush(zlib.Z_FULL_FLUSH) if rest else b""
    body = head[:2], head[2:], unit * (blocks - 1), tail
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block, adler)
    if rest:
        adler = zlib.adler32(bytes(row * rest), adler)
    # the final empty block, then the checksum of everything (not the object's: it saw fewer blocks)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush() + struct.pack(">I", adler)
    idat = b"".join(body) + end
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
