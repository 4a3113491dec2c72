"""Byte-level builders for image files that ordinary writers refuse to make.

Hostile-input tests need TIFFs with contradictory tags, PNGs with chosen chunks and PAMs with
any header; writing the bytes directly keeps each case explicit and independent of how a
library would "fix" it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# TIFF field types: code -> (struct letter, bytes per value)
SHORT, LONG, RATIONAL, UNDEFINED, ASCII = 3, 4, 5, 7, 2
_TIFF_TYPES = {SHORT: ("H", 2), LONG: ("I", 4), RATIONAL: ("II", 8), UNDEFINED: ("B", 1), ASCII: ("B", 1)}

TiffTags = Mapping[int, tuple[int, Sequence]]
"""tag -> (field type, values); a RATIONAL value is a (numerator, denominator) pair."""


def tiff_bytes(pages: Iterable[tuple[np.ndarray, TiffTags]]) -> bytes:
    """A little-endian TIFF, one uncompressed strip per page.

    Each page is (pixels H×W×S uint8/uint16, extra or overriding tags). The basic layout tags
    are derived from the pixels (RGB photometric for 3+ samples, gray otherwise).
    """
    pages = list(pages)
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    previous_link = 4
    for pixels, overrides in pages:
        height, width, samples = pixels.shape
        data = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
        data_offset = len(out)
        out += data
        if len(out) % 2:
            out += b"\0"
        tags: dict[int, tuple[int, Sequence]] = {
            256: (LONG, [width]),
            257: (LONG, [height]),
            258: (SHORT, [pixels.dtype.itemsize * 8] * samples),
            259: (SHORT, [1]),
            262: (SHORT, [2 if samples >= 3 else 1]),
            273: (LONG, [data_offset]),
            277: (SHORT, [samples]),
            278: (LONG, [height]),
            279: (LONG, [len(data)]),
            284: (SHORT, [1]),
        }
        tags.update(overrides)
        ifd_offset = len(out)
        struct.pack_into("<I", out, previous_link, ifd_offset)
        entries = sorted(tags.items())
        extra_at = ifd_offset + 2 + 12 * len(entries) + 4
        ifd = bytearray(struct.pack("<H", len(entries)))
        extra = bytearray()
        for tag, (kind, values) in entries:
            letters, size = _TIFF_TYPES[kind]
            flat = [part for value in values for part in (value if kind == RATIONAL else (value,))]
            payload = struct.pack("<" + letters[0] * len(flat), *flat)
            count = len(values)
            if len(payload) <= 4:
                field = payload.ljust(4, b"\0")
            else:
                field = struct.pack("<I", extra_at + len(extra))
                extra += payload + (b"\0" if len(payload) % 2 else b"")
            ifd += struct.pack("<HHI", tag, kind, count) + field
        previous_link = len(out) + len(ifd)
        ifd += struct.pack("<I", 0)
        out += ifd + extra
    return bytes(out)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(
    width: int,
    height: int,
    chunks: Sequence[tuple[bytes, bytes]] = (),
    *,
    bit_depth: int = 8,
    color_type: int = 2,
    rows: bytes | None = None,
) -> bytes:
    """A PNG with the given IHDR fields, extra chunks before IDAT, and filter-0 rows of zeros
    (or `rows`, the raw scanlines with their filter bytes)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color_type, 3)
    if rows is None:
        row = b"\0" + bytes((width * channels * bit_depth + 7) // 8)
        rows = row * height
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = b"".join(png_chunk(kind, data) for kind, data in chunks)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + body
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def pam_bytes(header: Mapping[str, object], body: bytes) -> bytes:
    lines = "".join(f"{key} {value}\n" for key, value in header.items())
    return f"P7\n{lines}ENDHDR\n".encode() + body
