from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from srgan.engines import (
    ImageReadError,
    ImageWriteError,
    Picture,
    Setting,
    format_for,
    read_image,
    resize_pixels,
    scaled_size,
    write_image,
)
from tests.helpers import random_image

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(orientation: int = 1, make: str = "srgan-test") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0112] = orientation
    return exif.tobytes()


def no_leftovers(folder: Path) -> bool:
    return not any(".partial" in path.name for path in folder.iterdir())


@pytest.mark.parametrize(
    "channels, extension",
    [
        (1, ".png"),
        (2, ".png"),
        (3, ".png"),
        (4, ".png"),
        (1, ".tif"),
        (3, ".tif"),
        (4, ".tif"),
        (3, ".bmp"),
        (4, ".webp"),
        (3, ".webp"),
        (2, ".pam"),
        (4, ".pam"),
    ],
)
def test_lossless_round_trips_keep_pixels_and_layout(tmp_path, channels, extension):
    pixels = random_image(13, 17, channels)
    path = tmp_path / f"image{extension}"
    write_image(Picture(pixels), path, quality=100)
    read = read_image(path).pixels
    assert read.dtype == np.uint8
    assert read.shape == (13, 17, max(channels, 3) if extension == ".webp" else channels)
    if extension != ".webp" or channels >= 3:
        np.testing.assert_array_equal(read, pixels)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("extension", [".png", ".tif", ".pam"])
def test_sixteen_bit_round_trips(tmp_path, channels, extension):
    pixels = random_image(11, 9, channels, dtype=np.uint16)
    path = tmp_path / f"deep{extension}"
    write_image(Picture(pixels), path)
    read = read_image(path).pixels
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, pixels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_levels_1_to_8_match_runs_and_9_searches_for_repeats(tmp_path, dtype):
    # Noise repeated every 40 pixels: only a search reaching 40 pixels back finds the repeats.
    pixels = np.tile(random_image(48, 40, 3, dtype=dtype, seed=4), (1, 8, 1))
    sizes = {}
    for level in (1, 6, 8, 9):
        write_image(Picture(pixels), tmp_path / f"{level}.png", png_compression=level)
        sizes[level] = (tmp_path / f"{level}.png").stat().st_size
        assert np.array_equal(read_image(tmp_path / f"{level}.png").pixels, pixels)
    assert sizes[1] == sizes[6] == sizes[8]  # run-length matching: the level changes nothing
    assert sizes[9] < 0.5 * sizes[6]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_compression_level_changes_size_not_pixels(tmp_path, dtype):
    pixels = np.repeat(np.linspace(0, np.iinfo(dtype).max, 96, dtype=dtype)[None, :, None], 64, axis=0)
    pixels = np.repeat(pixels, 3, axis=2)
    pixels[::7] = random_image(10, 96, 3, dtype=dtype)[0]
    write_image(Picture(pixels), tmp_path / "fast.png", png_compression=0)
    write_image(Picture(pixels), tmp_path / "small.png", png_compression=9)
    assert (tmp_path / "fast.png").stat().st_size > (tmp_path / "small.png").stat().st_size
    for name in ("fast.png", "small.png"):
        assert np.array_equal(read_image(tmp_path / name).pixels, pixels)
    with pytest.raises(ValueError, match="0-9"):
        write_image(Picture(pixels), tmp_path / "bad.png", png_compression=10)
    assert not (tmp_path / "bad.png").exists()


def test_sixteen_bit_files_from_other_writers_are_read_at_full_depth(tmp_path):
    pixels = random_image(8, 6, 3, dtype=np.uint16)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, pixels, photometric="rgb")
    np.testing.assert_array_equal(read_image(path).pixels, pixels)
    gray = tmp_path / "gray16.png"
    Image.fromarray(pixels[:, :, 0]).save(gray)  # Pillow writes I;16 PNGs itself
    np.testing.assert_array_equal(read_image(gray).pixels[:, :, 0], pixels[:, :, 0])


def test_sixteen_bit_to_eight_bit_formats_rounds(tmp_path):
    pixels = np.array([[[0, 257, 65535]]], dtype=np.uint16)
    path = tmp_path / "eight.bmp"
    write_image(Picture(pixels), path)
    np.testing.assert_array_equal(read_image(path).pixels, [[[0, 1, 255]]])


def test_palette_images_become_rgb_or_rgba(tmp_path):
    rgb = Image.fromarray(random_image(10, 10, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rgb.save(tmp_path / "palette.png")
    read = read_image(tmp_path / "palette.png").pixels
    np.testing.assert_array_equal(read, np.asarray(rgb.convert("RGB")))
    rgb.info["transparency"] = 0
    rgb.save(tmp_path / "transparent.png", transparency=0)
    read = read_image(tmp_path / "transparent.png").pixels
    assert read.shape[2] == 4 and 0 in read[:, :, 3]


def test_bilevel_images_become_gray(tmp_path):
    Image.fromarray(random_image(8, 8, 1)[:, :, 0] > 127).save(tmp_path / "bits.png")
    read = read_image(tmp_path / "bits.png").pixels
    assert read.shape == (8, 8, 1) and set(np.unique(read)) <= {0, 255}


@pytest.mark.parametrize(
    "extension, depth", [(".png", 8), (".jpg", 8), (".webp", 8), (".tif", 8), (".png", 16), (".tif", 16)]
)
def test_icc_profile_and_exif_are_carried(tmp_path, extension, depth):
    dtype = np.uint8 if depth == 8 else np.uint16
    picture = Picture(random_image(12, 10, 3, dtype=dtype), icc_profile=SRGB, exif=exif_bytes())
    path = tmp_path / f"meta{extension}"
    write_image(picture, path)
    read = read_image(path)
    assert read.icc_profile == SRGB
    if not (extension == ".tif" and depth == 16):  # 16-bit TIFFs are written without EXIF
        assert Image.open(path).getexif().get(0x010F) == "srgan-test"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    pixels = random_image(6, 9, 3)
    path = tmp_path / "oriented.png"
    Image.fromarray(pixels).save(path, exif=exif_bytes(orientation))
    read = read_image(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(read.pixels, expected)
    assert Image.open(path).getexif().get(0x0112) == orientation
    written = tmp_path / "out.png"
    write_image(read, written)
    assert Image.open(written).getexif().get(0x0112, 1) == 1, "pixels are upright, so the tag says so"


def test_orientation_applies_to_sixteen_bit_files(tmp_path):
    pixels = random_image(4, 7, 3, dtype=np.uint16)
    path = tmp_path / "deep.png"
    write_image(Picture(pixels, exif=exif_bytes(6)), path)
    np.testing.assert_array_equal(read_image(path).pixels, np.rot90(pixels, -1))


def test_tiff_layout_tags_are_not_carried_as_exif(tmp_path):
    Image.fromarray(random_image(5, 5, 3)).save(tmp_path / "in.tif")
    exif = Image.Exif()
    exif.load(read_image(tmp_path / "in.tif").exif or b"")
    assert 256 not in exif and 273 not in exif


def test_jpeg_quality_and_gray(tmp_path):
    pixels = random_image(64, 64, 3)
    write_image(Picture(pixels), tmp_path / "low.jpg", quality=20)
    write_image(Picture(pixels), tmp_path / "high.jpg", quality=95)
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpg").stat().st_size
    write_image(Picture(random_image(8, 8, 1)), tmp_path / "gray.jpg")
    assert read_image(tmp_path / "gray.jpg").pixels.shape == (8, 8, 1)


def test_jpeg_refuses_transparency_but_drops_opaque_alpha(tmp_path):
    pixels = random_image(8, 8, 4)
    with pytest.raises(ImageWriteError, match="transparency"):
        write_image(Picture(pixels), tmp_path / "alpha.jpg")
    assert list(tmp_path.iterdir()) == []
    pixels[:, :, 3] = 255
    write_image(Picture(pixels), tmp_path / "opaque.jpg")
    assert read_image(tmp_path / "opaque.jpg").pixels.shape == (8, 8, 3)


def test_formats_come_from_the_extension_or_the_request():
    assert format_for(Path("a.JPG")) == "jpeg"
    assert format_for(Path("a.tiff")) == "tiff"
    assert format_for(Path("a.png"), "webp") == "webp"
    assert format_for(Path("a.png"), "jpg") == "jpeg"
    with pytest.raises(ImageWriteError, match="cannot tell the output format"):
        format_for(Path("a.xyz"))
    with pytest.raises(ImageWriteError, match="unknown output format"):
        format_for(Path("a.png"), "gif")


def test_explicit_format_wins_over_the_extension(tmp_path):
    write_image(Picture(random_image(4, 4, 3)), tmp_path / "named.png", image_format="jpeg")
    assert Image.open(tmp_path / "named.png").format == "JPEG"


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_truncated_images_are_reported(tmp_path, extension):
    whole = tmp_path / f"whole{extension}"
    Image.fromarray(random_image(64, 64, 3)).save(whole)
    cut = write_bytes(tmp_path / f"cut{extension}", whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt") as error:
        read_image(cut)
    assert str(cut) in str(error.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.png", None, "file not found"),
        ("notes.png", b"these are not pixels", "not an image file"),
        ("empty.png", b"", "empty"),
    ],
)
def test_unreadable_inputs_are_reported(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        read_image(path)


def test_folders_are_not_images(tmp_path):
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


def test_pixel_limit_guards_against_decompression_bombs(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(random_image(20, 30, 3)).save(path)
    with pytest.raises(ImageReadError, match="over the limit of 599") as raised:
        read_image(path, max_pixels=599)
    assert raised.value.setting is Setting.MAX_PIXELS
    assert read_image(path, max_pixels=600).pixels.shape == (20, 30, 3)
    assert read_image(path, max_pixels=0).pixels.shape == (20, 30, 3)


def test_unwritable_destinations_leave_nothing_behind(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageWriteError, match="file: is a file, not a folder"):
        write_image(Picture(random_image(4, 4, 3)), blocker / "out.png")
    with pytest.raises(ImageWriteError, match="cannot be made: .*file is a file, not a folder"):
        write_image(Picture(random_image(4, 4, 3)), blocker / "deeper" / "out.png")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(ImageWriteError, match="taken.png: is a folder, not an image file"):
        write_image(Picture(random_image(4, 4, 3)), tmp_path / "taken.png")
    assert no_leftovers(tmp_path)


def test_written_files_get_normal_permissions(tmp_path):
    write_image(Picture(random_image(4, 4, 3)), tmp_path / "out.png")
    assert (tmp_path / "out.png").stat().st_mode & 0o044 == 0o044


def test_pam_header_and_truncation(tmp_path):
    path = tmp_path / "image.pam"
    write_image(Picture(random_image(3, 5, 4, dtype=np.uint16)), path)
    assert path.read_bytes().startswith(b"P7\nWIDTH 5\nHEIGHT 3\nDEPTH 4\nMAXVAL 65535\nTUPLTYPE RGB_ALPHA\nENDHDR\n")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ImageReadError, match="truncated PAM"):
        read_image(path)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 4])
def test_resizing_keeps_depth_layout_and_smooth_content(dtype, channels):
    peak = np.iinfo(dtype).max
    rows, columns = np.mgrid[0:64, 0:96]
    ramp = (rows + columns) / (64 + 96 - 2) * peak  # a smooth ramp survives resampling
    pixels = np.repeat(np.rint(ramp)[:, :, None], channels, axis=2).astype(dtype)
    pixels[:, :, -1] = peak // 3  # a constant channel stays constant
    half = resize_pixels(pixels, 32, 48)
    assert half.shape == (32, 48, channels) and half.dtype == dtype
    expected = (2 * np.mgrid[0:32, 0:48].sum(axis=0) + 1) / (64 + 96 - 2) * peak  # centres of 2×2 blocks
    if channels > 1:
        assert np.abs(half[:, :, 0].astype(float) - expected)[2:-2, 2:-2].max() <= peak / 255
    assert np.all(half[:, :, -1] == peak // 3)
    assert resize_pixels(pixels, 64, 96) is pixels


def test_scaled_sizes_round_and_never_vanish():
    assert scaled_size(20, 26, 4) == (80, 104)
    assert scaled_size(3, 5, 2.5) == (8, 12)  # 7.5 rounds to even, 12.5 too
    assert scaled_size(1, 1, 0.1) == (1, 1)


def test_writing_at_another_size_resamples_first(tmp_path):
    write_image(Picture(random_image(40, 60, 3)), tmp_path / "small.png", size=(20, 30))
    assert read_image(tmp_path / "small.png").pixels.shape == (20, 30, 3)
