from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from srgan.engines import save_model
from srgan.cli.app import app
from tests.helpers import tiny_generator

runner = CliRunner()


def test_info_reports_versions_devices_and_tensorrt():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["versions"]["torch"] == torch.__version__
    assert report["devices"][0]["name"] == "cpu"
    assert report["cuda"]["available"] == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert report["tensorrt"].startswith("unavailable")
    human = runner.invoke(app, ["info"])
    assert human.exit_code == 0 and "TensorRT" in human.stdout and "default model" in human.stdout


def test_info_says_which_precision_auto_takes_on_the_cpu_and_why(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx2": True})
    report = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert report["cpu_auto_precision"]["precision"] == "fp32"
    assert "no native bf16" in report["cpu_auto_precision"]["reason"]
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx512_bf16": True})
    human = runner.invoke(app, ["info"], env={"COLUMNS": "300"})
    assert "--precision auto on the CPU: bf16 (native bf16 on this CPU (avx512_bf16)" in human.stdout


def test_info_counts_the_cached_engines(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_ENGINES_DIR", str(tmp_path))
    for name in ("a", "b"):
        (tmp_path / "compiled" / name).mkdir(parents=True)
        (tmp_path / "compiled" / name / "0123.pt2").write_bytes(b"package")
    report = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert report["engines_dir"] == str(tmp_path) and report["engines"] == {"compiled": 2, "tensorrt": 0}
    human = runner.invoke(app, ["info"], env={"COLUMNS": "300"})
    assert f"engine cache: {tmp_path} (compiled 2, tensorrt 0)" in human.stdout


def test_models_lists_the_model_folder_with_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(tmp_path))
    save_model(tmp_path / "mine.safetensors", tiny_generator(), {"dataset": "holiday photos"})
    (tmp_path / "broken.pth").write_bytes(b"nope")
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    entries = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    mine = entries[str(tmp_path / "mine.safetensors")]
    assert mine["scale"] == 4 and mine["blocks"] == 1 and mine["training"]["dataset"] == "holiday photos"
    assert "is not a PyTorch model file" in entries[str(tmp_path / "broken.pth")]["error"]
    table = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "holiday photos" in table.stdout


def test_models_on_a_named_bad_file_fails_with_the_reason(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    result = runner.invoke(app, ["models", str(bad)])
    assert result.exit_code == 1 and "not a readable safetensors" in result.stderr


def test_shell_completion_is_offered():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "--install-completion" in result.stdout
