"""The per-file pipeline and output planning in the core."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from srgan.engines import (
    FilePipeline,
    FileStatus,
    FileTask,
    ImageWriteError,
    InputFile,
    OutputOptions,
    OutputPlan,
    Picture,
    PipelineSettings,
    Stage,
    create_upscaler,
    decode_image,
    encode_image,
    iter_inputs,
    load_model,
    plan_jobs,
    read_image,
    survey_inputs,
    upscale_file,
    write_image,
)
from tests.helpers import random_image


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp", "tiff", "bmp", "pam"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_bytes_functions_match_the_file_functions(tmp_path, image_format, dtype):
    picture = Picture(random_image(9, 11, 3, dtype=dtype), dpi=(300.0, 300.0))
    path = tmp_path / f"image.{image_format}"
    write_image(picture, path, image_format)
    encoded = encode_image(picture, image_format)
    assert encoded == path.read_bytes()
    np.testing.assert_array_equal(decode_image(encoded).pixels, read_image(path).pixels)


def test_decode_image_names_the_image_in_its_errors():
    with pytest.raises(Exception, match="s3://bucket/x.png: not an image"):
        decode_image(b"hello", name="s3://bucket/x.png")


def test_output_options_refuse_what_cannot_work():
    with pytest.raises(ImageWriteError, match="no {stem}") as caught:
        OutputOptions(name_template="fixed")
    assert caught.value.setting is not None and "--" not in str(caught.value)
    with pytest.raises(ImageWriteError, match="unknown output format"):
        OutputOptions(image_format="gif")
    assert OutputOptions(image_format="JPG").image_format == "jpeg"
    assert OutputOptions(name_template="{stem:>12}_x{scale}").name_template == "{stem:>12}_x{scale}"


@pytest.fixture
def upscaler(tiny_model_file):
    return create_upscaler(load_model(tiny_model_file), "cpu")


def test_upscale_file_writes_what_the_upscaler_makes(tmp_path, upscaler):
    source = tmp_path / "in.png"
    write_image(Picture(random_image(10, 12, 3)), source)
    upscale_file(upscaler, source, tmp_path / "out.png", OutputOptions(scale=2.0))
    expected = upscaler.upscale(read_image(source).pixels)
    from srgan.engines import resize_pixels

    np.testing.assert_array_equal(read_image(tmp_path / "out.png").pixels, resize_pixels(expected, 20, 24))


class Events:
    def __init__(self) -> None:
        self.begun: list[Path] = []
        self.thread_ids: set[int] = set()

    def begin(self, task: FileTask) -> None:
        self.begun.append(task.source)
        self.thread_ids.add(threading.get_ident())

    def tiles(self, task: FileTask, done: int, total: int) -> None:
        self.thread_ids.add(threading.get_ident())


def test_any_error_in_one_file_is_that_file_failure_and_results_keep_order(tmp_path, upscaler):
    sources = []
    for index in range(6):
        sources.append(tmp_path / f"in{index}.png")
        write_image(Picture(random_image(8 + index, 9, 3, seed=index)), sources[-1])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "in5.png").write_bytes(b"already here")

    def loader(task: FileTask) -> Picture:
        if task.source.name == "in2.png":
            raise KeyError("a bug, not an SrganError")
        return read_image(task.source)

    tasks = [FileTask(path, tmp_path / "out" / path.name, skip_existing=True) for path in sources]
    events = Events()
    pipeline = FilePipeline(upscaler, OutputOptions(), PipelineSettings(encoders=2, pending_bytes=1), events, loader)
    results = list(pipeline.run([tasks[0], None, *tasks[1:]]))
    assert [result.task for result in results] == tasks
    statuses = [result.status for result in results]
    assert statuses == [FileStatus.DONE] * 2 + [FileStatus.FAILED] + [FileStatus.DONE] * 2 + [FileStatus.SKIPPED]
    assert results[2].stage is Stage.READ and "in2.png" in results[2].detail and "KeyError" in results[2].detail
    assert (tmp_path / "out" / "in5.png").read_bytes() == b"already here"
    assert events.thread_ids == {threading.get_ident()}  # the model runs on the caller's thread
    for path in sources[:5]:
        if path.name != "in2.png":
            expected = upscaler.upscale(read_image(path).pixels)
            np.testing.assert_array_equal(read_image(tmp_path / "out" / path.name).pixels, expected)


def test_stop_finishes_what_is_in_hand_and_starts_nothing_else(tmp_path, upscaler):
    sources = []
    for index in range(4):
        sources.append(tmp_path / f"in{index}.png")
        write_image(Picture(random_image(8, 8, 3, seed=index)), sources[-1])
    stop = threading.Event()

    class StopAfterFirst(Events):
        def begin(self, task: FileTask) -> None:
            stop.set()

    pipeline = FilePipeline(upscaler, observer=StopAfterFirst())
    results = list(pipeline.run((FileTask(path, tmp_path / "out" / path.name) for path in sources), stop=stop))
    assert [result.status for result in results] == [FileStatus.DONE]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["in0.png"]


def test_planning_streams_in_sorted_order_and_refuses_clashes(tmp_path):
    for name in ["b.png", "a.jpg", "a.png", "sub/c.png", "sub/.hidden.png", ".dot/d.png", "notes.txt"]:
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    arguments = [str(tmp_path / "in"), str(tmp_path / "in" / "b.png"), str(tmp_path / "missing.png")]
    items = list(iter_inputs(arguments, recursive=True))
    found = [item.path.relative_to(tmp_path / "in").as_posix() for item in items if isinstance(item, InputFile)]
    assert found == ["a.jpg", "a.png", "b.png", "sub/c.png"]  # b.png once
    assert "file not found" in str(items[-1].problem)
    survey = survey_inputs(arguments, recursive=True)
    assert (survey.items, survey.files) == (5, 4)
    plan = OutputPlan(tmp_path / "out", False, "{stem}", "4", "png")
    jobs = list(plan_jobs(iter_inputs(arguments, recursive=True), plan, survey.digests))
    assert "already the output of" in str(jobs[1].problem)
    assert jobs[2].target == tmp_path / "out" / "b.png" and jobs[2].problem is None
    beside = OutputPlan(None, False, "{stem}", "4", "png")
    onto_input = list(plan_jobs([InputFile(tmp_path / "in" / "a.jpg"), InputFile(tmp_path / "in" / "a.png")], beside))
    assert "would overwrite an input" in str(onto_input[0].problem)
