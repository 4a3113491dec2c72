"""`srgan upscale` against hostile files, names, templates and output paths."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest
import torch
from PIL import PngImagePlugin

from srgan.cli import upscale as upscale_module
from srgan.engines import pipeline as pipeline_module
from srgan.engines import InputFile, OutputPlan, output_path
from srgan.engines import Backend, ImageWriteError, read_image
from tests.cli.test_upscale import files_in, save, srgan
from tests.engines.forge import RATIONAL, SHORT, pam_bytes, png_bytes, tiff_bytes
from tests.helpers import random_image


def hostile_batch(folder: Path) -> dict[str, str | None]:
    """A batch with bad files between good ones: name -> words of its failure (None: upscaled)."""
    folder.mkdir(parents=True, exist_ok=True)
    save(folder / "a.png", random_image(8, 8, 3))
    unknown = {282: (RATIONAL, [(0, 0)]), 283: (RATIONAL, [(0, 0)]), 296: (SHORT, [2])}
    (folder / "b.tif").write_bytes(tiff_bytes([(random_image(6, 6, 3), unknown)]))  # resolution 0/0
    (folder / "c.pam").write_bytes(pam_bytes({"WIDTH": -4, "HEIGHT": -4, "DEPTH": 3, "MAXVAL": 255}, bytes(48)))
    (folder / "d.tif").write_bytes(tiff_bytes([(random_image(6, 6, 5), {338: (SHORT, [0, 0])})]))
    bomb = (b"zTXt", b"note\0\0" + zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK + 1)))
    (folder / "e.png").write_bytes(png_bytes(6, 6, [bomb]))
    save(folder / "f.png", random_image(8, 8, 3))
    return {
        "a.png": None,
        "b.tif": None,
        "c.pam": "WIDTH '-4' is not a whole number",
        "d.tif": "TIFF has 5 samples per pixel",
        "e.png": "decompression bomb",
        "f.png": None,
    }


def failure_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("✗")]


def test_bad_files_in_the_middle_fail_alone_and_the_batch_goes_on(tmp_path, tiny_model_file):
    expected = hostile_batch(tmp_path / "in")
    result = srgan("upscale", tmp_path / "in", "-o", tmp_path / "out", "-f", "png", "-m", tiny_model_file)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert files_in(tmp_path / "out") == {f"{Path(name).stem}_x4.png" for name, words in expected.items() if not words}
    failures = failure_lines(result)
    assert len(failures) == 3
    for name, words in expected.items():
        if words:
            assert any(f"in/{name}: " in line and words in line for line in failures), (name, failures)
    assert "3 upscaled" in result.stdout and "3 failed" in result.stdout


class FaultyBackend(Backend):
    """A backend that breaks its contract: a raw RuntimeError (not BackendError) on tiles of one width.

    Real backends map their runtime's errors in `Backend.infer`; overriding `infer` itself stands
    for any code on the path that raises what nobody planned for.
    """

    def __init__(self, inner: Backend, failing_width: int) -> None:
        self.inner, self.failing_width = inner, failing_width
        self.name, self.scale, self.device = inner.name, inner.scale, inner.device

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[-1] == self.failing_width:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.infer(batch)

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        return self.inner.infer(batch)


@pytest.fixture
def faulty_engine(monkeypatch):
    create = upscale_module.create_upscaler

    def create_faulty(*arguments, **options):
        upscaler = create(*arguments, **options)
        upscaler.backend = FaultyBackend(upscaler.backend, failing_width=7)
        return upscaler

    monkeypatch.setattr(upscale_module, "create_upscaler", create_faulty)


def faulty_batch(folder: Path) -> None:
    for name, width in (("a.png", 8), ("b.png", 7), ("c.png", 9)):
        save(folder / name, random_image(6, width, 3))


@pytest.mark.parametrize("debug", [False, True])
def test_an_exception_of_any_type_is_one_files_failure(tmp_path, tiny_model_file, faulty_engine, debug):
    faulty_batch(tmp_path / "in")
    arguments = ["upscale", tmp_path / "in", "-o", tmp_path / "out", "-m", tiny_model_file]
    result = srgan(*(["--debug"] if debug else []), *arguments)
    assert result.exit_code == 1
    assert files_in(tmp_path / "out") == {"a_x4.png", "c_x4.png"}
    line = f"{tmp_path / 'in' / 'b.png'}: failed unexpectedly (RuntimeError: CUDA error: an illegal memory access"
    assert line in result.stderr
    assert ("Traceback" in result.stderr) == debug
    if not debug:
        assert len(failure_lines(result)) == 1 and "--debug" in result.stderr


def test_a_failure_while_writing_is_one_files_failure(tmp_path, tiny_model_file, monkeypatch):
    write = pipeline_module.write_image

    def write_or_fail(picture, path, *arguments):
        if path.name == "b_x4.png":
            raise KeyError("encoder state")  # an encoder bug, not one of srgan's errors
        write(picture, path, *arguments)

    monkeypatch.setattr(pipeline_module, "write_image", write_or_fail)
    faulty_batch(tmp_path / "in")
    result = srgan("upscale", tmp_path / "in", "-o", tmp_path / "out", "-m", tiny_model_file, "--json")
    assert result.exit_code == 1
    events = [event for event in map(json.loads, result.stdout.splitlines()) if event["event"] == "result"]
    results = {Path(event["input"]).name: event for event in events}
    assert results["a.png"]["status"] == results["c.png"]["status"] == "done"
    assert results["b.png"]["status"] == "failed" and "KeyError" in results["b.png"]["detail"]


# --- names that would drive the terminal --------------------------------------------------

HOSTILE_NAMES = {
    "colour": "red\x1b[31mtext.png",
    "title": "title\x1b]0;owned\x07.png",
    "clear": "clear\x1b[2J\x1b[H.png",
    "bidi": "photo\u202egnp.png",
    "not utf-8": os.fsdecode(b"latin\xe9.png"),
}


@pytest.mark.parametrize("broken", [False, True], ids=["upscaled", "failed"])
def test_control_characters_in_names_never_reach_the_terminal_raw(tmp_path, tiny_model_file, broken):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in HOSTILE_NAMES.values():
        if broken:
            (folder / name).write_bytes(b"not an image")
        else:
            save(folder / name, random_image(6, 6, 3))
    result = srgan("upscale", folder, "-o", tmp_path / "out", "-m", tiny_model_file)
    assert result.exit_code == (1 if broken else 0), result.output
    printed = result.stdout + result.stderr
    for raw in ("\x1b", "\x07", "\u202e", "\udce9"):
        assert raw not in printed
    for shown in ("red\\x1b[31mtext.png", "title\\x1b]0;owned\\x07.png", "photo\\u202egnp.png", "latin\\xe9.png"):
        assert shown in printed


def test_json_keeps_hostile_names_exact(tmp_path, tiny_model_file):
    folder = tmp_path / "in"
    for name in HOSTILE_NAMES.values():
        save(folder / name, random_image(6, 6, 3))
    result = srgan("upscale", folder, "-o", tmp_path / "out", "-m", tiny_model_file, "--json")
    assert result.exit_code == 0
    inputs = {Path(event["input"]).name for event in map(json.loads, result.stdout.splitlines()) if "input" in event}
    assert inputs == set(HOSTILE_NAMES.values())


def test_fatal_errors_naming_a_hostile_path_are_escaped_too(tmp_path):
    model = tmp_path / "model\x1b[2J.safetensors"
    result = srgan("upscale", tmp_path / "x.png", "-m", model)
    assert result.exit_code == 1 and "\x1b" not in result.stderr and "model\\x1b[2J" in result.stderr


# --- output paths that are not folders ----------------------------------------------------


@pytest.fixture
def photo(tmp_path) -> Path:
    return save(tmp_path / "in" / "photo.png", random_image(6, 6, 3))


@pytest.mark.parametrize("output", ["/dev/full", "/dev/null", "notes.txt", "notes.txt/sub"])
def test_outputs_that_cannot_be_folders_are_described_before_any_work(tmp_path, photo, output):
    (tmp_path / "notes.txt").write_text("keep me")
    target = Path(output) if output.startswith("/") else tmp_path / output
    missing_model = tmp_path / "never-loaded.safetensors"
    result = srgan("upscale", photo, "-o", target, "-m", missing_model)
    assert result.exit_code == 1, result.output
    kind = "device" if output.startswith("/dev") else "file"
    blocker = target if "sub" not in output else target.parent
    assert f"{blocker} is a {kind}, not a folder" in result.stderr or f"{target}: is a {kind}, not a folder" in (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "File exists" not in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# --- name templates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, words",
    [
        ("{stem}{x}", "'{x}' is not a name field"),
        ("{stem}{0}", "'{0}' is not a name field"),
        ("{stem}{}", "'{}' is not a name field"),
        ("{stem.upper}", "'{stem.upper}' is not a name field"),
        ("{stem[0]}", "'{stem[0]}' is not a name field"),
        ("{stem!r}", "'{stem!r}' is not a name field"),
        ("{stem:{scale}}", "'{stem:{scale}}' is not a name field"),
        ("{stem}{", "Single '{'"),
        ("{stem}}", "Single '}'"),
        ("{stem}_{scale:d}", "Unknown format code 'd'"),
        ("{stem:>99999999999999999999}", "a file name holds at most 255 bytes"),
        ("{stem}_{scale:>999999999}", "pads or cuts to 999999999 characters"),
        ("{stem:.9999}", "pads or cuts to 9999 characters"),
        ("{stem}" + "x" * 300, "names would be longer than a file name may be"),
        ("{stem:.0}", "every output would get the same name"),
        ("fixed", "has no {stem}"),
        ("../{stem}", "path separator"),
        ("sub/{stem}", "path separator"),
        ("..\\{stem}", "path separator"),
    ],
)
def test_bad_name_templates_are_one_usage_error_before_any_work(tmp_path, tiny_model_file, photo, template, words):
    result = srgan("upscale", photo, "-o", tmp_path / "out", "--name", template, "-m", tiny_model_file)
    assert result.exit_code == 2, result.output
    assert words in result.stderr and "--name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / photo.stem).exists()


@pytest.mark.parametrize(
    "template, name",
    [("{{{stem}}}", "{photo}.png"), ("{scale:>3}_{stem}", "  4_photo.png"), ("{stem}..{scale}", "photo..4.png")],
)
def test_good_name_templates_name_the_outputs(tmp_path, tiny_model_file, photo, template, name):
    result = srgan("upscale", photo, "-o", tmp_path / "out", "--name", template, "-m", tiny_model_file)
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "out") == {name}


def test_an_output_path_never_leaves_its_folder(tmp_path):
    item = InputFile(tmp_path / "in" / "photo.png")
    with pytest.raises(ImageWriteError, match="leads outside"):
        # what the template check stops first
        output_path(item, OutputPlan(tmp_path / "out", False, "../{stem}", "4", None))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(elsewhere)
    mirrored = InputFile(tmp_path / "in" / "sub" / "photo.png", root=tmp_path / "in")
    with pytest.raises(ImageWriteError, match="leads outside"):
        output_path(mirrored, OutputPlan(tmp_path / "out", False, "{stem}", "4", None))


def test_a_linked_subfolder_that_leads_out_fails_that_file_only(tmp_path, tiny_model_file):
    save(tmp_path / "in" / "top.png", random_image(6, 6, 3))
    save(tmp_path / "in" / "sub" / "deep.png", random_image(6, 6, 3))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    result = srgan("upscale", tmp_path / "in", "-r", "-o", tmp_path / "out", "-m", tiny_model_file)
    assert result.exit_code == 1 and "leads outside" in result.stderr
    assert (tmp_path / "out" / "top_x4.png").is_file() and list((tmp_path / "elsewhere").iterdir()) == []


def test_hostile_outputs_keep_inputs_and_leave_nothing_partial(tmp_path, tiny_model_file):
    expected = hostile_batch(tmp_path / "in")
    before = {name: (tmp_path / "in" / name).read_bytes() for name in expected}
    srgan("upscale", tmp_path / "in", "-o", tmp_path / "out", "-f", "png", "-m", tiny_model_file)
    assert {name: (tmp_path / "in" / name).read_bytes() for name in expected} == before
    assert not any(".partial" in name for name in files_in(tmp_path / "out"))
    assert read_image(tmp_path / "out" / "b_x4.png").pixels.shape == (24, 24, 3)


def test_names_too_long_for_the_file_system_fail_alone(tmp_path, tiny_model_file):
    folder = tmp_path / "in"
    save(folder / "ok.png", random_image(6, 6, 3))
    save(folder / ("y" * 250 + ".png"), random_image(6, 6, 3))  # fits; its output name (+ "_x4") does not
    (tmp_path / "out").mkdir()
    too_long_input = folder / ("z" * 300 + ".png")
    result = srgan("upscale", folder, too_long_input, "-o", tmp_path / "out", "-m", tiny_model_file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{too_long_input}: cannot be read (File name too long)" in result.stderr
    assert "its output name cannot be used (File name too long); change --name" in result.stderr
    assert files_in(tmp_path / "out") == {"ok_x4.png"}
    kept = srgan("upscale", folder, "-o", tmp_path / "kept", "--name", "{stem}", "-m", tiny_model_file)
    assert kept.exit_code == 0, kept.output  # a 254-byte name is written; its temporary name is shortened
    assert files_in(tmp_path / "kept") == {"ok.png", "y" * 250 + ".png"}
    long_output = srgan("upscale", folder / "ok.png", "-o", tmp_path / ("q" * 300), "-m", tiny_model_file)
    assert long_output.exit_code == 2 and "File name too long" in long_output.stderr
