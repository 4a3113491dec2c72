from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from srgan.engines import ImageReadError, create_upscaler, load_generator, load_model
from srgan.cli.app import app
from srgan.train import TrainSettings, load_settings
from srgan.train.data import CropSampler, bicubic_downscale, find_images, find_pairs, split_photos
from srgan.train.metrics import psnr_y, ssim_y
from srgan.train.run import TrainingEvents, run_training
from srgan.train.settings import SettingsError
from srgan.train.trainer import CHECKPOINT_NAME, Trainer

TINY = TrainSettings(
    blocks=1,
    channels=8,
    hr_crop=16,
    batch_size=4,
    steps=6,
    holdout=2,
    validation_crop=32,
    checkpoint_every=3,
    validate_every=3,
    max_side=0,
    ema_decay=0.9,
    seed=1,
)


def smooth_photo(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for index in range(6):
        target = folder / ("nested" if index % 2 else "") / f"p{index}.{'png' if index % 3 else 'jpg'}"
        Image.fromarray(smooth_photo(index)).save(target)
    return folder


def test_loss_decreases(photos, tmp_path):
    losses: list[float] = []
    settings = dataclasses.replace(TINY, steps=60, learning_rate=1e-3, validate_every=1000, checkpoint_every=1000)
    run_training(
        settings,
        photos,
        tmp_path / "run",
        events=TrainingEvents(stepped=lambda step, loss: losses.append(loss["total"])),
    )
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def test_resume_continues_exactly_like_an_uninterrupted_run(photos, tmp_path):
    whole = run_training(TINY, photos, tmp_path / "whole")
    half = dataclasses.replace(TINY, steps=3)
    run_training(half, photos, tmp_path / "split")
    resumed = run_training(TINY, photos, tmp_path / "split", resume=True)
    assert resumed.steps == whole.steps == 6
    first, second = load_model(whole.model), load_model(resumed.model)
    image = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(first.network(image), second.network(image), rtol=0, atol=1e-6)
    assert (tmp_path / "split" / CHECKPOINT_NAME).exists()


def test_a_given_generator_is_kept_by_the_ema_and_the_learning_rate_warms_up(photos, tmp_path):
    start = run_training(dataclasses.replace(TINY, steps=3), photos, tmp_path / "first").model
    settings = dataclasses.replace(
        TINY, init_generator=str(start), warmup_steps=4, learning_rate=1e-2, ema_decay=0.99, steps=1
    )
    trainer = Trainer(settings, split_photos(find_images(photos), settings.holdout, settings.seed), tmp_path, print)
    assert trainer._learning_rate() == pytest.approx(1e-2 / 4)
    before = {name: value.clone() for name, value in trainer.ema.state_dict().items()}
    trainer.train_step()
    assert trainer._learning_rate() == pytest.approx(1e-2 / 2)
    moved = trainer._generator_module.state_dict()
    for name, value in trainer.ema.state_dict().items():
        if value.is_floating_point() and not torch.equal(moved[name], before[name]):
            # The average moves 1 % of the way (decay 0.99), not most of it as from random weights.
            expected = before[name] + 0.01 * (moved[name] - before[name])
            assert torch.allclose(value, expected, atol=1e-6), name
    training = load_model(trainer.export(None, photos=6, seconds=1.0)).info.training
    assert training["total_steps"] == "4"  # 3 before this run, 1 in it
    assert training["started_from"].startswith(f"{start.name} (sha256 ")


def test_a_batchnorm_model_fine_tunes_in_its_bn_free_form(photos, tmp_path):
    start = run_training(dataclasses.replace(TINY, steps=3), photos, tmp_path / "first").model
    assert load_generator(start)[1].config.batchnorm
    settings = dataclasses.replace(TINY, init_generator=str(start), batchnorm=False, steps=2)
    trainer = Trainer(settings, split_photos(find_images(photos), settings.holdout, settings.seed), tmp_path, print)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in trainer.ema.modules())
    image = torch.rand(1, 3, 12, 12)
    with torch.no_grad():  # the folded network computes what the model file does
        torch.testing.assert_close(trainer.ema(image), load_model(start).network(image), atol=1e-5, rtol=1e-4)
    with pytest.raises(SettingsError, match="settings ask for"):
        Trainer(dataclasses.replace(settings, blocks=2), trainer.split, tmp_path, print)


def test_interrupt_writes_a_checkpoint(photos, tmp_path):
    def interrupt(step: int, losses: dict[str, float]) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(TINY, photos, tmp_path / "run", events=TrainingEvents(stepped=interrupt))
    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 2


def test_exported_model_runs_in_the_upscaler_with_metadata(photos, tmp_path):
    result = run_training(TINY, photos, tmp_path / "run")
    loaded = load_model(result.model)
    assert loaded.info.training["steps"] == "6" and "val_psnr_y" in loaded.info.training
    upscaled = create_upscaler(loaded, "cpu").upscale(smooth_photo(9, 20))
    assert upscaled.shape == (80, 80, 3)
    assert list((tmp_path / "run" / "validation").glob("*.png"))


def test_a_run_folder_is_not_reused_without_resume(photos, tmp_path):
    run_training(dataclasses.replace(TINY, steps=1), photos, tmp_path / "run")
    with pytest.raises(SettingsError, match="--resume"):
        run_training(TINY, photos, tmp_path / "run")
    with pytest.raises(SettingsError, match="channels"):
        run_training(dataclasses.replace(TINY, channels=4), photos, tmp_path / "run", resume=True)


def test_whole_photo_validation_sets_up_without_warnings(photos, tmp_path):
    settings = dataclasses.replace(TINY, validation_crop=0)
    split = split_photos(find_images(photos), settings.holdout, settings.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = Trainer(settings, split, tmp_path, print)
    assert all(hr.shape[:2] == (lr.shape[0] * 4, lr.shape[1] * 4) for hr, lr in trainer.validation_images)


def test_a_resumed_run_may_move_its_learning_rate_drop(photos, tmp_path):
    run_training(dataclasses.replace(TINY, steps=2), photos, tmp_path / "run")
    extended = dataclasses.replace(TINY, steps=3, lr_drop_step=2)
    run_training(extended, photos, tmp_path / "run", resume=True)
    trainer = Trainer(extended, split_photos(find_images(photos), TINY.holdout, TINY.seed), tmp_path / "run", print)
    trainer.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert trainer.step == 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(TINY.learning_rate / 10)


def test_unreadable_photos_are_skipped_with_a_warning(photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    Image.fromarray(smooth_photo(3, 8)).save(photos / "tiny.png")
    warnings: list[str] = []
    sampler = CropSampler(find_images(photos), 16, 0, warnings.append)
    assert len(sampler.images) == 6
    assert any("broken.jpg" in warning for warning in warnings) and any("tiny.png" in warning for warning in warnings)
    hr, lr = sampler.sample(5, np.random.default_rng(0))
    assert hr.shape == (5, 3, 16, 16) and 0 <= hr.min() and hr.max() <= 1
    torch.testing.assert_close(lr, bicubic_downscale(hr, 4))


def test_paired_folders_give_aligned_crops_and_train(photos, tmp_path):
    low = tmp_path / "low"
    for path in find_images(photos):
        target = low / path.relative_to(photos).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((16, 16), Image.Resampling.BOX).save(target)
    Image.fromarray(smooth_photo(7)).save(photos / "unpaired.png")
    warnings: list[str] = []
    pairs = find_pairs(photos, low, warnings.append)
    assert len(pairs) == 6 and any("unpaired.png" in warning for warning in warnings)
    sampler = CropSampler(pairs, 16, 0, warnings.append, scale=4)
    hr, lr = sampler.sample(8, np.random.default_rng(1))
    # The LR crop is the BOX-downscaled HR crop: aligned, flipped and rotated together.
    torch.testing.assert_close(lr, torch.nn.functional.avg_pool2d(hr, 4), atol=2 / 255, rtol=0)
    settings = dataclasses.replace(TINY, lr_dir=str(low), steps=2)
    result = run_training(settings, photos, tmp_path / "run")
    assert load_model(result.model).info.training["steps"] == "2"


def test_pairs_of_the_wrong_size_are_skipped(photos, tmp_path):
    low = tmp_path / "low"
    low.mkdir()
    for path in find_images(photos):
        Image.open(path).resize((20, 16)).save(low / f"{path.stem}.png")
    warnings: list[str] = []
    with pytest.raises(ImageReadError):
        CropSampler(find_pairs(photos, low, warnings.append), 16, 0, warnings.append, scale=4)
    assert any("is not 1/4 of" in warning for warning in warnings)


def test_split_is_reproducible_and_disjoint(photos):
    images = find_images(photos)
    first, second = split_photos(images, 2, seed=3), split_photos(images, 2, seed=3)
    assert first == second and len(first.validation) == 2
    assert not set(first.training) & set(first.validation)


def test_downscale_matches_the_evaluation_degradation():
    hr = torch.rand(2, 3, 32, 32)
    lr = bicubic_downscale(hr, 4)
    assert lr.shape == (2, 3, 8, 8) and 0 <= lr.min() and lr.max() <= 1
    flat = torch.full((1, 3, 16, 16), 0.25)
    torch.testing.assert_close(bicubic_downscale(flat, 4), torch.full((1, 3, 4, 4), 0.25))


def test_metrics_on_known_images():
    image = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    assert psnr_y(image, image, 4) == float("inf")
    assert ssim_y(image, image, 4) == pytest.approx(1.0)
    brighter = np.clip(image.astype(int) + 4, 0, 255).astype(np.uint8)
    assert 30 < psnr_y(brighter, image, 4) < 40
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    assert ssim_y(noisy, image, 4) < 0.9


def test_settings_are_strict(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text("steps = 10\nlearning_rate = 1\n")
    settings = load_settings(config, {"batch_size": 2, "seed": None})
    assert settings.steps == 10 and settings.learning_rate == 1.0 and settings.batch_size == 2
    config.write_text("stepz = 10\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings(config)
    config.write_text('steps = "many"\n')
    with pytest.raises(SettingsError, match="steps must be int"):
        load_settings(config)
    with pytest.raises(SettingsError, match="hr_crop"):
        load_settings(None, {"hr_crop": 30})
    assert set(TrainSettings.describe()) == {field.name for field in dataclasses.fields(TrainSettings)}
    round_trip = tmp_path / "saved.toml"
    round_trip.write_text(TINY.to_toml())
    assert load_settings(round_trip) == TINY


def test_train_command(photos, tmp_path):
    run = tmp_path / "run"
    arguments = [
        "train",
        str(photos),
        "--out",
        str(run),
        "--steps",
        "2",
        "--blocks",
        "1",
        "--channels",
        "8",
        "--holdout",
        "2",
        "--batch-size",
        "2",
    ]
    config = tmp_path / "tiny.toml"
    config.write_text("hr_crop = 16\nvalidation_crop = 32\nmax_side = 0\n")
    result = CliRunner().invoke(app, [*arguments, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (run / "generator.safetensors").is_file() and (run / "settings.toml").is_file()
    again = CliRunner().invoke(app, [*arguments, "--config", str(config)])
    assert again.exit_code == 1 and "--resume" in again.stderr
    # --resume alone takes the run's saved settings; --steps may extend its schedule.
    longer = [
        item if item != "2" or previous != "--steps" else "3" for previous, item in zip(["", *arguments], arguments)
    ]
    resumed = CliRunner().invoke(app, [*longer, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "steps 2→3" in resumed.output
