"""The installed commands work from a folder whose own modules share our folders' names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPTS = Path(sys.executable).parent


def shadowing_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    for name in ("train", "engines", "srgan_cli", "gimp_plugin", "cli"):
        (folder / f"{name}.py").write_text(f"raise SystemExit('the user\\'s {name}.py was imported')\n")
    return folder


def run(command: list[str], folder: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=environment)


def test_help_and_module_entry_ignore_the_users_modules(tmp_path):
    folder = shadowing_folder(tmp_path)
    for command in ([str(SCRIPTS / "srgan"), "--help"], [sys.executable, "-m", "srgan.cli", "--help"]):
        result = run(command, folder)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "upscale" in result.stdout


def test_upscale_runs_from_such_a_folder(tmp_path, tiny_model_file):
    folder = shadowing_folder(tmp_path)
    Image.fromarray(np.full((12, 10, 3), 128, np.uint8)).save(folder / "small.png")
    result = run([str(SCRIPTS / "srgan"), "upscale", "small.png", "-m", str(tiny_model_file)], folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Image.open(folder / "small_x4.png").size == (40, 48)
