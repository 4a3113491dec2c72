"""Hostile files and faults against the watcher: a real observer, a real file system, a tiny model.

Each test is one class of defect from issue 12 (items 9 to 17) with its siblings.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from typer.testing import CliRunner

from srgan.engines import Backend, DeviceOutOfMemory, ImageWriteError, Upscaler, read_image
from srgan.cli.app import app
from srgan.cli.watch_cmd import shown
from srgan.cli.watching.journal import Journal, WatchStateError
from srgan.cli.watching.policy import OnSuccess, machine_at_fault, output_problem
from tests.watch.harness import Running, journal_done, small_png, start_watch_process, tiny_upscaler, wait_until


class FaultyBackend(Backend):
    """The real CPU backend, raising a raw RuntimeError on tiles that are pure white, and running
    `hook` before its first batch. It overrides `infer` itself, past the core's mapping of runtime
    errors, to stand for any exception the core lets through: the watcher must survive all."""

    def __init__(self, inner: Backend, hook: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.name, self.scale, self.device = inner.name, inner.scale, inner.device
        self.hook = hook

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        if batch.min() > 0.99:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nsecond line")
        return self._infer(batch)

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        return self.inner.infer(batch)


def faulty_upscaler(model: Path, hook: Callable[[], None] | None = None) -> Upscaler:
    real = tiny_upscaler(model)
    return Upscaler(FaultyBackend(real.backend, hook), real.settings)


def zero_resolution_tiff(path: Path) -> None:
    """A TIFF whose resolution is 0/0: its DPI reads as NaN (issue 12, item 5)."""
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), photometric="rgb", resolution=((7777, 3), (7777, 3)))
    path.write_bytes(path.read_bytes().replace(struct.pack("<II", 7777, 3), bytes(8)))


def cli(*arguments: str):
    return CliRunner().invoke(app, ["watch", *arguments])


def once(model: Path, in_dir: Path, out_dir: Path, *extra: str):
    """`srgan watch --once --json`, and its JSON events."""
    result = cli(str(in_dir), "-o", str(out_dir), "-m", str(model), "--once", "--settle", "0.1", "--json", *extra)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, events


def results(events: list[dict]) -> dict[str, tuple[str, str]]:
    return {event["input"]: (event["status"], event["detail"]) for event in events if event["event"] == "result"}


# Item 9: any exception on one file is that file's failure, and a file that kills the process
# cannot keep a restarted watcher in a crash loop.


@pytest.mark.parametrize("polling", [False, True])
def test_any_exception_on_one_file_is_that_files_failure(tiny_model_file, folders, polling):
    in_dir, out_dir = folders
    upscaler = faulty_upscaler(tiny_model_file)
    running = Running(tiny_model_file, in_dir, out_dir, upscaler=upscaler, polling=polling, settle_seconds=0.3)
    try:
        small_png(in_dir / "good1.png", seed=1)
        Image.new("RGB", (8, 8), "white").save(in_dir / "white.png")  # the backend raises RuntimeError
        zero_resolution_tiff(in_dir / "nan_dpi.tif")
        (in_dir / "negative.pam").write_bytes(b"P7\nWIDTH -4\nHEIGHT 4\nDEPTH 3\nMAXVAL 255\nENDHDR\n" + bytes(48))
        os.mkfifo(in_dir / "pipe.png")  # a polled pipe looks settled: it must not be read (that would block)
        wait_until(lambda: len(running.recorder.results) >= 4, 30)
        small_png(in_dir / "good2.png", seed=2)
        wait_until(lambda: ("good2.png", "done") in running.recorder.statuses(), 30)
    finally:
        running.close()
    outcomes = {source: (status, detail) for source, status, detail in running.recorder.results}
    assert outcomes["good1.png"][0] == outcomes["good2.png"][0] == "done"
    status, detail = outcomes["white.png"]
    assert status == "failed" and "white.png" in detail and "RuntimeError" in detail and "\n" not in detail
    for hostile in ("nan_dpi.tif", "negative.pam"):  # done once the core handles them; never the watcher's end
        assert outcomes[hostile][0] in ("done", "failed") and "\n" not in outcomes[hostile][1]
    assert "pipe.png" not in outcomes
    assert sum(running.recorder.statuses().values()) == 5


def test_a_file_the_watcher_dies_on_twice_is_failed_not_retried_forever(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "a_poison.png", seed=9, size=256)  # slow enough to be killed in the middle
    for index in range(3):
        small_png(in_dir / f"b{index}.png", seed=index)
    for _ in range(2):  # as a crash on this file would, under a supervisor that restarts it
        process = start_watch_process(tiny_model_file, in_dir, out_dir)
        for line in process.stdout:
            event = json.loads(line)
            if event["event"] == "processing":
                assert event["input"] == "a_poison.png"
                process.send_signal(signal.SIGKILL)
                break
        process.wait(30)
        process.stdout.close()
        process.stderr.close()
    finished = subprocess.run([*process.args, "--once"], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1, finished.stderr
    outcomes = results([json.loads(line) for line in finished.stdout.splitlines()])
    status, detail = outcomes["a_poison.png"]
    assert status == "failed" and "died twice" in detail
    assert all(outcomes[f"b{index}.png"][0] == "done" for index in range(3))
    assert "died twice" in (out_dir / ".srgan-watch" / "failures.log").read_text()
    again = subprocess.run([*process.args, "--once"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and not results([json.loads(line) for line in again.stdout.splitlines()])


# Item 10: delete or move only the exact content that was upscaled.


@pytest.mark.parametrize("action", [OnSuccess.DELETE, OnSuccess.MOVE])
@pytest.mark.parametrize("how", ["renamed over", "rewritten in place"])
def test_a_new_version_arriving_during_the_upscale_is_processed_not_lost(tiny_model_file, folders, action, how):
    in_dir, out_dir = folders
    source = in_dir / "a.png"
    small_png(source, seed=1)
    newer = in_dir.parent / "newer.png"
    newer_pixels = small_png(newer, seed=2)
    newer_bytes = newer.read_bytes()

    def new_version() -> None:  # runs while the first version is being upscaled
        if how == "renamed over":
            os.replace(newer, source)
        else:
            with open(source, "r+b") as stream:
                stream.truncate(0)
                stream.write(newer_bytes)

    upscaler = faulty_upscaler(tiny_model_file, hook=new_version)
    running = Running(tiny_model_file, in_dir, out_dir, upscaler=upscaler, on_success=action, settle_seconds=0.3)
    try:
        wait_until(lambda: running.recorder.statuses()[("a.png", "done")] >= 2, 30)
    finally:
        running.close()
    first, second = (detail for _, status, detail in running.recorder.results if status == "done")
    assert "changed after it was read" in first and second == ""
    assert len(journal_done(out_dir)) == 2, "both versions were upscaled"
    assert not source.exists()
    if action is OnSuccess.MOVE:
        assert [path.read_bytes() for path in (in_dir / "done").iterdir()] == [newer_bytes]
    expected = tiny_upscaler(tiny_model_file).upscale(newer_pixels)
    np.testing.assert_array_equal(read_image(out_dir / "a.png").pixels, expected)


def test_inputs_a_killed_watcher_had_renamed_aside_are_put_back_and_finished(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "a.png", seed=1)
    assert once(tiny_model_file, in_dir, out_dir)[0].exit_code == 0
    # Killed between renaming a.png aside and deleting it; c.png's content was never processed.
    os.rename(in_dir / "a.png", in_dir / ".a.png.srgan-claim")
    small_png(in_dir.parent / "c.png", seed=3)
    os.rename(in_dir.parent / "c.png", in_dir / ".c.png.srgan-claim")
    result, events = once(tiny_model_file, in_dir, out_dir, "--on-success", "delete")
    assert result.exit_code == 0, result.output
    assert results(events) == {"c.png": ("done", "")}
    assert sorted(path.name for path in in_dir.iterdir()) == []
    assert (out_dir / "a.png").is_file() and (out_dir / "c.png").is_file()


# Item 11: an output folder that contains the watched one works; only srgan's own partials are removed.


def test_an_output_folder_above_the_watched_one_works_and_spares_other_files(tiny_model_file, tmp_path):
    pics = tmp_path / "pics"
    incoming = pics / "incoming"
    incoming.mkdir(parents=True)
    small_png(incoming / "a.png", seed=1)
    small_png(incoming / "b.png", seed=2)
    mine = small_png(pics / "b.png", seed=3)  # the user's own photo, where b's output would go
    downloading = incoming / ".c.png.partial"
    downloading.write_bytes(b"a browser still writing")
    foreign = pics / ".holiday.png.abcd1234.partial"
    foreign.write_bytes(b"another program's temporary file")
    # A write of d.png that a killed watcher had started, and its temporary file.
    state = pics / ".srgan-watch"
    state.mkdir()
    output = pics.resolve() / "d.png"
    record = {"status": "started", "source": "d.png", "digest": "0" * 64, "output": str(output), "time": 1.0}
    (state / "journal.jsonl").write_text(json.dumps(record) + "\n")
    ours = pics / ".d.png.k3j4h5g6.partial"
    ours.write_bytes(b"cut short")
    result, events = once(tiny_model_file, incoming, pics)
    outcomes = results(events)
    assert outcomes["a.png"][0] == "done" and (pics / "a.png").is_file()
    status, detail = outcomes["b.png"]
    assert status == "deferred" and "did not write" in detail
    np.testing.assert_array_equal(read_image(pics / "b.png").pixels, mine)
    assert result.exit_code == 1, "with --once, a file left to retry is not success"
    assert downloading.exists() and foreign.exists() and not ours.exists()


def test_output_names_outside_the_output_folder_are_refused(tiny_model_file, tmp_path):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    small_png(in_dir / "a.png")
    result = cli(str(in_dir), "-o", str(in_dir / "out"), "-m", str(tiny_model_file), "--once", "--name", "../{stem}_x")
    assert result.exit_code == 2 and "path separator" in result.stderr
    assert not list(in_dir.rglob("a_x*"))
    in_dir, out_dir = in_dir.resolve(), (in_dir / "out").resolve()
    assert output_problem(out_dir / "a.png", in_dir, out_dir, [out_dir]) is None
    assert "outside the output folder" in output_problem(out_dir / ".." / "a.png", in_dir, out_dir, [out_dir])
    parent = in_dir.parent
    assert "taken as a new input" in output_problem(in_dir / "x.png", in_dir, parent, [])


# Item 12: two inputs with one output name.


def test_a_second_input_with_the_same_output_name_fails_and_clobbers_nothing(tiny_model_file, folders):
    in_dir, out_dir = folders

    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(in_dir / "a.jpg")
    small_png(in_dir / "a.png", seed=5)
    result, events = once(tiny_model_file, in_dir, out_dir, "-f", "png")
    outcomes = results(events)
    assert outcomes["a.jpg"][0] == "done"
    status, detail = outcomes["a.png"]
    assert status == "failed" and "already the output of a.jpg" in detail and result.exit_code == 1
    expected = tiny_upscaler(tiny_model_file).upscale(read_image(in_dir / "a.jpg").pixels)
    np.testing.assert_array_equal(read_image(out_dir / "a.png").pixels, expected)


# Item 13: the watched folder removed and made again; the state folder removed.


@pytest.mark.parametrize("polling", [False, True])
def test_a_watched_folder_removed_and_made_again_is_watched_again(tiny_model_file, folders, polling):
    in_dir, out_dir = folders
    running = Running(tiny_model_file, in_dir, out_dir, polling=polling, settle_seconds=0.3)
    try:
        small_png(in_dir / "first.png", seed=1)
        wait_until(lambda: ("first.png", "done") in running.recorder.statuses(), 20)
        shutil.rmtree(in_dir)
        wait_until(lambda: any("is gone" in warning for warning in running.recorder.warnings), 10)
        in_dir.mkdir()
        small_png(in_dir / "second.png", seed=2)
        wait_until(lambda: ("second.png", "done") in running.recorder.statuses(), 20)
    finally:
        running.close()
    assert any("watching the new one" in warning for warning in running.recorder.warnings)


def test_removing_the_state_folder_stops_the_watcher_with_one_line(tiny_model_file, folders):
    in_dir, out_dir = folders
    running = Running(tiny_model_file, in_dir, out_dir)
    shutil.rmtree(out_dir / ".srgan-watch")
    wait_until(lambda: not running.thread.is_alive(), 10)
    with pytest.raises(WatchStateError, match="state was removed"):
        running.close()


# Item 14: a damaged journal.


def test_a_damaged_journal_is_recovered_record_by_record(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "a.png", seed=1)
    small_png(in_dir / "b.png", seed=2)
    assert once(tiny_model_file, in_dir, out_dir)[0].exit_code == 0
    journal = out_dir / ".srgan-watch" / "journal.jsonl"
    damage = [
        b"\xff\xfe not UTF-8 \xc3\x28",
        b'{"status": 5, "source": "x.png", "digest": "d", "time": 1}',
        b'{"status": "done", "source": "x.png", "digest": 7, "time": 1}',
        b'{"status": "done", "source": "x.png", "digest": "d", "time": NaN}',
        b'{"status": "done", "source": "x.png", "digest": "d", "time": "noon"}',
        b'{"status": "lost", "source": "x.png", "digest": "d", "time": 1}',
        b"[1, 2, 3]",
        b"[" * 100_000 + b"]" * 100_000,  # valid JSON that the decoder cannot recurse through
    ]
    journal.write_bytes(b"\n".join(damage) + b"\n" + journal.read_bytes() + b'{"status": "done", "sour')
    small_png(in_dir / "c.png", seed=3)
    result, events = once(tiny_model_file, in_dir, out_dir)
    assert result.exit_code == 0, result.output
    assert results(events) == {"c.png": ("done", "")}, "a and b are still known as done"
    warnings = [event["message"] for event in events if event["event"] == "warning"]
    assert len(warnings) == 1 and "9 unreadable line(s) skipped" in warnings[0]
    reopened = Journal(out_dir)
    try:
        assert reopened.skipped == 9, "the record after the cut line starts a line of its own"
        assert sorted(source for source, _ in reopened.entries) == ["a.png", "b.png", "c.png"]
    finally:
        reopened.close()


# Item 15: failures of the machine are retried; failures of the input are not.


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs, for a real 'No space left on device'; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` but for about `leave` bytes; returns the filler file."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    os.ftruncate(descriptor, max(os.fstat(descriptor).st_size - leave, 0))
    os.close(descriptor)
    return filler


def test_a_full_disk_defers_the_input_and_it_is_done_once_space_is_freed(tiny_model_file, tmp_path, small_disk):
    in_dir, out_dir = tmp_path / "in", small_disk / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    filler = fill(small_disk, leave=24 * 1024)  # room for the journal, not for the image
    running = Running(tiny_model_file, in_dir, out_dir, retry_seconds=0.3)
    try:
        small_png(in_dir / "big.png", seed=1, size=64)
        (in_dir / "text.png").write_text("not pixels")
        wait_until(lambda: running.recorder.statuses()[("big.png", "deferred")] >= 2, 20)
        filler.unlink()
        wait_until(lambda: ("big.png", "done") in running.recorder.statuses(), 20)
        time.sleep(0.8)  # a failure of the input, were it retried, would show again by now
    finally:
        running.close()
    details = [detail for source, status, detail in running.recorder.results if status == "deferred"]
    assert all("no space left" in detail.lower() and "retrying" in detail for detail in details), details
    assert running.recorder.statuses()[("text.png", "failed")] == 1
    log = (out_dir / ".srgan-watch" / "failures.log").read_text()
    assert "text.png" in log and "big.png" not in log
    assert read_image(out_dir / "big.png").pixels.shape == (256, 256, 3)


def test_failures_of_the_machine_are_told_from_failures_of_the_input(tmp_path):
    def core_error(action: Callable[[], object]) -> BaseException:
        try:
            try:
                action()
            except OSError:
                raise ImageWriteError("out.png: cannot write the image") from None  # as the core raises
        except BaseException as error:
            return error
        raise AssertionError("no error")

    def write_to_full_device() -> None:
        with open("/dev/full", "wb") as stream:
            stream.write(b"x")

    assert machine_at_fault(core_error(write_to_full_device))
    assert not machine_at_fault(core_error(lambda: open(tmp_path / "missing" / "x", "wb")))
    (tmp_path / "text.png").write_text("not pixels")
    assert not machine_at_fault(core_error(lambda: read_image(tmp_path / "text.png")))
    assert not machine_at_fault(RuntimeError("CUDA error"))
    assert machine_at_fault(DeviceOutOfMemory("cuda:0: out of memory even for 64-pixel tiles"))


# Item 16: folder options that cannot be folders.


def test_folder_options_that_cannot_be_folders_are_refused_before_any_work(tiny_model_file, folders, tmp_path):
    in_dir, out_dir = folders
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    missing_model = tmp_path / "missing.safetensors"  # the folders are checked before the model loads
    base = [str(in_dir), "-m", str(missing_model), "--once"]
    cases = [
        (["-o", str(a_file)], "-o", "is a file"),
        (["-o", str(out_dir), "--failed-dir", str(a_file)], "--failed-dir", "is a file"),
        (["-o", str(out_dir), "--failed-dir", str(a_file / "below")], "--failed-dir", "cannot create the folder"),
        (["-o", str(out_dir), "--on-success", "move", "--archive-dir", str(a_file)], "--archive-dir", "is a file"),
        (["-o", str(out_dir), "--archive-dir", str(tmp_path / "archive")], "--archive-dir", "--on-success move"),
        (["-o", str(out_dir), "--failed-dir", str(in_dir)], "--failed-dir", "is the watched folder"),
        (["-o", str(out_dir), "--failed-dir", str(out_dir)], "--failed-dir", "is the output folder"),
    ]
    for arguments, flag, reason in cases:
        result = cli(*base, *arguments)
        message = result.stderr.strip()
        assert result.exit_code == 2, (arguments, result.output)
        assert len(message.splitlines()) == 1 and flag in message and reason in message, message


# Item 17: links out of the watched folder.


def test_links_out_of_the_watched_folder_are_not_followed_unless_asked(tiny_model_file, folders, tmp_path):
    in_dir, out_dir = folders
    secret = tmp_path / "secret.png"
    small_png(secret, seed=1)
    os.symlink(secret, in_dir / "leak.png")
    private = tmp_path / "private"
    private.mkdir()
    small_png(private / "x.png", seed=2)
    os.symlink(private, in_dir / "sub")
    small_png(in_dir / "real.png", seed=3)
    os.symlink(in_dir / "real.png", in_dir / "alias.png")  # a link that stays inside is an input
    result, events = once(tiny_model_file, in_dir, out_dir, "--recursive")
    assert result.exit_code == 0, result.output
    assert results(events) == {"alias.png": ("done", ""), "real.png": ("done", "")}
    warnings = [event["message"] for event in events if event["event"] == "warning"]
    assert any("leak.png" in warning and "--follow-symlinks" in warning for warning in warnings)
    assert not (out_dir / "leak.png").exists() and not (out_dir / "sub").exists()
    result, events = once(tiny_model_file, in_dir, out_dir, "--follow-symlinks")
    assert results(events) == {"leak.png": ("done", "")}


# Item 7's watch side: names that are terminal escapes or not UTF-8.


def test_hostile_file_names_are_shown_inert(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "evil\x1b]0;pwned\x07.png", seed=1)
    small_png(Path(os.fsdecode(os.fsencode(in_dir) + b"/caf\xe9.png")), seed=2)
    result = cli(str(in_dir), "-o", str(out_dir), "-m", str(tiny_model_file), "--once", "--settle", "0.1")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "evil\\x1b]0;pwned\\x07.png" in result.output and "caf\\udce9.png" in result.output
    assert shown("tab\there") == "tab\\there"
