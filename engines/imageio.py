"""Reading and writing images while keeping what users care about.

Pixels become H×W×C uint8 or uint16 arrays (C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA). EXIF
orientation is applied on reading, so pixels are upright and the EXIF written back says so.
The ICC profile and EXIF travel with the pixels to the output. 16-bit PNG and TIFF, which
Pillow reduces to 8 bits, are decoded and encoded with imagecodecs and tifffile instead.
Outputs are written under a temporary name and renamed into place, so a failed write never
leaves a partial file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path
from .errors import ImageReadError, ImageWriteError, Setting

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
# Netpbm PAM: uncompressed 8- or 16-bit samples behind a text header; programs without image
# libraries (the GIMP plug-in) exchange pixels through it at full precision.
_PAM_TUPLE_TYPES = {1: "GRAYSCALE", 2: "GRAYSCALE_ALPHA", 3: "RGB", 4: "RGB_ALPHA"}
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
    Raises ImageReadError, naming the file and the fix, for a missing file, a file that is not
    an image, a truncated or corrupt one, a zero-size one or one over the pixel limit.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file", setting=Setting.RECURSIVE)
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes); re-export or re-download it")
    with path.open("rb") as stream:
        if stream.read(3) == b"P7\n":
            return Picture(pixels=_read_pam(path, max_pixels))
    try:
        with Image.open(path) as image:
            _check_size(path, image.size, max_pixels)
            pixels = _decode(path, image)
            icc_profile = image.info.get("icc_profile") or None
            if image.mode == "CMYK":
                icc_profile = None  # a CMYK profile does not describe the RGB pixels we made
            exif = image.getexif()
            if image.format == "TIFF":
                for tag in _TIFF_STRUCTURE_TAGS:
                    exif.pop(tag, None)
            dpi = _dpi(image.info.get("dpi"))
    except UnidentifiedImageError:
        if _is_tiff(path):
            return _read_tiff_without_pillow(path, max_pixels)
        raise ImageReadError(f"{path}: not an image file that can be read; use PNG, JPEG, WebP, TIFF or BMP") from None
    except (OSError, ValueError, SyntaxError, struct.error, zlib.error, RuntimeError) as error:
        raise ImageReadError(
            f"{path}: truncated or corrupt image ({_first_line(error)}); re-export or re-download it"
        ) from None
    if 0 in pixels.shape[:2]:
        raise ImageReadError(f"{path}: image has zero size; nothing to upscale")
    orientation = exif.get(_ORIENTATION_TAG, 1)
    pixels = apply_orientation(pixels, orientation)
    if orientation != 1:
        exif[_ORIENTATION_TAG] = 1
    return Picture(pixels=pixels, icc_profile=icc_profile, exif=exif.tobytes() if len(exif) else None, dpi=dpi)


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _read_tiff_without_pillow(path: Path, max_pixels: int) -> Picture:
    """TIFFs Pillow cannot open (16-bit gray with alpha, for one), read with tifffile alone."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            _check_size(path, (page.imagewidth, page.imagelength), max_pixels)
            pixels = page.asarray()
            icc_tag = page.tags.get(34675)
            icc_profile = bytes(icc_tag.value) if icc_tag is not None else None
    except (tifffile.TiffFileError, ValueError, OSError) as error:
        raise ImageReadError(f"{path}: truncated or corrupt TIFF ({_first_line(error)}); re-export it") from None
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3) or _channels_last(pixels).shape[2] > 4:
        raise ImageReadError(
            f"{path}: TIFF with {pixels.dtype} samples of shape {pixels.shape} is not supported;"
            " save it as 8- or 16-bit gray or RGB, with or without alpha"
        )
    return Picture(pixels=_channels_last(pixels), icc_profile=icc_profile)


def _read_pam(path: Path, max_pixels: int) -> np.ndarray:
    data = path.read_bytes()
    end = data.find(b"ENDHDR\n")
    fields: dict[str, str] = {}
    for line in data[3 : max(end, 3)].decode("ascii", "replace").splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            fields[key] = value.strip()
    try:
        width, height, depth, peak = (int(fields[key]) for key in ("WIDTH", "HEIGHT", "DEPTH", "MAXVAL"))
    except (KeyError, ValueError):
        raise ImageReadError(f"{path}: PAM header is incomplete (needs WIDTH, HEIGHT, DEPTH, MAXVAL, ENDHDR)") from None
    _check_size(path, (width, height), max_pixels)
    if end < 0 or depth not in _PAM_TUPLE_TYPES or peak not in (255, 65535):
        raise ImageReadError(
            f"{path}: unsupported PAM (depth {depth}, maxval {peak}); use depth 1-4 and maxval 255 or 65535"
        )
    dtype = np.dtype(">u2") if peak == 65535 else np.dtype(np.uint8)
    body = data[end + 7 :]
    expected = width * height * depth * dtype.itemsize
    if len(body) < expected:
        raise ImageReadError(f"{path}: truncated PAM ({len(body)} of {expected} bytes of pixels); re-export it")
    pixels = np.frombuffer(body[:expected], dtype=dtype).reshape(height, width, depth)
    return pixels.astype(np.uint16 if peak == 65535 else np.uint8)


def _write_pam(picture: Picture, path: Path) -> None:
    pixels = picture.pixels
    height, width, depth = pixels.shape
    deep = pixels.dtype == np.uint16
    header = (
        f"P7\nWIDTH {width}\nHEIGHT {height}\nDEPTH {depth}\nMAXVAL {65535 if deep else 255}\n"
        f"TUPLTYPE {_PAM_TUPLE_TYPES[depth]}\nENDHDR\n"
    )
    path.write_bytes(header.encode("ascii") + pixels.astype(">u2" if deep else np.uint8).tobytes())


def _check_size(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: image has zero size ({width}×{height}); nothing to upscale")
    if max_pixels and width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}×{height} is {width * height:,} pixels, over the limit of {max_pixels:,}"
            " that guards against decompression bombs",
            setting=Setting.MAX_PIXELS,
        )


def _decode(path: Path, image: Image.Image) -> np.ndarray:
    """Pixels of the first frame as H×W×C uint8 or uint16."""
    if _is_16_bit(image):
        if image.format == "PNG":
            import imagecodecs  # only 16-bit PNGs need it, and it is slow to import

            array = imagecodecs.png_decode(path.read_bytes())
        else:
            array = tifffile.imread(path, key=0)
        return _channels_last(array.astype(np.uint16, copy=False))
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
    if image.format not in ("PNG", "TIFF") or not image.tile:
        return False
    args = image.tile[0].args
    rawmode = args[0] if isinstance(args, tuple) else args
    return isinstance(rawmode, str) and ";16" in rawmode


def _channels_last(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


def _dpi(value: object) -> tuple[float, float] | None:
    if isinstance(value, tuple) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    return None


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
    png_compression: zlib level 0-9 for PNG; 1 writes about 5 times faster than 6, 25% larger.
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
        raise ImageWriteError(
            f"{path.parent}: cannot create the output folder ({error.strerror}); choose another"
        ) from None
    try:
        with atomic_path(path) as temporary:
            _encode(picture, temporary, key, quality, png_compression)
    except OSError as error:
        raise ImageWriteError(
            f"{path}: cannot write the image ({_first_line(error)}); check the folder's permissions and free space"
        ) from None


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
    if key == "webp" and pixels.shape[2] in (1, 2):
        pixels = np.repeat(pixels, [3, 1][: pixels.shape[2]], axis=2)
    return replace(picture, pixels=pixels)


def _encode(picture: Picture, path: Path, key: str, quality: int, png_compression: int) -> None:
    if key == "pam":
        _write_pam(picture, path)
        return
    if picture.pixels.dtype == np.uint16:
        if key == "png":
            _write_png16(picture, path, png_compression)
        else:
            _write_tiff16(picture, path)
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
        options["compress_level"] = png_compression
    image.save(path, format=FORMATS[key], **options)


def _write_png16(picture: Picture, path: Path, level: int) -> None:
    import imagecodecs  # only 16-bit PNGs need it, and it is slow to import

    pixels = picture.pixels
    encoded = imagecodecs.png_encode(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, level=level)
    chunks = []
    if picture.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(picture.icc_profile)))
    if picture.exif:
        chunks.append(_png_chunk(b"eXIf", picture.exif.removeprefix(b"Exif\0\0")))
    # Ancillary chunks go straight after IHDR: 8 bytes of signature, then IHDR's 25 bytes.
    header_end = 8 + 25
    path.write_bytes(encoded[:header_end] + b"".join(chunks) + encoded[header_end:])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_tiff16(picture: Picture, path: Path) -> None:
    pixels = picture.pixels
    channels = pixels.shape[2]
    photometric = "minisblack" if channels <= 2 else "rgb"
    data = pixels[:, :, 0] if channels == 1 else pixels
    tifffile.imwrite(
        path,
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
