from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from srgan.engines import GeneratorConfig, SRGANGenerator, fold_batchnorm
from srgan.engines.arch import (
    BandedReconstruction,
    LowResolutionTail,
    banded_reconstruction,
    icnr_,
    low_resolution_tail,
    offset_major_shuffle,
)
from tests.helpers import tiny_generator


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_output_shape_follows_the_scale(scale, batchnorm):
    generator = SRGANGenerator(GeneratorConfig(scale=scale, blocks=2, channels=8, batchnorm=batchnorm)).eval()
    with torch.no_grad():
        result = generator(torch.rand(2, 3, 5, 7))
    assert result.shape == (2, 3, 5 * scale, 7 * scale)


def test_paper_generator_layout():
    generator = SRGANGenerator()
    assert generator.config == GeneratorConfig(scale=4, blocks=16, channels=64, batchnorm=True)
    assert generator.head[0].kernel_size == (9, 9) and generator.tail.kernel_size == (9, 9)
    assert len(generator.body) == 16 and len(generator.upsample) == 2
    assert isinstance(generator.body[0].bn1, torch.nn.BatchNorm2d)
    assert isinstance(generator.body_tail[1], torch.nn.BatchNorm2d)
    parameters = sum(p.numel() for p in generator.parameters())
    assert 1_500_000 < parameters < 1_600_000  # SRResNet's 1.5 M


def test_bn_free_variant_has_no_batchnorm():
    generator = SRGANGenerator(GeneratorConfig(batchnorm=False, blocks=2, channels=8))
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in generator.modules())


@pytest.mark.parametrize(
    "config", [GeneratorConfig(scale=4, blocks=3, channels=16), GeneratorConfig(scale=2, blocks=1, channels=4)]
)
def test_folding_batchnorm_keeps_the_function(config):
    generator = tiny_generator(config)
    folded = fold_batchnorm(generator)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    image = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(folded(image), generator(image), atol=1e-5, rtol=1e-4)
    assert generator.config.batchnorm, "the original is left as it was"


def test_icnr_makes_a_fresh_subpixel_stage_nearest_neighbour_like():
    stage = SRGANGenerator(GeneratorConfig(blocks=1, channels=8)).upsample[0]
    with torch.no_grad():
        result = stage(torch.rand(1, 8, 6, 6))
    blocks = result.unfold(2, 2, 2).unfold(3, 2, 2)  # 1×C×6×6×2×2: each 2×2 output block
    torch.testing.assert_close(blocks, blocks[..., :1, :1].expand_as(blocks))


def test_icnr_refuses_channel_counts_that_do_not_group():
    with pytest.raises(ValueError):
        icnr_(torch.empty(6, 3, 3, 3), upscale=2)


@pytest.mark.parametrize("bad", [dict(scale=3), dict(blocks=0), dict(channels=0)])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_offset_major_shuffle_computes_the_same_images(scale):
    generator = fold_batchnorm(tiny_generator(GeneratorConfig(scale=scale, blocks=2, channels=8)))
    with torch.no_grad():
        for stage in generator.upsample:  # distinct biases per channel, so a wrong order shows
            stage[0].bias.copy_(torch.randn_like(stage[0].bias))
    converted = offset_major_shuffle(generator)
    assert not any(isinstance(module, torch.nn.PixelShuffle) for module in converted.modules())
    image = torch.rand(2, 3, 11, 6)
    with torch.no_grad():
        torch.testing.assert_close(converted(image), generator(image), atol=1e-6, rtol=1e-5)
        channels_last = image.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(converted(channels_last), generator(image), atol=1e-6, rtol=1e-5)
    assert any(isinstance(module, torch.nn.PixelShuffle) for module in generator.modules())  # left as it was


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_the_low_resolution_tail_computes_the_same_images(scale):
    generator = fold_batchnorm(tiny_generator(GeneratorConfig(scale=scale, blocks=1, channels=8)))
    with torch.no_grad():
        for stage in generator.upsample:
            stage[2].weight.uniform_(0.0, 0.5)  # a PReLU whose channels differ, to check their order
    image = torch.rand(2, 3, 13, 10)
    converted = low_resolution_tail(generator)
    assert isinstance(converted.tail, LowResolutionTail) and not isinstance(generator.tail, LowResolutionTail)
    with torch.no_grad():
        torch.testing.assert_close(converted(image), generator(image), atol=1e-5, rtol=1e-4)
    wrapped = low_resolution_tail(nn.Sequential(generator))  # as inside a RangeAdapter
    assert isinstance(wrapped[0].tail, LowResolutionTail)
    assert low_resolution_tail(converted).tail.conv.weight.shape == converted.tail.conv.weight.shape


def random_tail_weights(generator: SRGANGenerator) -> SRGANGenerator:
    """Biases and PReLU slopes that differ per channel, so that a misplaced band row shows."""
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(0.0, 0.5)
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.uniform_(-0.2, 0.2)
    return generator


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("low_resolution", [True, False])
def test_banded_reconstruction_computes_the_same_images(scale, low_resolution):
    generator = random_tail_weights(fold_batchnorm(tiny_generator(GeneratorConfig(scale=scale, blocks=1, channels=8))))
    source = low_resolution_tail(generator) if low_resolution else generator
    image = torch.rand(2, 3, 37, 11)
    # 8 rows a band (the least it takes) over 37 rows: five bands, the last one short.
    banded = banded_reconstruction(source, band_pixels=8 * 11)
    assert isinstance(banded.tail, BandedReconstruction) and not len(banded.upsample)
    assert banded.tail.halo == 3 if scale == 4 else banded.tail.halo > 0
    with torch.inference_mode():
        torch.testing.assert_close(banded(image), generator(image), atol=1e-5, rtol=1e-4)
        # Too little context must show at the bands' edges: none at all, and at ×2 and ×4, where
        # the count is exact, one row too few (at ×8 the per-layer rounding up adds a row).
        for short in [0, banded.tail.halo - 1] if scale < 8 else [0]:
            narrow = banded_reconstruction(source, band_pixels=8 * 11)
            narrow.tail.halo = short
            assert not torch.allclose(narrow(image), generator(image), atol=1e-3)
    assert banded_reconstruction(banded).tail.halo == banded.tail.halo  # converting twice changes nothing
    assert isinstance(low_resolution_tail(banded).tail, BandedReconstruction)


def test_inference_mode_gives_what_autograd_gives():
    generator = random_tail_weights(tiny_generator(GeneratorConfig(scale=4, blocks=2, channels=8))).eval()
    image = torch.rand(1, 3, 9, 12, requires_grad=True)
    with torch.inference_mode():
        inferred = generator(image.detach())
    trained = generator(image)
    trained.sum().backward()  # the autograd path still adds out of place
    torch.testing.assert_close(inferred, trained.detach())
    assert image.grad is not None and torch.isfinite(image.grad).all()


def test_building_a_generator_on_the_meta_device_does_not_import_dynamo():
    code = (
        "import sys, torch\n"
        "from srgan.engines import GeneratorConfig, SRGANGenerator\n"
        "with torch.device('meta'):\n"
        "    SRGANGenerator(GeneratorConfig())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"  # importing it cost every model load a second
