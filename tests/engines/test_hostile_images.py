"""Hostile image files, one test per defect class: each is read as an image or refused in one line."""

from __future__ import annotations

import errno
import struct
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, PngImagePlugin

from srgan.engines import ImageReadError, ImageWriteError, Picture, Setting, read_image, write_image
from srgan.engines.image_checks import write_failure
from tests.engines.forge import RATIONAL, SHORT, pam_bytes, png_bytes, tiff_bytes
from tests.helpers import random_image

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def refused(path: Path, match: str, **options) -> str:
    with pytest.raises(ImageReadError, match=match) as caught:
        read_image(path, **options)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def made(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def resolution_tiff(path: Path, x: tuple[int, int], y: tuple[int, int], unit: int = 2) -> Path:
    tags = {282: (RATIONAL, [x]), 283: (RATIONAL, [y]), 296: (SHORT, [unit])}
    return made(path, tiff_bytes([(random_image(4, 5, 3), tags)]))


# --- resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize("x, y", [((0, 0), (0, 0)), ((0, 1), (0, 1)), ((300, 0), (300, 0))])
def test_unstated_tiff_resolutions_mean_none_and_the_image_writes(tmp_path, x, y):
    """0, 0/0 and x/0 are how writers say "unknown"; they used to reach the encoder as NaN and crash it."""
    picture = read_image(resolution_tiff(tmp_path / "scan.tif", x, y))
    assert picture.dpi is None
    for extension in (".png", ".jpg", ".tif", ".bmp"):
        write_image(picture, tmp_path / f"out{extension}")


def test_tiff_resolution_in_centimetres_and_absent(tmp_path):
    assert read_image(resolution_tiff(tmp_path / "cm.tif", (100, 1), (100, 1), unit=3)).dpi == (254.0, 254.0)
    assert read_image(made(tmp_path / "none.tif", tiff_bytes([(random_image(4, 5, 3), {})]))).dpi is None


@pytest.mark.parametrize("x, y", [((4_000_000_000, 1), (4_000_000_000, 1)), ((300, 1), (0, 1))])
def test_absurd_or_lopsided_resolution_is_refused(tmp_path, x, y):
    refused(resolution_tiff(tmp_path / "absurd.tif", x, y), "resolution .* is not a usable value")


def test_a_resolution_jpeg_cannot_store_is_left_out_not_a_crash(tmp_path):
    write_image(Picture(random_image(4, 4, 3), dpi=(90_000.0, 90_000.0)), tmp_path / "out.jpg")
    write_image(Picture(random_image(4, 4, 3), dpi=(90_000.0, 90_000.0)), tmp_path / "out.png")
    assert read_image(tmp_path / "out.png").dpi == pytest.approx((90_000.0, 90_000.0), rel=1e-3)


# --- PAM headers --------------------------------------------------------------------------

PAM_OK = {"WIDTH": 2, "HEIGHT": 2, "DEPTH": 3, "MAXVAL": 255}


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"WIDTH": -5, "HEIGHT": -5}, "WIDTH '-5' is not a whole number"),
        ({"WIDTH": 0}, "zero size"),
        ({"WIDTH": "1_0"}, "WIDTH '1_0'"),
        ({"HEIGHT": "+2"}, "HEIGHT '\\+2'"),
        ({"WIDTH": "9" * 3000}, "is not a whole number"),
        ({"WIDTH": "9" * 5000}, "no ENDHDR line in its first 4096 bytes"),
        ({"WIDTH": 999_999_999, "HEIGHT": 999_999_999}, "over the limit"),
        ({"DEPTH": 0}, "DEPTH 0 is not supported"),
        ({"DEPTH": 5}, "DEPTH 5 is not supported"),
        ({"MAXVAL": 0}, "MAXVAL 0 is not supported"),
        ({"MAXVAL": 100}, "MAXVAL 100 is not supported"),
        ({"MAXVAL": 70000}, "MAXVAL 70000 is not supported"),
        ({"DEPTH": 4, "TUPLTYPE": "CMYK"}, "TUPLTYPE CMYK with DEPTH 4"),
        ({"TUPLTYPE": "GRAYSCALE"}, "TUPLTYPE GRAYSCALE with DEPTH 3"),
        ({"COLOUR": "red"}, "'COLOUR red' is not a PAM field"),
        ({"MAXVAL": None}, "lacks MAXVAL"),
    ],
)
def test_bad_pam_headers_are_refused_by_field(tmp_path, changes, match):
    header = {key: value for key, value in {**PAM_OK, **changes}.items() if value is not None}
    refused(made(tmp_path / "bad.pam", pam_bytes(header, bytes(12))), match)


def test_pam_structure_problems(tmp_path):
    refused(made(tmp_path / "no-end.pam", b"P7\nWIDTH 2\nHEIGHT 2\n" + bytes(5000)), "no ENDHDR")
    refused(made(tmp_path / "twice.pam", b"P7\nWIDTH 2\nWIDTH 3\nENDHDR\n"), "WIDTH twice")
    refused(made(tmp_path / "latin.pam", "P7\nWIDTH 2é\nENDHDR\n".encode("latin-1")), "not ASCII")
    one = pam_bytes(PAM_OK, bytes(12))
    refused(made(tmp_path / "two.pam", one + one), "more than one image")
    pixels = random_image(2, 2, 3)
    tagged = pam_bytes({**PAM_OK, "TUPLTYPE": "RGB", "# a comment": ""}, pixels.tobytes())
    np.testing.assert_array_equal(read_image(made(tmp_path / "good.pam", tagged)).pixels, pixels)


# --- frames -------------------------------------------------------------------------------


def frames(count: int = 3) -> list[Image.Image]:
    return [Image.fromarray(random_image(6, 5, 3, seed=seed)) for seed in range(count)]


@pytest.mark.parametrize(
    "name, kind",
    [("a.gif", "animated GIF"), ("a.png", "animated PNG"), ("a.webp", "animated WebP"), ("a.tif", "multi-page TIFF")],
)
def test_animations_and_multi_page_files_are_refused_not_cut_to_one_frame(tmp_path, name, kind):
    first, *rest = frames(3)
    first.save(tmp_path / name, save_all=True, append_images=rest, duration=40, loop=0)
    message = refused(tmp_path / name, f"{kind} with 3 frames")
    assert "still images only: extract the frames first" in message


def test_multi_page_tiffs_pillow_cannot_open_are_refused_too(tmp_path):
    path = tmp_path / "gray-alpha16.tif"
    with tifffile.TiffWriter(path) as tiff:
        for _ in range(2):  # 16-bit gray with alpha: Pillow cannot open it, tifffile reads it
            tiff.write(random_image(4, 4, 2, dtype=np.uint16), photometric="minisblack", extrasamples=["unassalpha"])
    refused(path, "multi-page TIFF with 2 frames")


def test_a_jpeg_with_a_multi_picture_preview_is_read_as_its_photo(tmp_path):
    photo, preview = Image.fromarray(random_image(8, 8, 3)), Image.fromarray(random_image(4, 4, 3, seed=1))
    photo.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[preview])
    assert Image.open(tmp_path / "camera.jpg").n_frames == 2
    assert read_image(tmp_path / "camera.jpg").pixels.shape == (8, 8, 3)


def test_still_gifs_single_frame_apngs_and_tiff_previews_are_read(tmp_path):
    first = frames(1)[0]
    first.convert("P").save(tmp_path / "still.gif")
    assert read_image(tmp_path / "still.gif").pixels.shape == (6, 5, 3)
    first.save(tmp_path / "one.png", save_all=True, append_images=[], duration=40)
    assert read_image(tmp_path / "one.png").pixels.shape == (6, 5, 3)
    preview = {254: (SHORT, [1])}  # NewSubfileType: a reduced-resolution copy of page 1
    pages = [(random_image(6, 5, 3), {}), (random_image(3, 2, 3), preview)]
    assert read_image(made(tmp_path / "preview.tif", tiff_bytes(pages))).pixels.shape == (6, 5, 3)


# --- channels -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "samples, extra, dtype",
    [
        (5, [0, 0], np.uint8),  # RGB + 2 unspecified
        (5, [0, 0], np.uint16),
        (4, [0], np.uint8),  # RGB + 1 unspecified: used to become RGB silently
        (5, [2, 0], np.uint8),  # RGBA + 1 more
        (3, [0, 0], np.uint8),  # gray + 2 unspecified
    ],
)
def test_tiffs_with_channels_srgan_would_drop_are_refused(tmp_path, samples, extra, dtype):
    photometric = 2 if samples - len(extra) == 3 else 1
    tags = {262: (SHORT, [photometric]), 338: (SHORT, extra)}
    path = made(tmp_path / "extra.tif", tiff_bytes([(random_image(4, 5, samples, dtype=dtype), tags)]))
    refused(path, f"TIFF has {samples} samples per pixel.*would lose")


def test_tiffs_with_one_alpha_channel_and_planar_tiffs_are_read_whole(tmp_path):
    rgba = random_image(4, 5, 4)
    path = made(tmp_path / "rgba.tif", tiff_bytes([(rgba, {338: (SHORT, [2])})]))
    np.testing.assert_array_equal(read_image(path).pixels, rgba)
    planar = random_image(3, 4, 6, dtype=np.uint16)  # three planes of 4×6
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif").pixels, np.moveaxis(planar, 0, -1))


# --- metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "profile, match",
    [(b"not a profile at all", "no ICC header"), (SRGB[:200], "it declares")],
    ids=["garbage", "cut short"],
)
def test_malformed_icc_profiles_are_refused(tmp_path, profile, match):
    chunk = (b"iCCP", b"icc\0\0" + zlib.compress(profile))
    refused(made(tmp_path / "icc.png", png_bytes(4, 4, [chunk])), f"ICC colour profile is malformed \\({match}")


def test_png_metadata_bombs_are_called_what_they_are(tmp_path):
    bomb = zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK + 1))
    for kind, prefix in ((b"zTXt", b"note\0\0"), (b"iCCP", b"icc\0\0"), (b"iTXt", b"note\0\1\0\0\0")):
        path = made(tmp_path / f"{kind.decode()}.png", png_bytes(4, 4, [(kind, prefix + bomb)]))
        message = refused(path, "decompression bomb")
        assert "corrupt" not in message
    many = [
        (b"zTXt", b"k%d\0\0" % index + zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK - 64))) for index in range(66)
    ]
    refused(made(tmp_path / "many.png", png_bytes(4, 4, many)), "decompression bomb")


@pytest.mark.parametrize("orientation", [9, 255, 65535])
def test_orientations_outside_one_to_eight_are_refused(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(random_image(4, 6, 3)).save(tmp_path / "turned.png", exif=exif.tobytes())
    refused(tmp_path / "turned.png", f"orientation is {orientation}, not one of 1-8")


def test_orientation_zero_means_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 0
    pixels = random_image(4, 6, 3)
    Image.fromarray(pixels).save(tmp_path / "zero.png", exif=exif.tobytes())
    picture = read_image(tmp_path / "zero.png")
    np.testing.assert_array_equal(picture.pixels, pixels)
    write_image(picture, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").getexif()[0x0112] == 1


@pytest.mark.parametrize(
    "exif",
    [
        b"XX\0*\0\0\0\x08",  # no TIFF byte order
        b"II*\0\x08\0\0\0\x01\0\x12\x01\x02\0\x04\0\0\0abc\0\0\0\0\0",  # orientation as text
    ],
    ids=["byte order", "orientation as text"],
)
def test_malformed_exif_is_refused_in_one_line(tmp_path, exif):
    refused(made(tmp_path / "exif.png", png_bytes(4, 4, [(b"eXIf", exif)])), "its EXIF metadata is malformed")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_exif_entries_pillow_cannot_parse_are_skipped_and_the_image_writes(tmp_path):
    garbage = b"MM\0*\0\0\0\x08\0\x05" + b"\xff" * 20  # claims five entries, holds garbage
    picture = read_image(made(tmp_path / "exif.png", png_bytes(4, 4, [(b"eXIf", garbage)])))
    assert picture.exif is None
    write_image(picture, tmp_path / "out.jpg")


# --- not images, not regular files --------------------------------------------------------


def test_pipes_and_devices_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    refused(tmp_path / "pipe.png", "is a named pipe, not an image file")
    refused(Path("/dev/zero"), "is a device, not an image file")


# --- writing ------------------------------------------------------------------------------


def test_outputs_on_devices_and_files_are_named_for_what_they_are(tmp_path):
    picture = Picture(random_image(4, 4, 3))
    with pytest.raises(ImageWriteError, match="^/dev/null: is a device, not a folder") as caught:
        write_image(picture, Path("/dev/null/out.png"))
    assert caught.value.setting is Setting.OUTPUT
    with pytest.raises(ImageWriteError, match="is a device, not an image file"):
        write_image(picture, Path("/dev/full"), image_format="png")
    assert Path("/dev/full").is_char_device()


@pytest.mark.parametrize(
    "code, advice, setting",
    [
        (errno.ENOSPC, "; free some space", None),
        (errno.EACCES, "", Setting.OUTPUT),
        (errno.EROFS, "", Setting.OUTPUT),
        (errno.ENAMETOOLONG, "", Setting.NAME_TEMPLATE),
    ],
)
def test_write_errors_say_what_happened_and_what_fixes_it(code, advice, setting):
    error = write_failure(Path("out/a.png"), OSError(code, os.strerror(code)))
    assert str(error) == f"out/a.png: cannot write the image: {os.strerror(code)}{advice}"
    assert error.setting is setting


def test_a_too_long_output_name_is_a_write_error(tmp_path):
    with pytest.raises(ImageWriteError, match="File name too long") as caught:
        write_image(Picture(random_image(4, 4, 3)), tmp_path / ("x" * 300 + ".png"))
    assert caught.value.setting is Setting.NAME_TEMPLATE


def test_sizes_a_format_cannot_hold_are_refused_before_encoding(tmp_path):
    wide = Picture(np.zeros((1, 16_384, 3), np.uint8))
    with pytest.raises(ImageWriteError, match="WEBP holds at most 16383 pixels a side") as caught:
        write_image(wide, tmp_path / "wide.webp")
    assert caught.value.suggestion == "png" and list(tmp_path.iterdir()) == []
    write_image(wide, tmp_path / "wide.png")


# --- structure loops and formats srgan does not read --------------------------------------


def tiff_with_next_ifd(pages: int, link_back_to: int) -> bytes:
    """A TIFF whose last page's "next IFD" points back at page `link_back_to` (0-based)."""
    data = bytearray(tiff_bytes([(random_image(4, 4, 3, seed=page), {}) for page in range(pages)]))
    offsets = [struct.unpack_from("<I", data, 4)[0]]
    for _ in range(pages - 1):
        entries = struct.unpack_from("<H", data, offsets[-1])[0]
        offsets.append(struct.unpack_from("<I", data, offsets[-1] + 2 + 12 * entries)[0])
    entries = struct.unpack_from("<H", data, offsets[-1])[0]
    struct.pack_into("<I", data, offsets[-1] + 2 + 12 * entries, offsets[link_back_to])
    return bytes(data)


def test_tiff_page_chains_that_loop_end(tmp_path):
    assert read_image(made(tmp_path / "self.tif", tiff_with_next_ifd(1, 0))).pixels.shape == (4, 4, 3)
    refused(made(tmp_path / "pair.tif", tiff_with_next_ifd(2, 0)), "multi-page TIFF with 2 frames")


@pytest.mark.parametrize("extension", [".eps", ".ico", ".pcx", ".tga"])
def test_formats_outside_the_documented_ones_are_not_decoded(tmp_path, extension):
    """Pillow would run Ghostscript for EPS and parse many rarer formats; srgan reads what it documents."""
    Image.fromarray(random_image(4, 4, 3)).save(tmp_path / f"other{extension}")
    refused(tmp_path / f"other{extension}", "not an image file that can be read")


def test_netpbm_inputs_are_read(tmp_path):
    pixels = random_image(4, 5, 3)
    Image.fromarray(pixels).save(tmp_path / "image.ppm")
    np.testing.assert_array_equal(read_image(tmp_path / "image.ppm").pixels, pixels)
