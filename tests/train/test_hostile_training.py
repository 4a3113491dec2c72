"""Training fed broken checkpoints, settings and photos: one line each, never a traceback or a lost run."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from srgan.cli.app import app
from srgan.engines import Precision
from srgan.train import Adversarial, Stage, TrainSettings, load_settings
from srgan.train.run import SETTINGS_NAME, TrainingEvents, prepare_run_dir, run_training
from srgan.train.settings import SettingsError, toml_string
from srgan.train.trainer import CHECKPOINT_NAME
from tests.train.test_training import TINY, photos  # noqa: F401  (the fixture)

NUMBERS = [item for item in dataclasses.fields(TrainSettings) if item.type in ("int", "float")]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# Item 21: numbers, choices and files that settings refuse.


@pytest.mark.parametrize("item", NUMBERS, ids=lambda item: item.name)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -5, 10**30])
def test_every_number_refuses_non_finite_negative_and_absurd_values(item, value):
    with pytest.raises(SettingsError, match=f"^flags: {item.name} must be ") as error:
        load_settings(None, {item.name: value})
    one_line(error)


@pytest.mark.parametrize("text", ["learning_rate = nan", "learning_rate = inf", "max_side = -5", "seed = -1"])
def test_a_config_file_with_bad_numbers_names_the_file_and_key(tmp_path, text):
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    with pytest.raises(SettingsError) as error:
        load_settings(config)
    assert one_line(error).startswith(str(config)) and text.split()[0] in str(error.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
        (b"steps = [[[" * 2000, "not a valid TOML"),
        (b"steps = 1\nsteps = 2\n", "not a valid TOML"),
        (b"[stage]\nname = 1\n", "stage must be one of pretrain, gan"),
        (b'precision = "fp8"\n', "precision must be one of auto, fp32, fp16, bf16"),
        (b'adversarial = "hinge"\n', "adversarial must be one of bce, ragan, wgan-gp"),
        (b"scale = 3\n", "scale must be one of 2, 4, 8"),
        (b"blocks = 65\n", "blocks must be at least 1 and at most 64"),
        (b"max_side = 8\nhr_crop = 16\n", "max_side 8 must be 0 or at least hr_crop"),
        (b"validation_crop = 2\n", "validation_crop 2 must be 0 or at least 16"),
        (b'lr_dir = "a\\u0000b"\n', "NUL"),
    ],
)
def test_unusable_config_files_are_one_line(tmp_path, content, match):
    config = tmp_path / "settings.toml"
    config.write_bytes(content)
    with pytest.raises(SettingsError, match=match) as error:
        load_settings(config)
    one_line(error)


def test_choices_are_enums_and_strings_become_members():
    settings = dataclasses.replace(TINY, stage="pretrain", precision="bf16", adversarial="ragan")
    assert settings.stage is Stage.PRETRAIN and settings.precision is Precision.BF16
    assert settings.adversarial is Adversarial.RAGAN
    assert 'precision = "bf16"' in settings.to_toml()


def test_a_binary_config_file_is_one_line_on_the_command_line(tmp_path, photos):  # noqa: F811
    config = tmp_path / "config.toml"
    config.write_bytes(bytes(range(256)))
    result = CliRunner().invoke(app, ["train", str(photos), "--out", str(tmp_path / "run"), "--config", str(config)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not UTF-8 text" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# Item 22: paths of any spelling survive settings.toml and a resumed run.

HOSTILE_PATHS = ['C:\\new\\table "x"', "tab\there", "line\nbreak\r", "del\x7f bell\x07", "ünï ☃ 𝄞", '\\"', "\\u0041"]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_round_trip_through_settings_toml(tmp_path, path):
    settings = dataclasses.replace(TINY, init_generator=path, lr_dir=path, vgg_weights=path)
    saved = tmp_path / "settings.toml"
    saved.write_text(settings.to_toml(), encoding="utf-8")
    assert load_settings(saved) == settings


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_text_round_trips_as_a_toml_string(text):
    assert tomllib.loads(f"value = {toml_string(text)}\n") == {"value": text}


def test_undecodable_file_names_are_refused_not_mangled():
    with pytest.raises(SettingsError, match="lr_dir .* holds characters a settings file cannot keep"):
        dataclasses.replace(TINY, lr_dir="photos/\udcff")


def test_a_run_with_a_quote_in_its_paths_can_be_resumed(tmp_path):
    settings = dataclasses.replace(TINY, lr_dir=str(tmp_path / 'say "cheese"\\low'))
    run = tmp_path / "run"
    prepare_run_dir(run, settings, resume=False)
    prepare_run_dir(run, settings, resume=True)
    assert load_settings(run / SETTINGS_NAME).lr_dir == settings.lr_dir


# Item 21: checkpoints that cannot be resumed, and photos that cannot be read.


def started_run(photos: Path, run: Path) -> Path:  # noqa: F811
    run_training(dataclasses.replace(TINY, steps=1), photos, run)
    return run / CHECKPOINT_NAME


def checkpoint_cases(checkpoint: Path) -> dict[str, bytes]:
    whole = checkpoint.read_bytes()
    return {"truncated": whole[: len(whole) // 2], "garbage": b"\x00garbage" * 100, "text": b"junk\n", "empty": b""}


def test_resuming_from_a_damaged_checkpoint_is_one_line(photos, tmp_path):  # noqa: F811
    checkpoint = started_run(photos, tmp_path / "run")
    for name, data in checkpoint_cases(checkpoint).items():
        checkpoint.write_bytes(data)
        with pytest.raises(SettingsError, match="cannot resume: .*checkpoint.pt") as error:
            run_training(TINY, photos, tmp_path / "run", resume=True)
        assert "\n" not in str(error.value), name


@pytest.mark.parametrize(
    "damage",
    [
        lambda state: {"step": 3},
        lambda state: [state],
        lambda state: {**state, "step": "three"},
        lambda state: {**state, "step": -1},
        lambda state: {**state, "torch_rng": torch.zeros(3)},
        lambda state: {**state, "generator": {"head.0.weight": torch.zeros(2)}},
        lambda state: {**state, "ema": {**state["ema"], "tail.bias": torch.full((3,), float("nan"))}},
    ],
    ids=["no-weights", "a-list", "text-step", "negative-step", "bad-rng", "other-network", "nan-ema"],
)
def test_checkpoints_that_do_not_fit_the_run_are_one_line(photos, tmp_path, damage):  # noqa: F811
    checkpoint = started_run(photos, tmp_path / "run")
    torch.save(damage(torch.load(checkpoint, weights_only=True)), checkpoint)
    with pytest.raises(SettingsError, match="checkpoint.pt") as error:
        run_training(TINY, photos, tmp_path / "run", resume=True)
    one_line(error)


def test_resume_on_the_command_line_with_a_garbage_checkpoint(photos, tmp_path):  # noqa: F811
    checkpoint = started_run(photos, tmp_path / "run")
    checkpoint.write_bytes(b"\x80\x04garbage")
    result = CliRunner().invoke(app, ["train", str(photos), "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "checkpoint.pt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_resume_without_a_checkpoint_keeps_the_runs_model(photos, tmp_path):  # noqa: F811
    started_run(photos, tmp_path / "run").unlink()
    model = tmp_path / "run" / "generator.safetensors"
    before = model.read_bytes()
    result = CliRunner().invoke(app, ["train", str(photos), "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no checkpoint.pt to resume from" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert model.read_bytes() == before


@pytest.mark.parametrize("header", ["WIDTH -5\nHEIGHT 4", "WIDTH 4\nHEIGHT -4", "WIDTH 0\nHEIGHT 0"])
def test_a_negative_size_pam_among_the_photos_is_skipped_with_a_warning(photos, tmp_path, header):  # noqa: F811
    broken = photos / "broken.pam"
    broken.write_bytes(f"P7\n{header}\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n".encode() + bytes(64))
    warnings: list[str] = []
    settings = dataclasses.replace(TINY, steps=1, holdout=3)
    result = run_training(settings, photos, tmp_path / "run", events=TrainingEvents(warned=warnings.append))
    assert result.steps == 1
    assert any("broken.pam" in warning and warning.startswith("skipped") for warning in warnings), warnings
    assert math.isfinite(result.last_validation.psnr)


# A sibling: VGG19 weights are a file from elsewhere too.


@pytest.mark.parametrize("damage", ["text", "not-a-tensor", "nan", "compressed"])
def test_damaged_vgg_weights_are_one_line(tmp_path, damage):
    import zipfile

    from srgan.train.networks import VGGFeatures, load_vgg19

    state = {f"features.{key.split('.', 1)[1]}": value for key, value in VGGFeatures().state_dict().items()}
    path = tmp_path / "vgg19.pth"
    if damage == "text":
        path.write_text("junk\n")
    else:
        if damage == "not-a-tensor":
            state["features.0.weight"] = [1.0, 2.0]
        elif damage == "nan":
            state["features.34.bias"][0] = float("nan")
        torch.save(state, path)
        if damage == "compressed":
            packed = path.read_bytes()
            (tmp_path / "plain.pth").write_bytes(packed)
            with zipfile.ZipFile(tmp_path / "plain.pth") as source, zipfile.ZipFile(path, "w", 8) as target:
                for name in source.namelist():
                    target.writestr(name, source.read(name))
    with pytest.raises(SettingsError, match="vgg19.pth") as error:
        load_vgg19(path)
    one_line(error)
