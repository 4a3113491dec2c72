"""SRGAN generator architectures (Ledig et al., 2017) and their inference form.

The training form has BatchNorm after the convolutions of every residual block and after the
convolution that closes the residual trunk. For inference those BatchNorm layers are folded
into the convolutions in front of them, which gives exactly the BN-free variant's structure:
inference always runs a BN-free network.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

SUPPORTED_SCALES = (2, 4, 8)
# The largest generator a model file may describe. Published SRGAN/SRResNet generators use 16
# blocks of 64 channels (Ledig et al.; BasicSR's MSRResNet); EDSR, the widest residual trunk of
# this shape, uses 32 blocks of 256. At these limits the weights take 0.3 GB in float32, so a
# hostile file cannot make loading allocate more than that.
MAX_BLOCKS = 64
MAX_CHANNELS = 256


@dataclass(frozen=True)
class GeneratorConfig:
    """The shape of an SRGAN generator.

    scale: upscaling factor, 2, 4 or 8 (one ×2 sub-pixel stage per factor of two).
    blocks: number of residual blocks in the trunk (the paper uses 16), at most MAX_BLOCKS.
    channels: feature channels in the trunk (the paper uses 64), at most MAX_CHANNELS.
    batchnorm: True for the paper's generator, False for the BN-free variant.
    """

    scale: int = 4
    blocks: int = 16
    channels: int = 64
    batchnorm: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, not {self.scale}")
        if not 1 <= self.blocks <= MAX_BLOCKS or not 1 <= self.channels <= MAX_CHANNELS:
            raise ValueError(
                f"blocks must be 1 to {MAX_BLOCKS} and channels 1 to {MAX_CHANNELS},"
                f" not {self.blocks} and {self.channels}"
            )

    @property
    def upsample_stages(self) -> int:
        return int(math.log2(self.scale))


class ResidualBlock(nn.Module):
    """conv-(BN)-PReLU-conv-(BN) with an identity skip."""

    def __init__(self, channels: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.act(self.bn1(self.conv1(features)))))
        if torch.is_inference_mode_enabled():
            return residual.add_(features)  # one feature map less at the peak of a large tile
        return features + residual


class SRGANGenerator(nn.Module):
    """The SRGAN generator: N×3×H×W in [0, 1] → N×3×(scale·H)×(scale·W), nominally [0, 1].

    The output is not clamped; callers clamp after inference, training losses see it raw.
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        width, bn = config.channels, config.batchnorm
        self.head = nn.Sequential(nn.Conv2d(3, width, 9, padding=4), nn.PReLU(width))
        self.body = nn.Sequential(*(ResidualBlock(width, bn) for _ in range(config.blocks)))
        self.body_tail = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=not bn),
            nn.BatchNorm2d(width) if bn else nn.Identity(),
        )
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(width, width * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width))
                for _ in range(config.upsample_stages)
            )
        )
        self.tail = nn.Conv2d(width, 3, 9, padding=4)
        for stage in self.upsample:
            icnr_(stage[0].weight, upscale=2)
            nn.init.zeros_(stage[0].bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.head(image)
        if torch.is_inference_mode_enabled():
            features = self.body_tail(self.body(features)).add_(features)
        else:
            features = features + self.body_tail(self.body(features))
        return self.tail(self.upsample(features))


class DepthToSpace(nn.Module):
    """PixelShuffle for input channels ordered (row offset, column offset, channel).

    nn.PixelShuffle takes them as (channel, row offset, column offset): in channels_last memory
    each output pixel then gathers its channels at a stride of factor², which compiled CPU
    kernels do element by element. With the offsets outermost, each output pixel copies one
    contiguous run of channels.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        factor = self.factor
        out_channels = channels // (factor * factor)
        spread = features.view(batch, factor, factor, out_channels, height, width).permute(0, 3, 4, 1, 5, 2)
        return spread.reshape(batch, out_channels, height * factor, width * factor)


@torch.no_grad()
def offset_major_shuffle(generator: SRGANGenerator) -> SRGANGenerator:
    """A copy of `generator` that computes the same images with `DepthToSpace` sub-pixel stages.

    Each stage's convolution gets its output channels reordered to match, so the outputs are
    identical. Made for compiled engines: in eager mode nn.PixelShuffle is the faster one.
    """
    converted = copy.deepcopy(generator)
    for stage in converted.upsample:
        if len(stage) < 2:
            continue  # a last stage whose shuffle `low_resolution_tail` moved into the tail
        conv, shuffle = stage[0], stage[1]
        factor = shuffle.upscale_factor
        channels = conv.out_channels // (factor * factor)
        order = torch.arange(conv.out_channels).view(channels, factor * factor).t().reshape(-1)
        conv.weight.copy_(conv.weight[order])
        conv.bias.copy_(conv.bias[order])
        stage[1] = DepthToSpace(factor)
    return converted


class LowResolutionTail(nn.Module):
    """The last ×2 stage's PReLU and the 9×9 tail, computed on the grid before the last shuffle.

    The tail has 3 output channels, so on a CPU a 16-lane vector unit has little to fill and the
    convolution at full output resolution took a third of a tile's time. A 9×9 convolution over a
    ×2 pixel shuffle is a 5×5 convolution on the grid before the shuffle, with 4·C input channels
    and 3·4 output channels (one per colour and output phase), followed by a shuffle of 12 channels
    to 3; PReLU is per channel, so it commutes with the shuffle given its weights repeated.
    """

    def __init__(self, prelu: nn.PReLU, tail: nn.Conv2d, factor: int = 2) -> None:
        super().__init__()
        channels, out_channels = tail.in_channels, tail.out_channels
        phases = factor * factor
        self.factor = factor
        self.act = nn.PReLU(channels * phases)
        self.conv = nn.Conv2d(channels * phases, out_channels * phases, 5, padding=2)
        with torch.no_grad():
            self.act.weight.copy_(prelu.weight.detach().repeat_interleave(phases))
            self.conv.weight.copy_(_phase_kernel(tail.weight.detach(), factor))
            self.conv.bias.copy_(tail.bias.detach().repeat_interleave(phases))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.conv(self.act(features)), self.factor)


def _phase_kernel(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """The 5×5 kernel on the unshuffled grid that a 9×9 kernel on the shuffled grid equals.

    Output channel (o, r, s) makes output phase (r, s) of colour o; input channel (c, i, j) holds
    phase (i, j) of feature c, as nn.PixelShuffle orders both. Tap (a, b) of the new kernel reads
    shuffled offset (factor·(a-2) + i - r, factor·(b-2) + j - s), zero where that leaves the 9×9.
    """
    out_channels, channels, size, _ = weight.shape
    radius, taps = size // 2, 5
    kernel = weight.new_zeros(out_channels, factor, factor, channels, factor, factor, taps, taps)
    for r, s, i, j in itertools.product(range(factor), repeat=4):
        for a, b in itertools.product(range(taps), repeat=2):
            u, v = factor * (a - taps // 2) + i - r, factor * (b - taps // 2) + j - s
            if abs(u) <= radius and abs(v) <= radius:
                kernel[:, r, s, :, i, j, a, b] = weight[:, :, u + radius, v + radius]
    return kernel.reshape(out_channels * factor * factor, channels * factor * factor, taps, taps)


@torch.no_grad()
def low_resolution_tail(network: nn.Module) -> nn.Module:
    """A copy of `network` in which every `SRGANGenerator` (itself or a wrapped one) computes its
    last ×2 stage's PReLU and its tail through `LowResolutionTail`: the same images up to float
    rounding; that part ran 2.8× faster on the development CPU, fp32 and bf16 alike. Other modules
    are copied as they are.
    """
    converted = copy.deepcopy(network)
    generators = [module for module in converted.modules() if isinstance(module, SRGANGenerator)]
    for generator in generators:
        if not len(generator.upsample):
            continue  # its stages were moved into a BandedReconstruction
        last = generator.upsample[-1]
        shuffles_by_two = len(last) == 3 and isinstance(last[1], nn.PixelShuffle) and last[1].upscale_factor == 2
        if not shuffles_by_two or generator.tail.kernel_size != (9, 9):
            continue  # already converted, or not the paper's form
        generator.tail = LowResolutionTail(last[2], generator.tail)
        generator.upsample[-1] = nn.Sequential(last[0])
    return converted


class BandedReconstruction(nn.Module):
    """A generator's sub-pixel stages and tail, run over bands of rows of the trunk's features.

    Per input pixel, the widest map of those stages (4·C channels at twice the resolution) holds
    16 times what a trunk map holds, so computing them for a whole tile at once is what bounds a
    tile's memory. They read only `halo` input rows on either side of an output row, so bands
    with that margin of context give the same pixels while holding about `band_pixels` input
    pixels at a time: tiles can grow, and less of each tile is spent on overlap.
    """

    def __init__(self, upsample: nn.Module, tail: nn.Module, halo: int, band_pixels: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.tail = tail
        self.halo = halo
        self.band_pixels = band_pixels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[2:]
        # At least four times the margin a band, so that wide tiles do not spend most of a band
        # on context; a wider tile than band_pixels allows then holds more than band_pixels.
        rows = max(4 * self.halo, 8, self.band_pixels // max(width, 1))
        if rows >= height:
            return self.tail(self.upsample(features))
        output = None
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            first, last = max(0, top - self.halo), min(height, bottom + self.halo)
            band = self.tail(self.upsample(features[:, :, first:last]))
            scale = band.shape[2] // (last - first)
            if output is None:
                shape = (band.shape[0], band.shape[1], height * scale, width * scale)
                output = torch.empty(shape, dtype=band.dtype, device=band.device, memory_format=torch.channels_last)
            output[:, :, top * scale : bottom * scale] = band[:, :, (top - first) * scale : (bottom - first) * scale]
        return output


def _context_rows(modules: nn.Module) -> int:
    """Input rows of context that `modules` (sub-pixel stages, then a tail) read on either side.

    Each convolution of radius r that runs on a grid g times finer than the input reads
    ceil(r / g) input rows further; pixel shuffles make the grid finer.
    """
    rows, grid = 0, 1
    for module in modules.modules():
        if isinstance(module, nn.Conv2d):
            rows += math.ceil((module.kernel_size[0] // 2) / grid)
        elif isinstance(module, (nn.PixelShuffle, DepthToSpace)):
            grid *= module.upscale_factor if isinstance(module, nn.PixelShuffle) else module.factor
        elif isinstance(module, LowResolutionTail):
            rows += math.ceil((module.conv.kernel_size[0] // 2) / grid)
            return rows  # its convolution runs before its own shuffle, and nothing follows
    return rows


@torch.no_grad()
def banded_reconstruction(network: nn.Module, band_pixels: int = 16384) -> nn.Module:
    """A copy of `network` in which every `SRGANGenerator` runs its sub-pixel stages and tail
    through `BandedReconstruction` (same images; at most `band_pixels` input pixels of those
    stages at once). Other modules are copied as they are.
    """
    converted = copy.deepcopy(network)
    for generator in [module for module in converted.modules() if isinstance(module, SRGANGenerator)]:
        if isinstance(generator.tail, BandedReconstruction):
            continue
        stages = nn.Sequential(generator.upsample, generator.tail)
        generator.tail = BandedReconstruction(generator.upsample, generator.tail, _context_rows(stages), band_pixels)
        generator.upsample = nn.Sequential()
    return converted


@torch.no_grad()
def icnr_(weight: torch.Tensor, upscale: int) -> torch.Tensor:
    """Initialise a sub-pixel convolution's weight in place with ICNR (Aitken et al., 2017).

    Every group of upscale² output channels that PixelShuffle spreads over one output block
    gets the same kernel, so a freshly initialised stage behaves like nearest-neighbour
    upsampling of a normal convolution and shows no checkerboard (give the bias equal values
    per group too, e.g. zeros).
    """
    out_channels = weight.shape[0]
    groups = upscale * upscale
    if out_channels % groups:
        raise ValueError(f"{out_channels} output channels do not divide into {groups} groups")
    if weight.is_meta:
        # Nothing to fill; and random fills on the meta device import torch._dynamo, which
        # took a second and 95 MB of every `srgan upscale` that checked a model's shapes.
        return weight
    base = torch.empty((out_channels // groups, *weight.shape[1:]), dtype=weight.dtype)
    nn.init.kaiming_normal_(base)
    weight.copy_(base.repeat_interleave(groups, dim=0))
    return weight


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution with the BatchNorm after it folded in."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
    if not isinstance(bn, nn.BatchNorm2d):
        return weight.clone(), bias.clone()
    gain = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return weight * gain[:, None, None, None], (bias - bn.running_mean.detach()) * gain + bn.bias.detach()


@torch.no_grad()
def fold_batchnorm(generator: SRGANGenerator) -> SRGANGenerator:
    """A BN-free generator that computes what `generator` computes in eval mode.

    Returns a new module in eval mode (float32, CPU); `generator` is left unchanged.
    """
    folded = SRGANGenerator(replace(generator.config, batchnorm=False)).eval()
    source = {name: module for name, module in generator.named_modules()}
    for name, module in folded.named_modules():
        if isinstance(module, nn.Conv2d):
            bn_name = _bn_after(name)
            weight, bias = _fold_conv_bn(source[name], source.get(bn_name, nn.Identity()))
            module.weight.copy_(weight)
            module.bias.copy_(bias)
        elif isinstance(module, nn.PReLU):
            module.weight.copy_(source[name].weight.detach())
    return folded


def _bn_after(conv_name: str) -> str:
    """The name the BatchNorm following a convolution has in the training form."""
    if conv_name.endswith(".conv1") or conv_name.endswith(".conv2"):
        return conv_name[:-5] + "bn" + conv_name[-1]
    if conv_name == "body_tail.0":
        return "body_tail.1"
    return ""
