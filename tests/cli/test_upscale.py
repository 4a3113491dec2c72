from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from typer.testing import CliRunner

from srgan.engines import ModelFileError, Picture, create_upscaler, load_model, read_image, resize_pixels, write_image
from srgan.cli.app import app
from tests.helpers import random_image

runner = CliRunner()
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def srgan(*arguments: str | Path):
    return runner.invoke(app, [str(argument) for argument in arguments])


def save(path: Path, pixels: np.ndarray, **metadata) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(Picture(pixels, **metadata), path)
    return path


def files_in(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def photo(tmp_path) -> Path:
    return save(tmp_path / "in" / "photo.png", random_image(20, 26, 3))


def test_one_file_to_one_file_matches_the_core(tmp_path, tiny_model_file, photo):
    output = tmp_path / "out" / "big.png"
    result = srgan("upscale", photo, "-o", output, "-m", tiny_model_file)
    assert result.exit_code == 0, result.output
    expected = create_upscaler(load_model(tiny_model_file), "cpu").upscale(read_image(photo).pixels)
    np.testing.assert_array_equal(read_image(output).pixels, expected)
    assert "1 upscaled" in result.stdout


def test_output_goes_next_to_the_input_by_default(tiny_model_file, photo):
    assert srgan("upscale", photo, "-m", tiny_model_file).exit_code == 0
    assert (photo.parent / "photo_x4.png").is_file()


def test_folders_globs_and_recursive_mirroring(tmp_path, tiny_model_file):
    source = tmp_path / "in"
    for name in ["a.png", "b.jpg", "sub/c.webp", "sub/deeper/d.tif", ".hidden.png", "notes.txt"]:
        path = source / name
        if name.endswith(".txt"):
            path.write_text("not an image")
        else:
            save(path, random_image(8, 8, 3))
    flat = tmp_path / "flat"
    assert srgan("upscale", source, "-o", flat, "-m", tiny_model_file).exit_code == 0
    assert files_in(flat) == {"a_x4.png", "b_x4.jpg"}
    mirrored = tmp_path / "mirrored"
    assert srgan("upscale", source, "-r", "-o", mirrored, "-m", tiny_model_file, "--name", "{stem}").exit_code == 0
    assert files_in(mirrored) == {"a.png", "b.jpg", "sub/c.webp", "sub/deeper/d.tif"}
    globbed = tmp_path / "globbed"
    assert srgan("upscale", f"{source}/**/*.png", "-o", globbed, "-m", tiny_model_file).exit_code == 0
    assert files_in(globbed) == {"a_x4.png"}


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, tiny_model_file, photo):
    output = tmp_path / "out.png"
    output.write_bytes(b"keep me")
    result = srgan("upscale", photo, "-o", output, "-m", tiny_model_file)
    assert result.exit_code == 0 and "skipped" in result.stdout
    assert output.read_bytes() == b"keep me"
    assert srgan("upscale", photo, "-o", output, "-m", tiny_model_file, "--overwrite").exit_code == 0
    assert read_image(output).pixels.shape == (80, 104, 3)


@pytest.mark.parametrize("extra", [["-o", "{photo}"], ["--name", "{{stem}}"]], ids=["-o input", "--name {stem}"])
def test_an_input_is_never_overwritten(tiny_model_file, photo, extra):
    before = photo.read_bytes()
    arguments = [value.format(photo=photo) for value in extra]
    result = srgan("upscale", photo, *arguments, "-m", tiny_model_file, "--overwrite")
    assert result.exit_code == 1
    assert "would overwrite an input" in result.stderr
    assert photo.read_bytes() == before


def test_two_inputs_with_one_output_name_are_kept_apart(tmp_path, tiny_model_file):
    save(tmp_path / "in" / "same.png", random_image(6, 6, 3))
    save(tmp_path / "in" / "same.jpg", random_image(6, 6, 3))
    result = srgan("upscale", tmp_path / "in", "-o", tmp_path / "out", "--format", "png", "-m", tiny_model_file)
    assert result.exit_code == 1 and "already the output of" in result.stderr
    assert files_in(tmp_path / "out") == {"same_x4.png"}


def test_format_and_quality(tmp_path, tiny_model_file, photo):
    assert srgan("upscale", photo, "-o", tmp_path / "o", "-f", "jpeg", "-q", "30", "-m", tiny_model_file).exit_code == 0
    assert Image.open(tmp_path / "o" / "photo_x4.jpg").format == "JPEG"
    assert srgan("upscale", photo, "-o", tmp_path / "x.webp", "-m", tiny_model_file).exit_code == 0
    assert Image.open(tmp_path / "x.webp").format == "WEBP"


def test_scale_sets_the_output_size_and_the_name(tmp_path, tiny_model_file, photo):
    result = srgan("upscale", photo, "-o", tmp_path / "out", "-m", tiny_model_file, "--scale", "2.5")
    assert result.exit_code == 0, result.output
    model_output = create_upscaler(load_model(tiny_model_file), "cpu").upscale(read_image(photo).pixels)
    written = read_image(tmp_path / "out" / "photo_x2.5.png").pixels
    np.testing.assert_array_equal(written, resize_pixels(model_output, 50, 65))
    same = srgan("upscale", photo, "-o", tmp_path / "four", "-m", tiny_model_file, "-s", "4")
    assert same.exit_code == 0 and (tmp_path / "four" / "photo_x4.png").is_file()
    np.testing.assert_array_equal(read_image(tmp_path / "four" / "photo_x4.png").pixels, model_output)
    refused = srgan("upscale", photo, "-o", tmp_path / "none", "-m", tiny_model_file, "--scale", "0.5")
    assert refused.exit_code == 2 and "--scale" in refused.stderr and not (tmp_path / "none").exists()


def test_png_compression_trades_size_for_speed_and_keeps_pixels(tmp_path, tiny_model_file, photo):
    sizes = {}
    for level in ("0", "1", "9"):
        result = srgan(
            "upscale", photo, "-o", tmp_path / f"l{level}.png", "--png-compression", level, "-m", tiny_model_file
        )
        assert result.exit_code == 0, result.output
        sizes[level] = (tmp_path / f"l{level}.png").stat().st_size
    assert sizes["0"] > 1.2 * sizes["1"] and sizes["0"] > 1.2 * sizes["9"]
    for level in ("0", "9"):
        assert np.array_equal(read_image(tmp_path / "l1.png").pixels, read_image(tmp_path / f"l{level}.png").pixels)
    refused = srgan("upscale", photo, "-o", tmp_path / "bad.png", "--png-compression", "10", "-m", tiny_model_file)
    assert refused.exit_code == 2 and not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("pending_bytes", [1 << 30, 1])
def test_several_encoders_write_every_result_and_report_in_order(tmp_path, tiny_model_file, monkeypatch, pending_bytes):
    from srgan.cli import upscale as upscale_module

    monkeypatch.setattr(upscale_module, "writer_threads", lambda: 3)
    monkeypatch.setattr(upscale_module, "PENDING_BYTES", pending_bytes)
    names = [f"image{index}" for index in range(7)]
    for index, name in enumerate(names):
        save(tmp_path / "in" / f"{name}.png", random_image(12 + index, 15, 3, seed=index))
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    result = srgan("upscale", tmp_path / "in", "-o", tmp_path / "out", "-m", tiny_model_file, "--json")
    assert result.exit_code == 1  # the broken file
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = [Path(event["input"]).stem for event in events if event["event"] == "result" and event["status"] == "done"]
    assert done == names
    upscaler = create_upscaler(load_model(tiny_model_file))
    for name in names:
        expected = upscaler.upscale(read_image(tmp_path / "in" / f"{name}.png").pixels)
        assert np.array_equal(read_image(tmp_path / "out" / f"{name}_x4.png").pixels, expected)


def test_json_lines_describe_progress_and_results(tmp_path, tiny_model_file, photo):
    result = srgan(
        "upscale", photo, "-o", tmp_path / "o.png", "-m", tiny_model_file, "--json", "--tile", "16", "--overlap", "2"
    )
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[1] == "begin" and kinds[-2:] == ["result", "summary"]
    progress = [event for event in events if event["event"] == "progress"]
    assert len(progress) > 1 and progress[-1]["fraction"] == 1.0
    assert events[-2]["status"] == "done" and events[-2]["output"] == str(tmp_path / "o.png")


def test_tile_device_and_precision_options(tmp_path, tiny_model_file, photo):
    result = srgan(
        "upscale",
        photo,
        "-o",
        tmp_path / "o.png",
        "-m",
        tiny_model_file,
        "--tile",
        "24",
        "--overlap",
        "4",
        "--batch",
        "3",
        "--device",
        "cpu",
        "--precision",
        "bf16",
    )
    assert result.exit_code == 0, result.output
    assert "torch-cpu bf16" in result.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--tile", "24", "--overlap", "9"], "tile size"),
        (["--name", "fixed"], "no {stem}"),
        (["--format", "gif"], "unknown output format"),
    ],
)
def test_bad_option_combinations_exit_with_usage_errors(tmp_path, tiny_model_file, photo, arguments, message):
    result = srgan("upscale", photo, "-o", tmp_path / "out", "-m", tiny_model_file, *arguments)
    assert result.exit_code in (1, 2) and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_alpha_gray_sixteen_bit_and_metadata_survive(tmp_path, tiny_model_file):
    cases = {
        "rgba.png": random_image(9, 7, 4),
        "gray.png": random_image(9, 7, 1),
        "deep.png": random_image(9, 7, 3, dtype=np.uint16),
        "deep.tif": random_image(9, 7, 4, dtype=np.uint16),
    }
    exif = Image.Exif()
    exif[0x010F] = "camera"
    for name, pixels in cases.items():
        save(tmp_path / "in" / name, pixels, icc_profile=SRGB, exif=exif.tobytes())
    assert (
        srgan("upscale", tmp_path / "in", "-o", tmp_path / "out", "-m", tiny_model_file, "--name", "{stem}").exit_code
        == 0
    )
    for name, pixels in cases.items():
        result = read_image(tmp_path / "out" / name)
        assert result.pixels.shape == (36, 28, pixels.shape[2]) and result.pixels.dtype == pixels.dtype
        assert result.icc_profile == SRGB
    assert Image.open(tmp_path / "out" / "rgba.png").getexif()[0x010F] == "camera"


def write_corrupt_inputs(folder: Path) -> dict[str, str]:
    """Bad inputs and the message each must produce."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = save(folder / "whole.jpg", random_image(30, 30, 3))
    (folder / "truncated.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    (folder / "text.png").write_text("hello")
    (folder / "empty.png").write_bytes(b"")
    save(folder / "huge.png", random_image(40, 40, 3))
    return {
        "truncated.jpg": "truncated or corrupt",
        "text.png": "not an image file",
        "empty.png": "empty",
        "huge.png": "--max-pixels",
        "missing.png": "file not found",
    }


def test_bad_inputs_fail_alone_and_leave_no_output(tmp_path, tiny_model_file):
    folder = tmp_path / "in"
    expected = write_corrupt_inputs(folder)
    save(folder / "good.png", random_image(10, 10, 3))
    inputs = [folder / name for name in [*expected, "good.png"]]
    out = tmp_path / "out"
    result = srgan("upscale", *inputs, "-o", out, "-m", tiny_model_file, "--max-pixels", "1000")
    assert result.exit_code == 1
    for name, message in expected.items():
        lines = [line for line in result.stderr.splitlines() if name in line]
        assert lines and message in lines[0], (name, result.stderr)
    assert "1 upscaled" in result.stdout and "5 failed" in result.stdout
    assert files_in(out) == {"good_x4.png"}


@pytest.mark.parametrize("name", ["truncated.jpg", "text.png", "empty.png", "huge.png", "missing.png"])
def test_each_bad_input_alone_exits_non_zero_with_one_line(tmp_path, tiny_model_file, name):
    message = write_corrupt_inputs(tmp_path / "in")[name]
    out = tmp_path / "out"
    result = srgan("upscale", tmp_path / "in" / name, "-o", out, "-m", tiny_model_file, "--max-pixels", "1000")
    assert result.exit_code == 1
    assert message in result.stderr and str(tmp_path / "in" / name) in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() or files_in(out) == set()


def test_unwritable_output_folder(tmp_path, tiny_model_file, photo):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    result = srgan("upscale", photo, "-o", blocker / "out", "-m", tiny_model_file)
    assert result.exit_code == 1 and f"{blocker} is a file, not a folder" in result.stderr
    assert blocker.read_text() == "a file where a folder should be"


@pytest.mark.parametrize(
    "model_kind, message",
    [
        ("missing", "model file not found"),
        ("foreign", "not an SRGAN generator"),
        ("truncated", "truncated"),
    ],
)
def test_incompatible_models_stop_before_any_work(tmp_path, photo, model_kind, message):
    model = tmp_path / f"{model_kind}.pth"
    if model_kind == "foreign":
        torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3)}, model)
    elif model_kind == "truncated":
        model.write_bytes(b"PK\x03\x04 cut short")
    result = srgan("upscale", photo, "-o", tmp_path / "out", "-m", model)
    assert result.exit_code == 1
    assert message in result.stderr and str(model) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_without_a_default_model_the_message_says_what_to_do(photo, monkeypatch, tmp_path):
    from srgan.engines import model_folders

    monkeypatch.setattr(model_folders, "BUNDLED_DIR", tmp_path / "no-models-here")
    result = srgan("upscale", photo)
    assert result.exit_code == 1
    assert "no default model is installed" in result.stderr and "--model" in result.stderr


def test_debug_shows_the_traceback(tmp_path, photo):
    result = srgan("--debug", "upscale", photo, "-m", tmp_path / "missing.safetensors")
    assert result.exit_code != 0 and isinstance(result.exception, ModelFileError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_cpu_machine_says_to_use_the_cpu(tmp_path, tiny_model_file, photo):
    result = srgan("upscale", photo, "-m", tiny_model_file, "--device", "cuda")
    assert result.exit_code == 1 and "--device cpu" in result.stderr


def test_json_mode_reports_fatal_errors_as_json(tmp_path, photo):
    result = srgan("upscale", photo, "-m", tmp_path / "missing.safetensors", "--json")
    assert result.exit_code == 1
    event = json.loads(result.stdout.strip().splitlines()[-1])
    assert event["event"] == "error" and "model file not found" in event["message"]
    assert event["setting"] == "model" and event["problem"].endswith("model file not found; check the path")


def test_the_cli_words_the_cores_advice_as_flags(tmp_path, tiny_model_file, photo):
    big = srgan("upscale", photo, "-o", tmp_path / "a.png", "-m", tiny_model_file, "--max-pixels", "10")
    assert big.exit_code == 1 and "raise the limit with --max-pixels" in big.stderr
    jpeg = save(tmp_path / "in" / "clear.png", np.zeros((6, 6, 4), np.uint8))
    result = srgan("upscale", jpeg, "-o", tmp_path / "b.jpg", "-m", tiny_model_file)
    assert result.exit_code == 1 and "use --format png" in result.stderr
    cpu_fp16 = ("--device", "cpu", "--precision", "fp16")
    fp16 = srgan("upscale", photo, "-o", tmp_path / "c.png", "-m", tiny_model_file, *cpu_fp16)
    assert fp16.exit_code == 1 and "use --precision fp32" in fp16.stderr


def test_one_output_file_for_several_inputs_is_refused(tmp_path, tiny_model_file, photo):
    other = save(tmp_path / "in" / "other.png", random_image(6, 6, 3))
    result = srgan("upscale", photo, other, "-o", tmp_path / "big.png", "-m", tiny_model_file)
    assert result.exit_code == 2 and "give a folder" in result.stderr
    assert not (tmp_path / "big.png").exists()


def test_a_trailing_separator_makes_the_output_a_folder_whatever_its_suffix(tmp_path, tiny_model_file, photo):
    result = srgan("upscale", photo, "-o", f"{tmp_path / 'out.tif'}/", "-m", tiny_model_file)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out.tif"
    assert folder.is_dir() and [path.name for path in folder.iterdir()] == [f"{Path(photo).stem}_x4.png"]
    single = srgan("upscale", photo, "-o", tmp_path / "one.tif", "-m", tiny_model_file)  # without it: one file
    assert single.exit_code == 0 and (tmp_path / "one.tif").is_file()
