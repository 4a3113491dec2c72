from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from srgan.engines import load_generator, load_model, save_model
from tests.helpers import tiny_generator
from tests.train.test_training import TINY, smooth_photo
from srgan.train.losses import discriminator_loss, generator_adversarial_loss
from srgan.train.networks import Discriminator, VGGFeatures, load_vgg19
from srgan.train.run import TrainingEvents, run_training
from srgan.train.settings import SettingsError, TrainSettings


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A VGG19 state dict in torchvision's layout, made here (random weights, real shapes)."""
    torch.manual_seed(0)
    state = {f"features.{key.split('.', 1)[1]}": value for key, value in VGGFeatures().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files carry the classifier too
    path = tmp_path_factory.mktemp("vgg") / "vgg19-local.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(5):
        Image.fromarray(smooth_photo(index, 96)).save(folder / f"p{index}.png")
    return folder


@pytest.fixture
def pretrained(tmp_path) -> Path:
    path = tmp_path / "pretrained.safetensors"
    save_model(path, tiny_generator())
    return path


def gan_settings(start: Path, vgg_file: Path, **changes) -> TrainSettings:
    """TINY in the gan stage, from the generator in `start`, with the test's small VGG."""
    return dataclasses.replace(TINY, stage="gan", init_generator=str(start), vgg_weights=str(vgg_file), **changes)


@pytest.mark.parametrize("adversarial", ["bce", "ragan", "wgan-gp"])
def test_gan_stage_runs_with_every_adversarial_loss(photos, pretrained, vgg_file, tmp_path, adversarial):
    settings = gan_settings(
        pretrained,
        vgg_file,
        adversarial=adversarial,
        hr_crop=32,
        steps=3,
        validate_every=3,
        pixel_weight=0.1,
    )
    seen: list[dict[str, float]] = []
    result = run_training(
        settings, photos, tmp_path / "run", events=TrainingEvents(stepped=lambda step, losses: seen.append(losses))
    )
    assert len(seen) == 3
    for losses in seen:
        assert {"discriminator", "content", "adversarial", "pixel", "total"} <= set(losses)
        assert all(math.isfinite(value) for value in losses.values())
    loaded = load_model(result.model)
    assert loaded.info.training["loss"] == f"vgg54+{adversarial}"


def test_gan_stage_starts_from_the_pretrained_generator(photos, pretrained, vgg_file, tmp_path):
    settings = gan_settings(
        pretrained,
        vgg_file,
        hr_crop=32,
        steps=1,
        learning_rate=0.0,
        ema_decay=0.0,
    )
    result = run_training(settings, photos, tmp_path / "run")
    trained, _ = load_generator(result.model)
    start, _ = load_generator(pretrained)
    # With a zero learning rate only BatchNorm's running statistics move; every weight is the start's.
    for (name, value), (_, expected) in zip(trained.named_parameters(), start.named_parameters()):
        torch.testing.assert_close(value, expected, msg=name)


def test_gan_stage_needs_a_pretrained_generator_of_the_same_shape(photos, vgg_file, tmp_path):
    with pytest.raises(SettingsError, match="init_generator"):
        dataclasses.replace(TINY, stage="gan")
    other = tmp_path / "other.safetensors"
    save_model(other, tiny_generator(dataclasses.replace(tiny_generator().config, channels=4)))
    settings = gan_settings(other, vgg_file, hr_crop=32)
    with pytest.raises(SettingsError, match="the settings ask for"):
        run_training(settings, photos, tmp_path / "run")


def test_vgg_weights_are_never_replaced_by_an_untrained_network(tmp_path, monkeypatch, vgg_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(SettingsError, match="--vgg-weights"):
        load_vgg19(None, allow_download=False)
    with pytest.raises(SettingsError, match="not found"):
        load_vgg19(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(SettingsError, match="VGG19 layout"):
        load_vgg19(wrong)
    loaded = load_vgg19(vgg_file)
    reference = torch.load(vgg_file, weights_only=True)
    torch.testing.assert_close(loaded.features[34].weight, reference["features.34.weight"])
    assert loaded.features[-1].__class__.__name__ == "ReLU" and len(loaded.features) == 36


def test_discriminator_and_losses_have_the_expected_shapes_and_signs():
    logits = Discriminator()(torch.rand(3, 3, 96, 96))
    assert logits.shape == (3,)
    real, fake = torch.tensor([5.0, 6.0]), torch.tensor([-5.0, -6.0])
    for kind in ("bce", "ragan"):
        assert discriminator_loss(kind, real, fake) < discriminator_loss(kind, fake, real)
        assert generator_adversarial_loss(kind, real, fake) > generator_adversarial_loss(kind, fake, real)
    assert discriminator_loss("wgan-gp", real, fake) < 0
    with pytest.raises(ValueError):
        discriminator_loss("hinge", real, fake)


def test_ddp_with_two_cpu_processes_through_torchrun(photos, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text(
        "hr_crop = 16\nvalidation_crop = 32\nmax_side = 0\nblocks = 1\nchannels = 8\nholdout = 2\n"
        'batch_size = 2\nsteps = 3\ndevice = "cpu"\n'
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "srgan.cli",
        "train",
        str(photos),
        "--out",
        str(run),
        "--config",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "generator.safetensors").is_file()
    assert load_model(run / "generator.safetensors").info.training["steps"] == "3"


def test_fp16_needs_cuda(photos, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    with pytest.raises(SettingsError, match="fp16 needs a CUDA device"):
        run_training(dataclasses.replace(TINY, precision="fp16", device="cpu"), photos, tmp_path / "run")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_gan_steps(photos, pretrained, vgg_file, tmp_path, precision):
    settings = gan_settings(
        pretrained,
        vgg_file,
        hr_crop=32,
        steps=3,
        device="cuda",
        precision=precision,
    )
    seen: list[dict[str, float]] = []
    run_training(
        settings, photos, tmp_path / "run", events=TrainingEvents(stepped=lambda step, losses: seen.append(losses))
    )
    assert all(math.isfinite(value) for losses in seen for value in losses.values())
