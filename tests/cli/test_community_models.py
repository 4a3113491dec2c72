"""`srgan upscale`, `srgan models` and `srgan models add` with the community's architectures."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from srgan.cli.app import app
from srgan.engines import Picture, read_image, write_image
from tests.community_models import community_state_dict, save_community_model, spandrel_whole_image
from tests.helpers import random_image

runner = CliRunner()


def test_upscale_by_model_name_after_models_add(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(tmp_path / "models"))
    state = community_state_dict("ESRGAN", 3, 2)
    source = save_community_model(tmp_path / "downloads" / "2x-Tiny.pth", state, wrap="params_ema")
    added = runner.invoke(app, ["models", "add", str(source)])
    assert added.exit_code == 0, added.output
    assert "ESRGAN 2×" in added.stdout and (tmp_path / "models" / "2x-Tiny.pth").is_file()
    photo = tmp_path / "photo.png"
    pixels = random_image(17, 21, 3, seed=4)
    write_image(Picture(pixels), photo)
    result = runner.invoke(app, ["upscale", str(photo), "--model", "2x-Tiny", "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 0, result.output
    output = read_image(tmp_path / "out.png").pixels
    assert int(np.abs(output.astype(int) - spandrel_whole_image(state, pixels).astype(int)).max()) <= 1
    listed = [json.loads(line) for line in runner.invoke(app, ["models", "--json"]).stdout.splitlines()]
    assert any(entry.get("arch") == "ESRGAN" and entry["scale"] == 2 for entry in listed)


def test_models_add_refuses_what_does_not_load_and_copies_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(tmp_path / "models"))
    bad = tmp_path / "notes.pth"
    bad.write_text("not a model")
    result = runner.invoke(app, ["models", "add", str(bad)])
    assert result.exit_code == 1 and "notes.pth" in result.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_an_unsupported_precision_is_a_usage_error(tmp_path):
    model = save_community_model(tmp_path / "swinir.safetensors", community_state_dict("SwinIR", 3, 2))
    photo = tmp_path / "photo.png"
    write_image(Picture(random_image(8, 8, 3)), photo)
    result = runner.invoke(app, ["upscale", str(photo), "-m", str(model), "--precision", "fp16", "--device", "cpu"])
    assert result.exit_code == 2 and "SwinIR" in result.stderr and "fp16" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_scale_option_resamples_a_1x_model(tmp_path):
    model = save_community_model(tmp_path / "1x.safetensors", community_state_dict("Compact", 3, 1))
    photo = tmp_path / "photo.png"
    write_image(Picture(random_image(10, 12, 3)), photo)
    result = runner.invoke(
        app, ["upscale", str(photo), "-m", str(model), "--scale", "2", "-o", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "o.png").pixels.shape == (20, 24, 3)


def test_an_unknown_model_name_names_the_folders_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(tmp_path / "models"))
    photo = tmp_path / "photo.png"
    write_image(Picture(random_image(8, 8, 3)), photo)
    result = runner.invoke(app, ["upscale", str(photo), "--model", "4x-Nowhere"])
    assert result.exit_code == 1 and "4x-Nowhere: no such model file" in result.stderr
    assert str(tmp_path / "models") in result.stderr and not (tmp_path / "photo_x4.png").exists()
