"""The plug-in's pure parts, without GIMP: arguments, progress parsing, PAM files, install."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from srgan.engines import Picture, read_image, scaled_size, write_image
from srgan.cli.app import app
from tests.helpers import random_image

PLUGIN = Path(__file__).resolve().parents[2] / "gimp_plugin" / "srgan_upscale"
spec = importlib.util.spec_from_file_location("srgan_gimp_bridge", PLUGIN / "bridge.py")
bridge = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bridge  # dataclasses look their module up there
spec.loader.exec_module(bridge)


def test_arguments_carry_the_dialog_settings():
    base = ["/venv/bin/python", "-m", "srgan.cli"]
    full = bridge.build_arguments(
        base, Path("/t/in.pam"), Path("/t/out.pam"), "/m.safetensors", 256, "cuda:1", "tensorrt"
    )
    assert full[:5] == [*base, "upscale", "/t/in.pam"]
    assert full[full.index("-o") + 1] == "/t/out.pam" and "--json" in full
    assert full[full.index("--model") + 1] == "/m.safetensors" and full[full.index("--tile") + 1] == "256"
    assert full[full.index("--device") + 1] == "cuda:1" and full[full.index("--backend") + 1] == "tensorrt"
    default = bridge.build_arguments(base, Path("a"), Path("b"), "", 0, "")
    assert "--model" not in default and "--tile" not in default and default[default.index("--device") + 1] == "auto"
    assert default[default.index("--backend") + 1] == "auto" and "--scale" not in default
    scaled = bridge.build_arguments(base, Path("a"), Path("b"), "", 0, "", "auto", 2.5)
    assert scaled[scaled.index("--scale") + 1] == "2.5"


@pytest.mark.parametrize("width, height, scale", [(24, 20, 2.5), (7, 3, 1.5), (5, 9, 4), (1, 1, 1.2)])
def test_the_plugin_sizes_layers_as_the_cli_does(width, height, scale):
    assert bridge.output_size(width, height, scale) == scaled_size(height, width, scale)[::-1]


def test_progress_lines_are_parsed():
    assert bridge.parse_event('{"event": "progress", "done": 3, "total": 4, "fraction": 0.75}').fraction == 0.75
    failed = bridge.parse_event('{"event": "result", "status": "failed", "detail": "x.png: truncated"}')
    assert failed.kind == "result" and failed.message == "x.png: truncated"
    assert bridge.parse_event('{"event": "error", "message": "no model"}').message == "no model"
    assert bridge.parse_event("not json").kind == "other"
    assert bridge.parse_event('{"event": "summary"}').kind == "other"


@pytest.mark.parametrize("channels, deep", [(1, False), (2, True), (3, True), (4, False)])
def test_pam_files_round_trip_with_the_core(tmp_path, channels, deep):
    dtype = np.uint16 if deep else np.uint8
    pixels = random_image(5, 7, channels, dtype=dtype)
    native = pixels.astype(pixels.dtype.newbyteorder("=")).tobytes()
    path = tmp_path / "plugin.pam"
    bridge.write_pam(path, bridge.Pixels(7, 5, channels, deep, native))
    np.testing.assert_array_equal(read_image(path).pixels, pixels)
    write_image(Picture(pixels), tmp_path / "core.pam")
    back = bridge.read_pam(tmp_path / "core.pam")
    assert (back.width, back.height, back.channels, back.deep) == (7, 5, channels, deep)
    assert back.data == native


def test_running_srgan_reports_progress_and_the_cli_reason(tmp_path, tiny_model_file):
    source = tmp_path / "in.pam"
    write_image(Picture(random_image(100, 100, 4)), source)
    command = [sys.executable, "-m", "srgan.cli"]
    fractions: list[float] = []
    arguments = bridge.build_arguments(command, source, tmp_path / "out.pam", str(tiny_model_file), 48, "cpu")
    bridge.run_upscale(arguments, fractions.append)
    assert fractions[-1] == 1.0 and len(fractions) > 1
    assert read_image(tmp_path / "out.pam").pixels.shape == (400, 400, 4)
    with pytest.raises(bridge.BridgeError, match="model file not found"):
        bridge.run_upscale(
            bridge.build_arguments(command, source, tmp_path / "x.pam", str(tmp_path / "no.pth"), 0, "cpu"),
            fractions.append,
        )
    with pytest.raises(bridge.BridgeError, match="cannot start srgan"):
        bridge.run_upscale(["/nonexistent/python", "upscale"], fractions.append)


def test_install_records_this_srgan_and_uninstall_removes_it(tmp_path, monkeypatch):
    runner = CliRunner()
    plugins = tmp_path / "plug-ins"
    result = runner.invoke(app, ["gimp", "install", "--plugins-dir", str(plugins)])
    assert result.exit_code == 0, result.output
    folder = plugins / "srgan_upscale"
    assert (folder / "srgan_upscale.py").stat().st_mode & 0o111
    assert (folder / "bridge.py").read_text() == (PLUGIN / "bridge.py").read_text()
    command = json.loads((folder / "srgan.json").read_text())["command"]
    assert command == [sys.executable, "-m", "srgan.cli"] == bridge.srgan_command(folder)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert "not installed" in json.loads(runner.invoke(app, ["info", "--json"]).stdout)["gimp_plugin"]
    default = runner.invoke(app, ["gimp", "install"])
    assert default.exit_code == 0
    assert json.loads(runner.invoke(app, ["info", "--json"]).stdout)["gimp_plugin"].endswith("srgan_upscale")
    assert runner.invoke(app, ["gimp", "uninstall", "--plugins-dir", str(plugins)]).exit_code == 0
    assert not folder.exists()
    assert "nothing to remove" in runner.invoke(app, ["gimp", "uninstall", "--plugins-dir", str(plugins)]).stdout


def test_a_broken_install_record_says_how_to_fix_it(tmp_path):
    with pytest.raises(bridge.BridgeError, match="srgan gimp install"):
        bridge.srgan_command(tmp_path)
