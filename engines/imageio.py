"""Reading and writing images while keeping what users care about.

Pixels become H×W×C uint8 or uint16 arrays (C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA). EXIF
orientation is applied on reading, so pixels are upright and the EXIF written back says so.
The ICC profile and EXIF travel with the pixels to the output. 16-bit PNG and TIFF, which
Pillow reduces to 8 bits, are decoded and encoded with imagecodecs and tifffile instead.
Outputs are written under a temporary name and renamed into place, so a failed write never
leaves a partial file.
"""

from __future__ import annotations

import io
import math
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from . import pam
from .atomic import atomic_path
from .errors import ImageReadError, ImageWriteError, Setting
from .image_checks import (
    check_frames,
    check_icc_profile,
    check_output_folder,
    check_tiff_samples,
    describe_kind,
    read_exif,
    read_failure,
    stated_dpi,
    tiff_dpi,
    write_failure,
)

# The formats Pillow may decode. Pillow knows dozens more (EPS runs Ghostscript; PSD, FITS,
# ICNS and the like are parsers a hostile file could reach); srgan reads what it documents.
_PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "PPM")

# This module enforces its own pixel limit, with a message that says how to lift it.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest input accepted by default: 40 Mpx in is 640 Mpx (1.9 GB as RGB) out at 4×."""

FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP", "pam": "PAM"}
_EXTENSIONS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
    ".pam": "pam",
}
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp", "pam": ".pam"}
_ORIENTATION_TAG = 0x0112
# A TIFF's first IFD doubles as its EXIF; these tags describe the source file's layout and
# would be wrong in any output, so they are not carried over.
_TIFF_STRUCTURE_TAGS = (
    256,
    257,
    258,
    259,
    262,
    273,
    277,
    278,
    279,
    282,
    283,
    284,
    296,
    317,
    320,
    322,
    323,
    324,
    325,
    338,
    339,
    34675,
)


@dataclass(frozen=True)
class Picture:
    """An image as pixels plus the metadata that must survive upscaling.

    pixels: H×W×C, uint8 or uint16, C = 1 (gray), 2 (gray, alpha), 3 (RGB) or 4 (RGBA), upright.
    icc_profile: the embedded ICC profile, or None.
    exif: EXIF as bytes starting with b"Exif\\0\\0", orientation reset to 1, or None.
    dpi: the stored resolution in dots per inch, or None.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8


def format_for(path: Path, requested: str | None = None) -> str:
    """The output format key ('png', 'jpeg', ...) from `requested` or else the path's extension.

    Raises ImageWriteError when neither names a supported format.
    """
    if requested:
        key = requested.lower().lstrip(".")
        key = _EXTENSIONS.get("." + key, key)
        if key not in FORMATS:
            raise ImageWriteError(
                f"unknown output format '{requested}': it is one of {', '.join(FORMATS)}", setting=Setting.OUTPUT_FORMAT
            )
        return key
    key = _EXTENSIONS.get(Path(path).suffix.lower())
    if key is None:
        raise ImageWriteError(
            f"{path}: cannot tell the output format from '{Path(path).suffix}' (.png, .jpg, .webp, .tif, .bmp)",
            setting=Setting.OUTPUT_FORMAT,
        )
    return key


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode an image file, applying its EXIF orientation.

    max_pixels: refuse images with more pixels than this (0: no limit).
    Raises ImageReadError, naming the file and what is wrong, for anything that is not one
    readable still image: a missing file, something other than a regular file, a file that is
    not an image, a truncated or corrupt one, a zero-size one, one over the pixel limit, an
    animation or multi-page file, channels that would be lost, or metadata that contradicts
    itself. No other exception escapes for a bad file.
    """
    path = Path(path)
    _open_head(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise read_failure(path, error) from None
    return decode_image(data, max_pixels, name=str(path))


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> Picture:
    """Decode an encoded image held in memory (an object store's bytes), as `read_image` does a file.

    name: how messages call the image (its path or URL).
    Raises ImageReadError naming `name` for bytes that are not one readable still image, as
    `read_image` does; no other exception escapes for bad bytes.
    """
    source = _Source(name, data)
    if not data:
        raise ImageReadError(f"{name}: file is empty (0 bytes); re-export or re-download it")
    try:
        if data.startswith(pam.MAGIC):
            return _read_pam(source, max_pixels)
        return _read_with_pillow(source, max_pixels)
    except ImageReadError:
        raise
    except Exception as error:  # the contract: a bad file is an ImageReadError, whatever the decoder raised
        raise read_failure(source, error) from error


class _Source:
    """An image's bytes and the name messages call it by, where the decoders below once took a
    path: `str()` gives the name, and the bytes are read as a file's would be."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def __str__(self) -> str:
        return self.name

    def read_bytes(self) -> bytes:
        return self.data

    def open(self, mode: str = "rb") -> io.BytesIO:
        return io.BytesIO(self.data)


def _open_head(path: Path) -> bytes:
    """The first bytes of a regular, non-empty file; ImageReadError for anything else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found; check the path") from None
    except OSError as error:
        raise ImageReadError(f"{path}: cannot be read ({error.strerror}); check the path") from None
    if stat.S_ISDIR(mode):
        raise ImageReadError(f"{path}: is a folder, not an image file", setting=Setting.RECURSIVE)
    if not stat.S_ISREG(mode):
        # reading a pipe or a device could block forever or never end
        raise ImageReadError(f"{path}: is {describe_kind(path)}, not an image file; pass image files")
    try:
        with path.open("rb") as stream:
            head = stream.read(16)
    except OSError as error:
        raise read_failure(path, error) from None
    if not head:
        raise ImageReadError(f"{path}: file is empty (0 bytes); re-export or re-download it")
    return head


def _read_pam(path: _Source, max_pixels: int) -> Picture:
    data = path.read_bytes()
    header = pam.parse_header(path, data)
    _check_size(path, (header.width, header.height), max_pixels)
    return Picture(pixels=pam.read_pixels(path, data, header))


def _read_with_pillow(path: _Source, max_pixels: int) -> Picture:
    try:
        image = Image.open(path.open(), formats=_PILLOW_FORMATS)
    except UnidentifiedImageError:
        if _is_tiff(path):
            return _read_tiff_without_pillow(path, max_pixels)
        raise ImageReadError(f"{path}: not an image file that can be read; use PNG, JPEG, WebP, TIFF or BMP") from None
    with image:
        _check_size(path, image.size, max_pixels)
        check_frames(path, image)
        if image.format == "TIFF":
            _check_pillow_tiff(path, image)
        pixels = _checked_pixels(path, _decode(path, image))
        icc_profile = check_icc_profile(path, image.info.get("icc_profile"))
        if image.mode == "CMYK":
            icc_profile = None  # a CMYK profile does not describe the RGB pixels we made
        exif, orientation = read_exif(path, image, _TIFF_STRUCTURE_TAGS if image.format == "TIFF" else ())
        dpi = _pillow_dpi(path, image)
    pixels = apply_orientation(pixels, orientation)
    if orientation != 1 or _ORIENTATION_TAG in exif:
        exif[_ORIENTATION_TAG] = 1
    return Picture(pixels=pixels, icc_profile=icc_profile, exif=exif.tobytes() if len(exif) else None, dpi=dpi)


def _check_pillow_tiff(path: _Source, image: Image.Image) -> None:
    tags = image.tag_v2
    extra = tags.get(338, ())
    check_tiff_samples(
        path, int(tags.get(277, 1)), tags.get(262), tuple(extra) if isinstance(extra, tuple) else (extra,)
    )
    bits = _tiff_bits(image)
    if bits > 8 and bits != 16:
        raise ImageReadError(f"{path}: TIFF with {bits} bits per sample is not supported; save it as 8- or 16-bit")


def _tiff_bits(image: Image.Image) -> int:
    """The largest BitsPerSample of a TIFF opened by Pillow (1 when not stated)."""
    bits = image.tag_v2.get(258, 1)
    return int(max(bits)) if isinstance(bits, tuple) and bits else int(bits) if isinstance(bits, int) else 1


def _pillow_dpi(path: _Source, image: Image.Image) -> tuple[float, float] | None:
    if image.format == "TIFF":
        # Pillow reports 1 DPI for a TIFF without resolution tags; only what the file states counts.
        tags = image.tag_v2
        return tiff_dpi(path, tags.get(282), tags.get(283), tags.get(296))
    return stated_dpi(path, image.info.get("dpi"))


def _checked_pixels(path: _Source, pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels as H×W×C with C 1-4, uint8 or uint16; ImageReadError otherwise."""
    pixels = _channels_last(pixels)
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4:
        raise ImageReadError(
            f"{path}: {pixels.dtype} samples of shape {pixels.shape} are not supported;"
            " save it as 8- or 16-bit gray or RGB, with or without alpha"
        )
    if 0 in pixels.shape[:2]:
        raise ImageReadError(f"{path}: image has zero size; nothing to upscale")
    return pixels


def _is_tiff(path: _Source) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _read_tiff_without_pillow(path: _Source, max_pixels: int) -> Picture:
    """TIFFs Pillow cannot open (16-bit gray with alpha, for one), read with tifffile alone."""
    with tifffile.TiffFile(path.open()) as tiff:
        pages = [page for page in tiff.pages if not page.is_reduced]
        if len(pages) > 1:
            raise ImageReadError(
                f"{path}: multi-page TIFF with {len(pages)} frames; srgan upscales still images only:"
                " extract the frames first and upscale them as separate files"
            )
        page = tiff.pages.first
        _check_size(path, (page.imagewidth, page.imagelength), max_pixels)
        check_tiff_samples(path, page.samplesperpixel, int(page.photometric), tuple(page.extrasamples))
        if page.bitspersample not in (8, 16):
            raise ImageReadError(
                f"{path}: TIFF with {page.bitspersample} bits per sample is not supported; save it as 8- or 16-bit"
            )
        pixels = _tiff_page_pixels(path, page)
        icc_tag = page.tags.get(34675)
        icc_profile = check_icc_profile(path, bytes(icc_tag.value) if icc_tag is not None else None)
        dpi = _tifffile_dpi(path, page)
    return Picture(pixels=pixels, icc_profile=icc_profile, dpi=dpi)


def _tiff_page_pixels(path: _Source, page: tifffile.TiffPage) -> np.ndarray:
    """A TIFF page's samples as H×W×C, whether stored pixel by pixel or plane by plane."""
    pixels = page.asarray()
    axes = page.axes
    if axes == "SYX":
        pixels = np.moveaxis(pixels, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise ImageReadError(f"{path}: TIFF page with axes {axes} is not supported; save it as one 2-D image")
    return _checked_pixels(path, pixels)


def _tifffile_dpi(path: _Source, page: tifffile.TiffPage) -> tuple[float, float] | None:
    def value(code: int) -> object:
        tag = page.tags.get(code)
        if tag is None:
            return None
        raw = tag.value
        if isinstance(raw, tuple) and len(raw) == 2:
            return raw[0] / raw[1] if raw[1] else math.nan
        return raw

    return tiff_dpi(path, value(282), value(283), value(296))


def _check_size(path: _Source, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: image has zero size ({width}×{height}); nothing to upscale")
    if max_pixels and width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}×{height} is {width * height:,} pixels, over the limit of {max_pixels:,}"
            " that guards against decompression bombs",
            setting=Setting.MAX_PIXELS,
        )


def _decode(path: _Source, image: Image.Image) -> np.ndarray:
    """Pixels of the first frame as H×W×C uint8 or uint16."""
    if _is_16_bit(image):
        if image.format == "PNG":
            import imagecodecs  # only 16-bit PNGs need it, and it is slow to import

            array = imagecodecs.png_decode(path.read_bytes())
            return _channels_last(array.astype(np.uint16, copy=False))
        with tifffile.TiffFile(path.open()) as tiff:
            return _tiff_page_pixels(path, tiff.pages.first).astype(np.uint16, copy=False)
    image.load()
    mode = image.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info or image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("1", "I", "F", "I;16", "I;16B", "I;16L"):
        if mode != "1":
            raise ImageReadError(f"{path}: pixel mode {mode} is not supported; save the image as 8- or 16-bit")
        image = image.convert("L")
    elif mode == "La":
        image = image.convert("LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
    return _channels_last(np.asarray(image))


def _is_16_bit(image: Image.Image) -> bool:
    if image.format == "TIFF":
        # The tag, not Pillow's raw mode: Pillow reads planar 16-bit TIFFs as 8-bit planes.
        return _tiff_bits(image) == 16
    if image.format != "PNG" or not image.tile:
        return False
    args = image.tile[0].args
    rawmode = args[0] if isinstance(args, tuple) else args
    return isinstance(rawmode, str) and ";16" in rawmode


def _channels_last(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


_ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn H×W×C pixels upright for an EXIF orientation value (1-8; others are ignored)."""
    return np.ascontiguousarray(_ORIENTATIONS.get(orientation, _ORIENTATIONS[1])(pixels))


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """(height, width) of an image of height × width enlarged by `factor`, rounded, at least 1."""
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_pixels(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """H×W×C uint8 or uint16 pixels resampled to height × width with Lanczos, same dtype.

    Each channel is resampled in float32 (alpha too), so 16-bit images keep their depth.
    """
    if pixels.shape[:2] == (height, width):
        return pixels
    peak = np.iinfo(pixels.dtype).max
    result = np.empty((height, width, pixels.shape[2]), dtype=pixels.dtype)
    for channel in range(pixels.shape[2]):
        plane = Image.fromarray(pixels[:, :, channel].astype(np.float32), "F")
        resampled = np.asarray(plane.resize((width, height), Image.Resampling.LANCZOS))
        result[:, :, channel] = np.clip(np.rint(resampled), 0, peak)
    return result


def write_image(
    picture: Picture,
    path: Path,
    image_format: str | None = None,
    quality: int = 95,
    png_compression: int = 6,
    size: tuple[int, int] | None = None,
) -> None:
    """Encode `picture` to `path` atomically, creating missing parent folders.

    image_format: 'png', 'jpeg', 'webp', 'tiff' or 'bmp'; None takes it from the extension.
    quality: 1-100 for JPEG and WebP (100 makes WebP lossless).
    png_compression: zlib level 0-9 for PNG: 0 stores; 1-8 use zlib's run-length strategy, 9
        its default strategy at its longest search, 3% smaller and 50 times slower (`png_strategy`).
    size: (height, width) to resample to first (`resize_pixels`), for outputs at another scale
        than the model's; None writes the pixels as they are.
    16 bits are kept in PNG, TIFF and PAM and reduced to 8 for the others. JPEG cannot hold alpha: an
    opaque alpha channel is dropped, any other raises ImageWriteError.
    Raises ImageWriteError naming the file and the fix; no file is left at `path` on failure.
    """
    path = Path(path)
    if not 0 <= png_compression <= 9:
        raise ValueError(f"PNG compression must be 0-9, not {png_compression}")
    key = format_for(path, image_format)
    if size is not None:
        picture = replace(picture, pixels=resize_pixels(picture.pixels, *size))
    picture = _fit_format(path, picture, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        check_output_folder(path.parent)  # names what stands in the way, if anything does
        raise write_failure(path.parent, error) from None
    try:
        taken = path.exists() and not path.is_file()
    except OSError as error:  # a name too long, for one
        raise write_failure(path, error) from None
    if taken:  # os.replace would put the image in place of a device node or fail on a folder
        raise ImageWriteError(f"{path}: is {describe_kind(path)}, not an image file", setting=Setting.OUTPUT)
    try:
        with atomic_path(path) as temporary, temporary.open("wb") as stream:
            _encode(picture, stream, key, quality, png_compression)
    except OSError as error:
        raise write_failure(path, error) from None
    except Exception as error:  # an encoder's own failure is this file's failure, in one line
        raise ImageWriteError(
            f"{path}: cannot encode the image as {FORMATS[key]} ({type(error).__name__}: {_first_line(error)})"
        ) from error


# Largest side each format can store; beyond it the encoder fails after all the work is done.
_MAX_SIDE = {"webp": 16383, "jpeg": 65535}
# JFIF stores the resolution in 16 bits.
_MAX_STORED_DPI = {"jpeg": 65535.0}


def _fit_format(path: Path, picture: Picture, key: str) -> Picture:
    """Reduce a picture to what the format can hold."""
    pixels = picture.pixels
    if key not in ("png", "tiff", "pam") and pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if key == "jpeg" and pixels.shape[2] in (2, 4):
        alpha = pixels[:, :, -1]
        if alpha.min() < np.iinfo(pixels.dtype).max:
            raise ImageWriteError(
                f"{path}: JPEG cannot store the image's transparency; PNG, WebP and TIFF can",
                setting=Setting.OUTPUT_FORMAT,
                suggestion="png",
            )
        pixels = pixels[:, :, :-1]
    limit = _MAX_SIDE.get(key)
    if limit is not None and max(pixels.shape[:2]) > limit:
        raise ImageWriteError(
            f"{path}: {FORMATS[key]} holds at most {limit} pixels a side and the image is"
            f" {pixels.shape[1]} × {pixels.shape[0]}; PNG and TIFF can hold it",
            setting=Setting.OUTPUT_FORMAT,
            suggestion="png",
        )
    dpi = picture.dpi
    if dpi is not None and not all(math.isfinite(v) and 0 < v <= _MAX_STORED_DPI.get(key, math.inf) for v in dpi):
        # JFIF stores 16 bits: a rarer, larger resolution is left out rather than failing the image
        dpi = None
    if key == "webp" and pixels.shape[2] in (1, 2):
        pixels = np.repeat(pixels, [3, 1][: pixels.shape[2]], axis=2)
    return replace(picture, pixels=pixels, dpi=dpi)


def encode_image(
    picture: Picture,
    image_format: str,
    quality: int = 95,
    png_compression: int = 6,
    size: tuple[int, int] | None = None,
    name: str = "image",
) -> bytes:
    """The bytes `write_image` would write for the same arguments, for an object store.

    image_format: a format key ('png', 'jpeg', 'webp', 'tiff', 'bmp', 'pam') or an extension.
    name: how messages call the output (its path or URL).
    Raises ImageWriteError for an unknown format or a picture the format cannot hold.
    """
    if not 0 <= png_compression <= 9:
        raise ValueError(f"PNG compression must be 0-9, not {png_compression}")
    key = format_for(Path(name), image_format)
    if size is not None:
        picture = replace(picture, pixels=resize_pixels(picture.pixels, *size))
    picture = _fit_format(Path(name), picture, key)
    stream = io.BytesIO()
    try:
        _encode(picture, stream, key, quality, png_compression)
    except Exception as error:  # an encoder's own failure, in one line
        raise ImageWriteError(
            f"{name}: cannot encode the image as {FORMATS[key]} ({type(error).__name__}: {_first_line(error)})"
        ) from error
    return stream.getvalue()


def _encode(picture: Picture, stream: BinaryIO, key: str, quality: int, png_compression: int) -> None:
    """Encode to an open binary stream (a temporary file or memory): one encoder for both."""
    if key == "pam":
        stream.write(pam.encode_pam(picture.pixels))
        return
    if picture.pixels.dtype == np.uint16:
        if key == "png":
            _write_png16(picture, stream, png_compression)
        else:
            _write_tiff16(picture, stream)
        return
    pixels = picture.pixels
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    options: dict[str, object] = {}
    if key != "bmp":
        if picture.icc_profile:
            options["icc_profile"] = picture.icc_profile
        if picture.exif:
            options["exif"] = picture.exif
    if picture.dpi and key in ("png", "jpeg", "tiff", "bmp"):
        options["dpi"] = picture.dpi
    if key == "jpeg":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
    elif key == "webp":
        options.update(quality=quality, lossless=quality >= 100, method=4, exact=True)
    elif key == "tiff":
        options["compression"] = "tiff_adobe_deflate"
    elif key == "png":
        options.update(compress_level=png_compression, compress_type=png_strategy(png_compression))
    image.save(stream, format=FORMATS[key], **options)


def png_strategy(level: int) -> int:
    """The zlib strategy PNG output uses at `level`: run-length (Z_RLE) for 1-8, the default for 9.

    Run-length matching only looks one pixel back, which is what PNG's row filters leave to find
    in upscaled photographs: there it wrote files 4% smaller than the default strategy at level
    6, four times faster, and 2% smaller than level 7; its level changes nothing. Only level 9's
    long search wrote smaller files, 3% smaller, 50 times slower (benchmarks/png_levels.py).
    """
    return zlib.Z_RLE if 1 <= level <= 8 else zlib.Z_DEFAULT_STRATEGY


def _write_png16(picture: Picture, stream: BinaryIO, level: int) -> None:
    import imagecodecs  # only 16-bit PNGs need it, and it is slow to import

    pixels = picture.pixels
    data = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    encoded = imagecodecs.png_encode(data, level=level, strategy=png_strategy(level))
    chunks = []
    if picture.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(picture.icc_profile)))
    if picture.exif:
        chunks.append(_png_chunk(b"eXIf", picture.exif.removeprefix(b"Exif\0\0")))
    # Ancillary chunks go straight after IHDR: 8 bytes of signature, then IHDR's 25 bytes.
    header_end = 8 + 25
    stream.write(encoded[:header_end] + b"".join(chunks) + encoded[header_end:])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_tiff16(picture: Picture, stream: BinaryIO) -> None:
    pixels = picture.pixels
    channels = pixels.shape[2]
    photometric = "minisblack" if channels <= 2 else "rgb"
    data = pixels[:, :, 0] if channels == 1 else pixels
    tifffile.imwrite(
        stream,
        data,
        photometric=photometric,
        planarconfig="contig",
        extrasamples=("unassalpha",) if channels in (2, 4) else None,
        iccprofile=picture.icc_profile,
        compression="zlib",
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
