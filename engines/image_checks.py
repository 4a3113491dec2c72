"""What srgan checks in an image file before trusting it, and how it words what went wrong.

A decoder accepts many files that srgan must still refuse: animations and multi-page files (one
frame would silently stand for all), TIFFs with channels beyond gray/RGB plus alpha (they would
be cut), metadata that contradicts itself (a resolution of 1/0, an orientation of 9, an ICC
profile cut short). Each check raises ImageReadError with one line naming the file and what is
wrong. Failures of the file system are worded by what they are (a device where a folder should
be, a full disk), not as a generic "cannot write".
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

from PIL import Image, PngImagePlugin

from .errors import ImageReadError, ImageWriteError, Setting

MAX_DPI = 1_000_000.0
"""Largest resolution accepted (dots per inch); beyond it the value is damage, not a scanner."""
_ORIENTATION_TAG = 0x0112
_NEW_SUBFILE_TYPE = 254
_REDUCED_IMAGE = 1  # NewSubfileType bit: a preview of another page, not a page of its own
_MULTI_FRAME_KINDS = {"GIF": "animated GIF", "PNG": "animated PNG", "WEBP": "animated WebP", "TIFF": "multi-page TIFF"}
# Colour samples per pixel for each TIFF photometric interpretation srgan's decoders handle.
_TIFF_COLOUR_SAMPLES = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3, 8: 3, 9: 3, 10: 3}
_TIFF_ALPHA = (1, 2)  # ExtraSamples: associated (premultiplied) or unassociated alpha


def check_frames(path: Path, image: Image.Image) -> None:
    """Refuse a file that holds more than one frame or page: srgan upscales still images only.

    JPEGs with a multi-picture extension (a camera's preview beside the photo) are not refused:
    their first frame is the photo. A TIFF's reduced-resolution previews do not count as pages.
    Leaves `image` at its first frame.
    """
    kind = _MULTI_FRAME_KINDS.get(image.format or "")
    frames = getattr(image, "n_frames", 1) if kind else 1
    if frames > 1 and image.format == "TIFF":
        frames = _full_tiff_pages(image, frames)
    if frames > 1:
        raise ImageReadError(
            f"{path}: {kind} with {frames} frames; srgan upscales still images only: extract the frames first"
            " and upscale them as separate files"
        )


def _full_tiff_pages(image: Image.Image, pages: int) -> int:
    full = 0
    for index in range(pages):
        image.seek(index)
        full += not int(image.tag_v2.get(_NEW_SUBFILE_TYPE, 0)) & _REDUCED_IMAGE
    image.seek(0)
    return full


def check_tiff_samples(path: Path, samples: int, photometric: int | None, extra_samples: tuple[int, ...]) -> None:
    """Refuse a TIFF whose samples go beyond its colour plus one alpha channel.

    samples: SamplesPerPixel; photometric: PhotometricInterpretation (None: not stated);
    extra_samples: the ExtraSamples values. An extra sample that is not alpha, or a second
    one, would be dropped by decoding to gray or RGB(A), so the file is refused instead.
    """
    colour = _TIFF_COLOUR_SAMPLES.get(photometric) if photometric is not None else None
    if colour is None or samples <= colour:
        return  # the decoder decides; it refuses what it cannot read
    extras = samples - colour
    if extras == 1 and tuple(extra_samples[:1]) and extra_samples[0] in _TIFF_ALPHA:
        return
    noun = "channel" if extras == 1 else "channels"
    raise ImageReadError(
        f"{path}: TIFF has {samples} samples per pixel, {colour} of colour and {extras} extra {noun} that srgan"
        " would lose (it keeps gray or RGB plus one alpha channel); save it without the extra channels"
    )


def stated_dpi(path: Path, value: object) -> tuple[float, float] | None:
    """The resolution a file states, in dots per inch, or None when it states none.

    value: what a decoder reports, an (x, y) pair. 0 and 0/0 (NaN) are how formats write
    "unknown", so they mean none; negative, infinite or absurd values raise ImageReadError.
    """
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if all(math.isnan(v) or v == 0 for v in (x, y)):
        return None
    if not all(0 < v <= MAX_DPI for v in (x, y)):  # also false for NaN
        raise ImageReadError(
            f"{path}: its resolution ({x:g} × {y:g} DPI) is not a usable value;"
            " re-save it with a real resolution, or with none"
        )
    return (x, y)


def tiff_dpi(path: Path, x_resolution: object, y_resolution: object, unit: object) -> tuple[float, float] | None:
    """A TIFF's resolution tags as DPI, or None when the file has none (unit 1: no unit)."""
    if x_resolution is None or y_resolution is None or unit == 1:
        return None
    factor = 2.54 if unit == 3 else 1.0
    try:
        pair = (float(x_resolution) * factor, float(y_resolution) * factor)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        pair = (math.nan, math.nan)
    return stated_dpi(path, pair)


def check_icc_profile(path: Path, profile: object) -> bytes | None:
    """The embedded ICC profile as bytes, or None; a profile cut short or not ICC raises ImageReadError.

    Only the header is checked (size and the 'acsp' signature): enough to tell a profile from
    damage, without judging the colour science.
    """
    if profile is None or profile == b"":
        return None
    if not isinstance(profile, bytes):
        problem = f"stored as {type(profile).__name__}, not bytes"
    elif len(profile) < 132 or profile[36:40] != b"acsp":
        problem = "no ICC header"
    elif int.from_bytes(profile[:4], "big") > len(profile):
        problem = f"it declares {int.from_bytes(profile[:4], 'big')} bytes and holds {len(profile)}"
    else:
        return profile
    raise ImageReadError(
        f"{path}: its embedded ICC colour profile is malformed ({problem}); re-save it with a valid profile or none"
    )


def read_exif(path: Path, image: Image.Image, drop_tags: tuple[int, ...]) -> tuple[Image.Exif, int]:
    """The file's EXIF (less `drop_tags`) and its orientation, 1-8.

    An orientation of 0 ("unknown", written by some cameras) counts as 1. EXIF that cannot be
    parsed or re-encoded, or an orientation outside 1-8, raises ImageReadError: the pixels'
    upright position would be a guess.
    """
    try:
        exif = image.getexif()
        for tag in drop_tags:
            exif.pop(tag, None)
        orientation = exif.get(_ORIENTATION_TAG, 1)
        exif.tobytes()
    except Exception as error:  # a damaged EXIF block fails in many ways inside Pillow
        raise ImageReadError(
            f"{path}: its EXIF metadata is malformed ({_first_line(error)}); re-save it without EXIF"
        ) from error
    if orientation == 0:
        orientation = 1
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        raise ImageReadError(
            f"{path}: its EXIF orientation is {str(orientation)[:20]}, not one of 1-8, so which way is up is unknown;"
            " set the tag to 1-8 or remove it"
        )
    return exif, orientation


def read_failure(path: Path, error: BaseException) -> ImageReadError:
    """An ImageReadError that says what a decoder's exception means for the user."""
    text = _first_line(error)
    if isinstance(error, ValueError) and ("MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY" in text):
        limit = PngImagePlugin.MAX_TEXT_CHUNK if "CHUNK" in text else PngImagePlugin.MAX_TEXT_MEMORY
        return ImageReadError(
            f"{path}: a compressed PNG metadata chunk (text or ICC profile) expands beyond {limit >> 20} MB, the"
            " mark of a decompression bomb; srgan refuses it (strip the metadata if you trust the file)"
        )
    if isinstance(error, MemoryError):
        return ImageReadError(f"{path}: decoding it needs more memory than is free; try a smaller image")
    if isinstance(error, PermissionError):
        return ImageReadError(f"{path}: cannot be read (permission denied); check the file's permissions")
    if isinstance(error, (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError)) or (
        type(error).__module__.split(".")[0] in ("struct", "zlib", "tifffile", "imagecodecs")
    ):
        return ImageReadError(f"{path}: truncated or corrupt image ({text}); re-export or re-download it")
    return ImageReadError(
        f"{path}: cannot be decoded ({type(error).__name__}: {text}); it is damaged or uses a feature srgan's"
        " decoders do not support; re-export it as PNG"
    )


def describe_kind(path: Path) -> str:
    """'a file', 'a device', 'a named pipe', 'a socket' or 'a folder': what is at `path`."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def check_output_folder(folder: Path) -> None:
    """Raise ImageWriteError unless `folder` is a writable folder or can be created.

    Names what stands in the way: a device or file where the folder (or one of its parents)
    should be, or a folder without write permission.
    """
    existing = Path(folder)
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir():
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            raise ImageWriteError(f"{existing}: folder is on a read-only file system", setting=Setting.OUTPUT)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ImageWriteError(
                f"{existing}: folder is not writable (permission denied)",
                setting=Setting.OUTPUT,
            )
        return
    kind = describe_kind(existing) if existing.exists() else "a broken link"
    where = "" if existing == Path(folder) else f"cannot be made: {existing} "
    raise ImageWriteError(f"{folder}: {where}is {kind}, not a folder", setting=Setting.OUTPUT)


# errno -> (advice no setting can give, or None; the setting that fixes it, or None). What
# happened is told in the system's own words (strerror), which users can search for.
_WRITE_ADVICE: dict[int, tuple[str | None, Setting | None]] = {
    errno.ENOSPC: ("free some space", None),
    errno.EDQUOT: ("free some space", None),
    errno.EACCES: (None, Setting.OUTPUT),
    errno.EPERM: (None, Setting.OUTPUT),
    errno.EROFS: (None, Setting.OUTPUT),
    errno.ENAMETOOLONG: (None, Setting.NAME_TEMPLATE),
    errno.EIO: ("check the disk", None),
}


def write_failure(path: Path, error: OSError) -> ImageWriteError:
    """An ImageWriteError that says what an OSError while writing `path` means for the user."""
    advice, setting = _WRITE_ADVICE.get(error.errno, ("check the output folder", None))
    reason = error.strerror or _first_line(error)
    message = f"{path}: cannot write the image: {reason}" + (f"; {advice}" if advice else "")
    return ImageWriteError(message, setting=setting)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
