"""Netpbm PAM: uncompressed 8- or 16-bit samples behind a text header.

Programs without image libraries (the GIMP plug-in) exchange pixels with srgan through it at
full precision. The header is parsed strictly: a PAM is either exactly what srgan writes (depth
1-4, MAXVAL 255 or 65535, a matching TUPLTYPE if any) or refused with a line saying which field
is wrong, because a lenient reader turns a hostile header into a crash or a huge allocation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageReadError

MAGIC = b"P7\n"
TUPLE_TYPES = {1: "GRAYSCALE", 2: "GRAYSCALE_ALPHA", 3: "RGB", 4: "RGB_ALPHA"}
_END = b"ENDHDR\n"
# Real headers are a few dozen bytes; a bound keeps a missing ENDHDR from scanning a huge file.
_HEADER_LIMIT = 4096
_NUMBER = re.compile(r"[0-9]{1,9}")
_NUMERIC_FIELDS = ("WIDTH", "HEIGHT", "DEPTH", "MAXVAL")


@dataclass(frozen=True)
class PamHeader:
    """What a PAM header declares; `offset` is where the pixel bytes begin."""

    width: int
    height: int
    depth: int
    maxval: int
    offset: int


def parse_header(path: Path, data: bytes) -> PamHeader:
    """The header of the PAM in `data` (the whole file), checked field by field.

    Raises ImageReadError naming the file and the field for a header that is cut short, not
    ASCII, missing or repeating a field, or declaring what srgan does not read.
    """
    end = data.find(_END, 0, _HEADER_LIMIT)
    if end < 0:
        raise ImageReadError(
            f"{path}: PAM header has no ENDHDR line in its first {_HEADER_LIMIT} bytes (truncated, or not a PAM)"
        )
    try:
        text = data[len(MAGIC) : end].decode("ascii")
    except UnicodeDecodeError:
        raise ImageReadError(f"{path}: PAM header is not ASCII text; re-export it") from None
    fields = _fields(path, text)
    missing = [key for key in _NUMERIC_FIELDS if key not in fields]
    if missing:
        raise ImageReadError(f"{path}: PAM header lacks {', '.join(missing)}; re-export it")
    width, height, depth, maxval = (_number(path, key, fields[key]) for key in _NUMERIC_FIELDS)
    if depth not in TUPLE_TYPES:
        raise ImageReadError(f"{path}: PAM DEPTH {depth} is not supported; srgan reads 1 to 4 channels")
    if maxval not in (255, 65535):
        raise ImageReadError(
            f"{path}: PAM MAXVAL {maxval} is not supported; srgan reads 255 (8-bit) and 65535 (16-bit)"
        )
    tuple_type = fields.get("TUPLTYPE")
    if tuple_type is not None and tuple_type != TUPLE_TYPES[depth]:
        raise ImageReadError(
            f"{path}: PAM TUPLTYPE {tuple_type} with DEPTH {depth} is not supported;"
            f" srgan reads {TUPLE_TYPES[depth]} at that depth"
        )
    return PamHeader(width, height, depth, maxval, end + len(_END))


def _fields(path: Path, text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        parts = line.strip().split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        key, value = parts[0], parts[1].strip() if len(parts) > 1 else ""
        if key == "TUPLTYPE" and key in fields:  # the format joins repeated TUPLTYPE lines
            fields[key] += " " + value
        elif key not in (*_NUMERIC_FIELDS, "TUPLTYPE"):
            raise ImageReadError(f"{path}: PAM header line '{_shown(line)}' is not a PAM field; re-export it")
        elif key in fields:
            raise ImageReadError(f"{path}: PAM header gives {key} twice; re-export it")
        else:
            fields[key] = value
    return fields


def _number(path: Path, key: str, value: str) -> int:
    if not _NUMBER.fullmatch(value):
        raise ImageReadError(f"{path}: PAM {key} '{_shown(value)}' is not a whole number from 0 to 999999999")
    return int(value)


def _shown(text: str) -> str:
    return text.strip()[:40]


def read_pixels(path: Path, data: bytes, header: PamHeader) -> np.ndarray:
    """The H×W×C uint8 or uint16 pixels behind a checked header.

    Raises ImageReadError when the file has fewer pixel bytes than the header declares, or
    holds a second image after the first (srgan upscales one image per file).
    """
    dtype = np.dtype(">u2") if header.maxval == 65535 else np.dtype(np.uint8)
    expected = header.width * header.height * header.depth * dtype.itemsize
    body = memoryview(data)[header.offset :]
    if len(body) < expected:
        raise ImageReadError(f"{path}: truncated PAM ({len(body)} of {expected} bytes of pixels); re-export it")
    if bytes(body[expected : expected + len(MAGIC)]) == MAGIC:
        raise ImageReadError(f"{path}: PAM holds more than one image; srgan upscales still images only: split it first")
    pixels = np.frombuffer(body[:expected], dtype=dtype).reshape(header.height, header.width, header.depth)
    return pixels.astype(np.uint16 if header.maxval == 65535 else np.uint8)


def write_pam(pixels: np.ndarray, path: Path) -> None:
    """Write H×W×C uint8 or uint16 pixels (C 1-4) as a PAM with a TUPLTYPE line."""
    path.write_bytes(encode_pam(pixels))


def encode_pam(pixels: np.ndarray) -> bytes:
    """H×W×C uint8 or uint16 pixels (C 1-4) as the bytes of a PAM with a TUPLTYPE line."""
    height, width, depth = pixels.shape
    deep = pixels.dtype == np.uint16
    header = (
        f"P7\nWIDTH {width}\nHEIGHT {height}\nDEPTH {depth}\nMAXVAL {65535 if deep else 255}\n"
        f"TUPLTYPE {TUPLE_TYPES[depth]}\nENDHDR\n"
    )
    return header.encode("ascii") + pixels.astype(">u2" if deep else np.uint8).tobytes()
