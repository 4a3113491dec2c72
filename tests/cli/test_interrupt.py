"""A real process, a real signal: an interrupted upscale leaves no partial file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from srgan.engines import Picture, write_image
from tests.helpers import random_image


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly_without_partial_files(tmp_path, tiny_model_file, signum):
    source = tmp_path / "big.png"
    write_image(Picture(random_image(400, 400, 3)), source)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "srgan.cli",
        "upscale",
        str(source),
        "-o",
        str(out),
        "-m",
        str(tiny_model_file),
        "--json",
        "--tile",
        "32",
        "--overlap",
        "4",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if json.loads(line)["event"] == "progress":
            process.send_signal(signum)
            break
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists() or list(out.iterdir()) == []
