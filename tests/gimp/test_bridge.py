"""The plug-in's pure parts, without GIMP: arguments, progress parsing, PAM files, install."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
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
    request = bridge.Request("/m.safetensors", 256, "cuda:1", "tensorrt", "bf16", 2.5)
    full = bridge.build_arguments(base, [Path("/t/layer0.pam"), Path("/t/layer1.pam")], Path("/t/out"), request)
    assert full[:6] == [*base, "upscale", "/t/layer0.pam", "/t/layer1.pam"]
    assert full[full.index("-o") + 1] == "/t/out" and full[full.index("--name") + 1] == "{stem}" and "--json" in full
    assert full[full.index("--model") + 1] == "/m.safetensors" and full[full.index("--tile") + 1] == "256"
    assert full[full.index("--device") + 1] == "cuda:1" and full[full.index("--backend") + 1] == "tensorrt"
    assert full[full.index("--precision") + 1] == "bf16" and full[full.index("--scale") + 1] == "2.5"
    default = bridge.build_arguments(base, [Path("a")], Path("b"), bridge.Request())
    assert "--model" not in default and "--tile" not in default and "--scale" not in default
    assert default[default.index("--device") + 1] == "auto" and default[default.index("--max-pixels") + 1] == "0"


def test_choice_nicks_map_to_what_the_cli_accepts():
    from srgan.cli.options import BackendOption  # noqa: F401  (the CLI's own declaration is the reference)
    from srgan.engines import Precision

    assert set(bridge.PRECISIONS) == {precision.value for precision in Precision}
    assert set(bridge.DEVICE_LABELS) == set(bridge.DEVICES)
    assert all(value in ("auto", "cpu", "cuda") or value.startswith("cuda:") for value in bridge.DEVICES.values())
    assert set(bridge.BACKENDS) == {"auto", "eager", "compiled", "tensorrt"}


@pytest.mark.parametrize(
    "setting, suggestion, words",
    [
        ("model", None, "Choose another model in the Model field"),
        ("device", "cpu", "Set Device to cpu"),
        ("device", "cuda:1", "Set Device to cuda-1"),
        ("precision", "fp32", "Set Precision to fp32"),
        ("backend", "eager", "Set Backend to eager"),
        ("tile_size", "256", "Set Tile size to 256"),
        ("tile_size", None, "Choose a smaller Tile size"),
        ("max_pixels", "0", ""),
        (None, None, ""),
    ],
)
def test_advice_is_worded_in_the_dialogs_terms(setting, suggestion, words):
    assert bridge.advice(setting, suggestion) == words
    error = bridge.BridgeError("x.pth: not a model file", setting, suggestion)
    assert str(error) == (f"x.pth: not a model file. {words}" if words else "x.pth: not a model file")
    assert "--" not in str(error)


@pytest.mark.parametrize("width, height, scale", [(24, 20, 2.5), (7, 3, 1.5), (5, 9, 4), (1, 1, 1.2)])
def test_the_plugin_sizes_layers_as_the_cli_does(width, height, scale):
    assert bridge.output_size(width, height, scale) == scaled_size(height, width, scale)[::-1]


def test_progress_lines_are_parsed():
    progress = bridge.parse_event('{"event": "progress", "input": "a", "done": 3, "total": 4, "fraction": 0.75}')
    assert progress.kind == "progress" and progress.fraction == 0.75 and progress.source == "a"
    failed = bridge.parse_event(
        '{"event": "result", "status": "failed", "detail": "x.png: truncated", "setting": null, "suggestion": null}'
    )
    assert failed.kind == "failed" and failed.message == "x.png: truncated" and failed.setting is None
    error = bridge.parse_event('{"event": "error", "message": "no GPU", "setting": "device", "suggestion": "cpu"}')
    assert (error.kind, error.message, error.setting, error.suggestion) == ("error", "no GPU", "device", "cpu")
    assert bridge.parse_event('{"event": "error", "message": "old CLI"}').setting is None  # keys may be absent
    worded = '{"event": "error", "message": "no GPU; use --device cpu", "problem": "no GPU", "setting": "device"}'
    assert bridge.parse_event(worded).message == "no GPU"
    worded = json.dumps(
        {"event": "result", "status": "failed", "detail": "t.png: no memory; use --tile 96", "setting": "tile_size"}
    )
    assert bridge.parse_event(worded).message == "t.png: no memory"
    plain = '{"event": "result", "status": "failed", "detail": "a; b --c", "setting": null}'
    assert bridge.parse_event(plain).message == "a; b --c"  # advice is only cut where a setting stands behind it
    assert bridge.parse_event('{"event": "result", "status": "done", "detail": ""}').kind == "other"
    assert bridge.parse_event("not json").kind == "other"
    assert bridge.parse_event('{"event": "summary"}').kind == "other"


def test_a_failure_without_json_never_shows_a_traceback_line():
    traceback = "╭── Traceback (most recent call last) ──╮\n│ x.py:1 in f │\n╰────╯\nIndexError: pop from empty list\n"
    reason = bridge.unexplained_failure(traceback, 1)
    assert "IndexError" not in reason and "pop from" not in reason and "exit code 1" in reason
    usage = "Usage: srgan upscale [OPTIONS]\nTry 'x --help'.\n╭─ Error ─╮\n│ Invalid value for '--tile' │\n"
    assert bridge.unexplained_failure(usage, 2).endswith("Invalid value for '--tile'")
    assert "without saying why" in bridge.unexplained_failure("", 9)


def test_models_are_offered_by_name(tmp_path):
    output = "\n".join(
        json.dumps(entry)
        for entry in [
            {"path": "/x/engines/weights/srgan_x4.safetensors", "arch": "srgan", "scale": 4},
            {"path": "/m/4x-UltraSharp.pth", "arch": "esrgan", "scale": 4},
            {"path": "/m/4x UltraSharp.safetensors", "arch": "esrgan", "scale": 4},
            {"path": "/m/broken.pth", "error": "not a model"},
        ]
    )
    entries = bridge.parse_models(output + "\nnot json")
    assert [entry.nick for entry in entries] == ["4x-ultrasharp", "4x-ultrasharp-2"]
    assert entries[0].label == "4x-UltraSharp (esrgan, 4×)" and entries[0].path == "/m/4x-UltraSharp.pth"


def test_the_model_list_is_asked_once_per_change_of_the_folders(tmp_path, tiny_model_file):
    folder = tmp_path / "models"
    folder.mkdir()
    cache = tmp_path / "cache.json"
    logged = tmp_path / "calls"
    fake = tmp_path / "fake_srgan.py"  # counts its calls, then lists what the folder holds
    fake.write_text(
        "import json, pathlib, sys\n"
        f"open({str(logged)!r}, 'a').write('x')\n"
        f"for p in sorted(pathlib.Path({str(folder)!r}).iterdir()):\n"
        "    print(json.dumps({'path': str(p), 'arch': 'srgan', 'scale': 4}))\n"
    )
    command = [sys.executable, str(fake)]
    assert bridge.list_models(command, [folder], cache) == []
    (folder / "mine.safetensors").write_bytes(tiny_model_file.read_bytes())
    assert [entry.nick for entry in bridge.list_models(command, [folder], cache)] == ["mine"]
    assert [entry.nick for entry in bridge.list_models(command, [folder], cache)] == ["mine"]
    assert logged.read_text() == "xx"
    assert bridge.list_models(["/nonexistent/srgan"], [folder], tmp_path / "other.json") == []


def test_choices_survive_a_round_trip_and_junk(tmp_path):
    path = tmp_path / "last.json"
    assert bridge.load_choices(path) is None
    choices = bridge.Choices(model="file", model_file="/m/x.pth", auto_tile=False, tile=96, device="cpu", scale=2.0)
    bridge.save_choices(path, choices)
    assert bridge.load_choices(path) == choices
    path.write_text('{"device": "cpu", "unknown": 1}')
    assert bridge.load_choices(path) == bridge.Choices(device="cpu")
    path.write_text("[1, 2]")
    assert bridge.load_choices(path) is None


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


def test_one_srgan_process_upscales_every_layer_and_leaves_nothing(tmp_path, tiny_model_file):
    sources = []
    with bridge.Scratch() as scratch:
        for index, size in enumerate([(60, 50), (30, 44)]):
            sources.append(scratch.path / f"layer{index}.pam")
            write_image(Picture(random_image(*size, 4, seed=index)), sources[-1])
        command = [sys.executable, "-m", "srgan.cli"]
        fractions: list[float] = []
        request = bridge.Request(str(tiny_model_file), 48, "cpu")
        outputs = bridge.run_upscale(command, sources, scratch, request, fractions.append)
        assert [read_image(output).pixels.shape for output in outputs] == [(240, 200, 4), (120, 176, 4)]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and any(f < 0.5 for f in fractions)
        folder = scratch.path
    assert not folder.exists()


def test_a_failure_carries_the_cli_reason_and_setting(tmp_path):
    (tmp_path / "bad.pth").write_text("hello")
    command = [sys.executable, "-m", "srgan.cli"]
    reasons = []
    for model in (tmp_path / "no.pth", tmp_path / "bad.pth"):
        with bridge.Scratch() as scratch, pytest.raises(bridge.BridgeError) as caught:
            source = scratch.path / "layer0.pam"
            write_image(Picture(random_image(20, 20, 3)), source)
            bridge.run_upscale(command, [source], scratch, bridge.Request(str(model)), print)
        reasons.append(str(caught.value))
    assert "model file not found" in reasons[0]
    assert "\n" not in reasons[1] and "Traceback" not in reasons[1] and "KeyError" not in reasons[1]
    assert reasons[1].startswith(f"{tmp_path / 'bad.pth'}: is not a PyTorch model file")
    with bridge.Scratch() as scratch, pytest.raises(bridge.BridgeError, match="cannot start srgan"):
        bridge.run_upscale(["/nonexistent/python"], [scratch.path / "a.pam"], scratch, bridge.Request(), print)


def test_the_guard_cleans_up_when_the_plugin_is_killed(tmp_path, tiny_model_file):
    """GIMP ends a cancelled plug-in with SIGKILL: the guard must stop srgan and remove the scratch."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import bridge; from pathlib import Path\n"
        "scratch = bridge.Scratch(); source = scratch.path / 'layer0.pam'\n"
        "bridge.write_pam(source, bridge.Pixels(600, 600, 3, False, bytes(600 * 600 * 3)))\n"
        "request = bridge.Request(sys.argv[2], 48, 'cpu')\n"
        "bridge.run_upscale([sys.executable, '-m', 'srgan.cli'], [source], scratch, request,"
        " lambda f: print(f, flush=True))\n"
    )
    plugin = subprocess.Popen(
        [sys.executable, "-c", script, str(PLUGIN), str(tiny_model_file)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert plugin.stdout.readline()  # srgan is running: a first progress report came through
    assert list(temporary.glob(f"{bridge.SCRATCH_PREFIX}*"))
    plugin.kill()
    plugin.wait()
    deadline = time.monotonic() + 60
    while list(temporary.glob(f"{bridge.SCRATCH_PREFIX}*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(temporary.glob(f"{bridge.SCRATCH_PREFIX}*"))  # (torch may keep its own caches there)


def test_install_records_this_srgan_and_uninstall_removes_it(tmp_path, monkeypatch):
    runner = CliRunner()
    plugins = tmp_path / "plug-ins"
    result = runner.invoke(app, ["gimp", "install", "--plugins-dir", str(plugins)])
    assert result.exit_code == 0, result.output
    folder = plugins / "srgan_upscale"
    assert (folder / "srgan_upscale.py").stat().st_mode & 0o111
    assert (folder / "bridge.py").read_text() == (PLUGIN / "bridge.py").read_text()
    assert (folder / "help" / "en" / "gimp-help.xml").is_file() and (folder / "help" / "en" / "index.html").is_file()
    assert "; " not in result.output and f"installed {folder}\n" in result.output  # the path whole, on one line
    record = json.loads((folder / "srgan.json").read_text())
    assert record["model_dirs"] and bridge.model_folders(folder) == [Path(p) for p in record["model_dirs"]]
    command = record["command"]
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
