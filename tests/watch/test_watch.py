"""The watcher against a real filesystem and a real observer, with a tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from srgan.engines import create_upscaler, load_model, read_image
from srgan.cli.app import app
from srgan.cli.watching.journal import Journal, WatchStateError
from srgan.cli.watching.policy import OnSuccess, is_candidate
from tests.helpers import random_image
from tests.watch.harness import Running, journal_done, small_png, start_watch_process, wait_until


def test_a_burst_of_200_files_gets_exactly_one_output_each(tiny_model_file, folders):
    in_dir, out_dir = folders
    running = Running(tiny_model_file, in_dir, out_dir)
    try:
        for index in range(200):
            small_png(in_dir / f"burst{index:03d}.png", seed=index)
        wait_until(lambda: len(running.recorder.results) >= 200, 120)
        time.sleep(1.0)  # late duplicates, if any, would show up now
    finally:
        running.close()
    statuses = running.recorder.statuses()
    assert statuses == Counter({(f"burst{index:03d}.png", "done"): 1 for index in range(200)})
    assert sorted(path.name for path in out_dir.glob("*.png")) == [f"burst{index:03d}.png" for index in range(200)]
    assert set(journal_done(out_dir).values()) == {1}


@pytest.mark.parametrize("polling", [False, True])
def test_a_slow_writer_is_processed_once_and_complete(tiny_model_file, folders, tmp_path, polling):
    in_dir, out_dir = folders
    source = tmp_path / "whole.png"
    pixels = small_png(source, seed=3, size=24)
    data = source.read_bytes()
    running = Running(tiny_model_file, in_dir, out_dir, polling=polling, settle_seconds=1.5 if polling else 0.3)
    try:
        with open(in_dir / "slow.png", "wb") as stream:
            for start in range(0, len(data), len(data) // 4 + 1):
                stream.write(data[start : start + len(data) // 4 + 1])
                stream.flush()
                time.sleep(0.8)  # longer than the inotify settle: only the close may count
        wait_until(lambda: running.recorder.results, 30)
        time.sleep(2.0)
    finally:
        running.close()
    assert running.recorder.results == [("slow.png", "done", "")]
    expected = create_upscaler(load_model(tiny_model_file), "cpu").upscale(pixels)
    np.testing.assert_array_equal(read_image(out_dir / "slow.png").pixels, expected)


def test_write_to_a_temporary_name_then_rename_is_processed_once(tiny_model_file, folders):
    in_dir, out_dir = folders
    running = Running(tiny_model_file, in_dir, out_dir)
    try:
        for index, temporary in enumerate(["a.png.tmp", ".b.png.partial", "c.png.part", ".~d.png"]):
            Image.fromarray(random_image(8, 8, 3, seed=index)).save(in_dir / temporary, format="PNG")
            os.rename(in_dir / temporary, in_dir / f"final{index}.png")
        wait_until(lambda: len(running.recorder.results) >= 4, 30)
        time.sleep(1.5)
    finally:
        running.close()
    assert running.recorder.statuses() == Counter({(f"final{index}.png", "done"): 1 for index in range(4)})


def test_bad_files_are_logged_and_the_watcher_keeps_going(tiny_model_file, folders, tmp_path):
    in_dir, out_dir = folders
    failed = tmp_path / "failed"
    running = Running(tiny_model_file, in_dir, out_dir, failed_dir=failed)
    try:
        small_png(in_dir / "good1.png", seed=1)
        (in_dir / "empty.png").write_bytes(b"")
        (in_dir / "text.png").write_text("not pixels")
        whole = tmp_path / "whole.jpg"
        Image.fromarray(random_image(32, 32, 3)).save(whole)
        (in_dir / "cut.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        (in_dir / "notes.txt").write_text("ignored: not an image name")
        wait_until(lambda: len(running.recorder.results) >= 4, 30)
        small_png(in_dir / "good2.png", seed=2)
        wait_until(lambda: len(running.recorder.results) >= 5, 30)
        time.sleep(1.0)
    finally:
        running.close()
    statuses = running.recorder.statuses()
    assert statuses[("good1.png", "done")] == statuses[("good2.png", "done")] == 1
    assert {source for source, status in statuses if status == "failed"} == {"empty.png", "text.png", "cut.jpg"}
    assert sum(statuses.values()) == 5, "failures are never retried in a loop"
    log = (out_dir / ".srgan-watch" / "failures.log").read_text()
    assert "empty.png" in log and "text.png" in log and "truncated or corrupt" in log
    assert sorted(path.name for path in failed.iterdir()) == ["cut.jpg", "empty.png", "text.png"]


def test_output_inside_the_input_is_never_taken_as_input(tiny_model_file, tmp_path):
    in_dir = tmp_path / "in"
    out_dir = in_dir / "upscaled"
    in_dir.mkdir()
    running = Running(tiny_model_file, in_dir, out_dir, recursive=True)
    try:
        for index in range(5):
            small_png(in_dir / f"p{index}.png", seed=index)
        (in_dir / "sub").mkdir()
        small_png(in_dir / "sub" / "deep.png")
        wait_until(lambda: len(running.recorder.results) >= 6, 30)
        time.sleep(2.0)
    finally:
        running.close()
    sources = [source for source, _, _ in running.recorder.results]
    assert sorted(sources) == ["p0.png", "p1.png", "p2.png", "p3.png", "p4.png", "sub/deep.png"]
    assert (out_dir / "sub" / "deep.png").is_file()


def test_backlog_changed_content_and_on_success_actions(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "old.png", seed=1)
    running = Running(tiny_model_file, in_dir, out_dir, once=True)
    running.thread.join(30)
    running.close()
    assert running.recorder.results == [("old.png", "done", "")]
    again = Running(tiny_model_file, in_dir, out_dir, once=True)
    again.thread.join(30)
    again.close()
    assert again.recorder.results == [] and again.recorder.tally.skipped == 1
    small_png(in_dir / "old.png", seed=2)  # new content under the same name
    moved = Running(tiny_model_file, in_dir, out_dir, once=True, on_success=OnSuccess.MOVE)
    moved.thread.join(30)
    moved.close()
    assert moved.recorder.results == [("old.png", "done", "")]
    assert (in_dir / "done" / "old.png").is_file() and not (in_dir / "old.png").exists()
    small_png(in_dir / "gone.png", seed=3)
    deleted = Running(tiny_model_file, in_dir, out_dir, once=True, on_success=OnSuccess.DELETE)
    deleted.thread.join(30)
    deleted.close()
    assert not (in_dir / "gone.png").exists() and (out_dir / "gone.png").is_file()


def test_one_watcher_per_output_folder(tmp_path):
    first = Journal(tmp_path)
    try:
        with pytest.raises(WatchStateError, match="another srgan watch"):
            Journal(tmp_path)
    finally:
        first.close()


def test_candidate_policy(tmp_path):
    in_dir = tmp_path
    out = tmp_path / "out"
    assert is_candidate(in_dir / "a.png", in_dir, [out], False)
    for name in [".hidden.png", "a.png.partial", "a.png.tmp", "a.png~", "notes.txt", "out/a.png", "sub/a.png"]:
        assert not is_candidate(in_dir / name, in_dir, [out], False), name
    assert is_candidate(in_dir / "sub" / "a.JPG", in_dir, [out], True)
    assert not is_candidate(in_dir / "sub" / ".cache" / "a.png", in_dir, [out], True)


def test_kill_9_then_restart_finishes_everything_exactly_once(tiny_model_file, folders):
    in_dir, out_dir = folders
    for index in range(40):
        small_png(in_dir / f"k{index:02d}.png", seed=index, size=48)
    process = start_watch_process(tiny_model_file, in_dir, out_dir)
    results = 0
    for line in process.stdout:
        if json.loads(line)["event"] == "result":
            results += 1
            if results == 10:
                process.send_signal(signal.SIGKILL)
                break
    process.wait(30)
    assert process.returncode == -signal.SIGKILL
    finished = subprocess.run([*process.args, "--once"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    done = journal_done(out_dir)
    assert len(done) == 40 and set(done.values()) == {1}, "nothing is processed twice"
    outputs = sorted(path.name for path in out_dir.iterdir() if path.is_file())
    assert outputs == [f"k{index:02d}.png" for index in range(40)]
    for path in out_dir.iterdir():
        if path.is_file():
            assert read_image(path).pixels.shape == (192, 192, 3)
    assert not list(out_dir.rglob("*.partial"))


def test_watch_command_once_and_usage_errors(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "a.png")
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["watch", str(in_dir), "-o", str(out_dir), "-m", str(tiny_model_file), "--once", "--settle", "0.1", "--json"],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    events = [record["event"] for record in records]
    assert events[0] == "start" and "result" in events and events[-1] == "stop"
    assert records[0]["mode"] == "once, no observer"  # --once starts no inotify observer
    same = runner.invoke(app, ["watch", str(in_dir), "-o", str(in_dir), "-m", str(tiny_model_file), "--once"])
    assert same.exit_code == 2 and "is the input folder" in same.stderr
    missing = runner.invoke(app, ["watch", str(in_dir / "nope"), "-o", str(out_dir), "-m", str(tiny_model_file)])
    assert missing.exit_code == 2 and "not a folder" in missing.stderr


def test_watch_writes_at_the_requested_scale(tiny_model_file, folders):
    in_dir, out_dir = folders
    small_png(in_dir / "a.png", size=8)
    arguments = ["watch", str(in_dir), "-o", str(out_dir), "-m", str(tiny_model_file), "--once", "--settle", "0.1"]
    result = CliRunner().invoke(app, [*arguments, "--scale", "3", "--name", "{stem}_x{scale}"])
    assert result.exit_code == 0, result.output
    assert read_image(out_dir / "a_x3.png").pixels.shape[:2] == (24, 24)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_finish_the_current_file_and_exit_cleanly(tiny_model_file, folders, signum):
    in_dir, out_dir = folders
    for index in range(30):
        small_png(in_dir / f"s{index:02d}.png", seed=index, size=48)
    process = start_watch_process(tiny_model_file, in_dir, out_dir)
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "processing":
            process.send_signal(signum)
            break
    rest, stderr = process.communicate(timeout=60)
    events += [json.loads(line) for line in rest.splitlines()]
    assert process.returncode == 0, stderr
    assert events[-1]["event"] == "stop"
    results = [event for event in events if event["event"] == "result"]
    assert results and all(event["status"] == "done" for event in results), "the file in hand was finished"
    assert len(journal_done(out_dir)) == len(results) < 30
    assert not list(out_dir.rglob("*.partial"))
