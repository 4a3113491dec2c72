from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from srgan.engines import (
    Backend,
    Cancelled,
    DeviceOutOfMemory,
    GeneratorConfig,
    Precision,
    TileSettings,
    TorchBackend,
    Upscaler,
    fold_batchnorm,
)
from tests.helpers import TINY, random_image, receptive_radius, tiny_generator

CPU = torch.device("cpu")
NETWORK = fold_batchnorm(tiny_generator())
RADIUS = receptive_radius(TINY)
# Overlap at which every kept output pixel, blend bands included, sees its whole receptive
# field: the blend band (overlap // 4) eats into the context of the tile that fades in.
EXACT_OVERLAP = -(-RADIUS * 4 // 3)


def whole_image(network: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """Untiled reference: the whole H×W×3 image through the network at once."""
    peak = np.iinfo(pixels.dtype).max
    batch = torch.from_numpy(pixels.astype(np.float32) / peak).permute(2, 0, 1)[None]
    with torch.no_grad():
        result = network(batch)[0].clamp(0, 1).mul(peak).round()
    return result.permute(1, 2, 0).numpy().astype(pixels.dtype)


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


class NearestBackend(Backend):
    """Nearest-neighbour ×scale: every output pixel depends on one input pixel only."""

    name = "nearest"
    device = CPU

    def __init__(self, scale: int = 4) -> None:
        self.scale = scale
        self.batches: list[tuple[int, ...]] = []

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(tuple(batch.shape))
        return F.interpolate(batch, scale_factor=self.scale, mode="nearest")


@given(
    height=st.integers(1, 120),
    width=st.integers(1, 120),
    tile=st.integers(12, 64),
    overlap=st.integers(0, 2),
    batch=st.integers(1, 5),
)
def test_tiles_land_in_the_right_place(height, width, tile, overlap, batch):
    pixels = random_image(height, width, 3, seed=height * 1000 + width)
    result = Upscaler(NearestBackend(), TileSettings(tile, overlap, batch)).upscale(pixels)
    np.testing.assert_array_equal(result, pixels.repeat(4, axis=0).repeat(4, axis=1))


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    tile=st.integers(2 * EXACT_OVERLAP + 8, 80),
    extra_overlap=st.integers(0, 6),
    batch=st.integers(1, 3),
)
def test_tiled_matches_whole_image_inference(height, width, tile, extra_overlap, batch):
    overlap = min(EXACT_OVERLAP + extra_overlap, (tile - 8) // 2)
    pixels = random_image(height, width, 3, seed=height * 100 + width)
    backend = TorchBackend(NETWORK, 4, CPU, Precision.FP32)
    tiled = Upscaler(backend, TileSettings(tile, overlap, batch)).upscale(pixels)
    assert max_difference(tiled, whole_image(NETWORK, pixels)) <= 1


def test_the_default_overlap_matches_whole_image_on_the_paper_generator():
    """16 blocks, 64 channels, the default overlap: at most one level off, 8-bit."""
    network = fold_batchnorm(tiny_generator(GeneratorConfig(scale=4, blocks=16, channels=64)))
    pixels = random_image(24, 22, 3, seed=7).repeat(14, axis=0).repeat(15, axis=1)  # 336×330, flat patches and edges
    upscaler = Upscaler(TorchBackend(network, 4, CPU, Precision.FP32), TileSettings(tile_size=96))
    tiled = upscaler.upscale(pixels)
    assert len(upscaler_tiles(upscaler, pixels)) >= 9
    assert max_difference(tiled, whole_image(network, pixels)) <= 1


def test_default_cpu_tiles_run_their_sub_pixel_stages_in_bands_and_match_whole_image():
    from srgan.engines.arch import BandedReconstruction

    backend = TorchBackend(NETWORK, 4, CPU, Precision.FP32)
    assert backend.preferred_tile_size == 384
    assert any(isinstance(module, BandedReconstruction) for module in backend.network.modules())
    pixels = random_image(43, 40, 3, seed=8).repeat(10, axis=0).repeat(10, axis=1)  # 430×400: 2×2 tiles of 384
    upscaler = Upscaler(backend)
    assert len(upscaler_tiles(upscaler, pixels)) == 4  # each of them in bands of 42 rows
    assert max_difference(upscaler.upscale(pixels), whole_image(NETWORK, pixels)) <= 1


def upscaler_tiles(upscaler: Upscaler, pixels: np.ndarray) -> list:
    from srgan.engines.tiling import plan_tiles

    settings = upscaler.resolved_settings(*pixels.shape[:2])
    return plan_tiles(pixels.shape[0], pixels.shape[1], (settings.tile_size, settings.tile_size), settings.overlap)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (3, 5), (33, 17)])
def test_tiny_and_odd_sizes(shape):
    pixels = random_image(*shape, 3)
    tiled = Upscaler(TorchBackend(NETWORK, 4, CPU, Precision.FP32), TileSettings(24, 2)).upscale(pixels)
    assert tiled.shape == (shape[0] * 4, shape[1] * 4, 3)
    whole = whole_image(NETWORK, pixels)
    if max(shape) <= 24:  # one tile: exactly the whole-image computation
        assert max_difference(tiled, whole) <= 1


def test_gray_stays_gray_and_is_the_mean_of_the_colour_result():
    gray = random_image(20, 30, 1)
    upscaler = Upscaler(TorchBackend(NETWORK, 4, CPU, Precision.FP32))
    result = upscaler.upscale(gray[:, :, 0])
    assert result.shape == (80, 120)
    colour = whole_image(NETWORK, np.repeat(gray, 3, axis=2)).astype(np.float64)
    assert np.abs(result - colour.mean(axis=2)).max() <= 1.0
    assert upscaler.upscale(gray).shape == (80, 120, 1)


def test_alpha_is_upscaled_through_the_network():
    pixels = random_image(20, 24, 4, seed=3)
    result = Upscaler(TorchBackend(NETWORK, 4, CPU, Precision.FP32)).upscale(pixels)
    assert result.shape == (80, 96, 4)
    assert max_difference(result[:, :, :3], whole_image(NETWORK, np.ascontiguousarray(pixels[:, :, :3]))) <= 1
    alpha_as_gray = whole_image(NETWORK, np.repeat(pixels[:, :, 3:], 3, axis=2)).astype(np.float64).mean(axis=2)
    assert np.abs(result[:, :, 3] - alpha_as_gray).max() <= 1.0


@pytest.mark.parametrize("channels", [2, 4])
def test_constant_alpha_is_kept_exactly(channels):
    pixels = random_image(10, 12, channels)
    pixels[:, :, -1] = 77
    result = Upscaler(TorchBackend(NETWORK, 4, CPU, Precision.FP32)).upscale(pixels)
    assert (result[:, :, -1] == 77).all()


def test_sixteen_bit_in_sixteen_bit_out():
    pixels = random_image(18, 21, 3, dtype=np.uint16)
    result = Upscaler(TorchBackend(NETWORK, 4, CPU, Precision.FP32), TileSettings(40, EXACT_OVERLAP)).upscale(pixels)
    assert result.dtype == np.uint16
    reference = whole_image(NETWORK, pixels)
    assert max_difference(result, reference) <= 2  # of 65535
    assert len(np.unique(result)) > 1000, "the output uses the 16-bit range, not 8-bit steps"


def test_progress_reaches_the_total_and_cancel_stops():
    pixels = random_image(60, 60, 4)
    calls: list[tuple[int, int]] = []
    Upscaler(NearestBackend(), TileSettings(24, 2)).upscale(
        pixels, progress=lambda done, total: calls.append((done, total))
    )
    totals = {total for _, total in calls}
    assert len(totals) == 1 and calls[-1][0] == calls[-1][1] == totals.pop()
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    cancel = threading.Event()

    def cancel_after_first(done: int, total: int) -> None:
        cancel.set()

    with pytest.raises(Cancelled):
        Upscaler(NearestBackend(), TileSettings(24, 2)).upscale(pixels, progress=cancel_after_first, cancel=cancel)


class FixedShapeBackend(TorchBackend):
    """A real network behind an engine-style contract: one tile shape, one batch size."""

    def __init__(self, shape: tuple[int, int], batch: int) -> None:
        super().__init__(NETWORK, 4, CPU)
        self.fixed_tile_shape, self.fixed_batch = shape, batch

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        assert tuple(batch.shape) == (self.fixed_batch, 3, *self.fixed_tile_shape), batch.shape
        return super()._infer(batch)


def test_fixed_shape_engines_get_padded_tiles_and_full_batches():
    pixels = random_image(70, 90, 3, seed=5)
    result = Upscaler(FixedShapeBackend((40, 48), 3), TileSettings(overlap=EXACT_OVERLAP)).upscale(pixels)
    assert max_difference(result, whole_image(NETWORK, pixels)) <= 1
    small = random_image(30, 36, 3)
    padded = Upscaler(FixedShapeBackend((40, 48), 2), TileSettings(overlap=EXACT_OVERLAP)).upscale(small)
    assert padded.shape == (120, 144, 3)
    # Replicated edges stand in for the network's zero padding at the bottom and right only;
    # pixels farther than the receptive field from those edges are exact.
    difference = np.abs(padded.astype(int) - whole_image(NETWORK, small))
    assert difference[: (30 - RADIUS) * 4, : (36 - RADIUS) * 4].max() <= 1


class SmallMemoryBackend(TorchBackend):
    """Runs out of memory, as a GPU would, on tiles larger than `limit` pixels a side."""

    def __init__(self, limit: int) -> None:
        super().__init__(NETWORK, 4, CPU)
        self.limit = limit
        self.attempts: list[int] = []

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        self.attempts.append(max(batch.shape[2:]))
        if max(batch.shape[2:]) > self.limit:
            raise DeviceOutOfMemory("simulated: batch too large")
        return super()._infer(batch)


def test_out_of_memory_halves_the_tile_and_retries():
    pixels = random_image(100, 100, 3, seed=9)
    backend = SmallMemoryBackend(limit=50)
    result = Upscaler(backend, TileSettings(tile_size=160, overlap=EXACT_OVERLAP)).upscale(pixels)
    assert backend.attempts[0] == 100 and max(backend.attempts[-4:]) <= 50
    assert max_difference(result, whole_image(NETWORK, pixels)) <= 1


def test_out_of_memory_at_the_smallest_tile_is_raised():
    with pytest.raises(DeviceOutOfMemory):
        Upscaler(SmallMemoryBackend(limit=10), TileSettings(tile_size=64, overlap=4)).upscale(random_image(80, 80, 3))


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4, 3), np.float32),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros(4, np.uint8),
    ],
)
def test_unsupported_arrays_are_refused(pixels):
    with pytest.raises(ValueError):
        Upscaler(NearestBackend()).upscale(pixels)


def test_settings_that_leave_no_core_are_refused():
    with pytest.raises(ValueError, match="tile size"):
        TileSettings(tile_size=40, overlap=17)


@pytest.mark.parametrize(("channels", "dtype"), [(4, np.uint8), (1, np.uint16), (2, np.uint8), (3, np.uint16)])
def test_device_assembly_matches_host_assembly(monkeypatch, channels, dtype):
    """The CUDA path (tiles cut, blended and written on the device) run on the CPU against the host path."""
    from srgan.engines.upscaler import _DeviceCanvas

    pixels = random_image(70, 90, channels, dtype=dtype, seed=5)
    backend = TorchBackend(NETWORK, 4, CPU, Precision.FP32)
    upscaler = Upscaler(backend, TileSettings(tile_size=40, overlap=12, batch_size=3))
    on_host = upscaler.upscale(pixels)
    monkeypatch.setattr(_DeviceCanvas, "create", _DeviceCanvas.upload)
    on_device = upscaler.upscale(pixels)
    assert on_device.dtype == on_host.dtype and on_device.shape == on_host.shape
    # Same rounding in both; float32 against float64 blend weights may flip a rare half.
    assert max_difference(on_device, on_host) <= 1
    assert np.mean(on_device != on_host) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("channels", "dtype"), [(4, np.uint8), (1, np.uint16)])
def test_cuda_device_assembly_matches_host_assembly(monkeypatch, channels, dtype):
    from srgan.engines.upscaler import _DeviceCanvas

    pixels = random_image(300, 260, channels, dtype=dtype, seed=6)
    backend = TorchBackend(fold_batchnorm(tiny_generator()), 4, torch.device("cuda"))
    upscaler = Upscaler(backend, TileSettings(tile_size=128, overlap=16, batch_size=2))
    on_device = upscaler.upscale(pixels)
    monkeypatch.setattr(_DeviceCanvas, "create", lambda *_: None)
    on_host = upscaler.upscale(pixels)
    assert max_difference(on_device, on_host) <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_cuda_matches_cpu(precision):
    from srgan.engines import Precision

    pixels = random_image(150, 170, 3)
    expected = Upscaler(TorchBackend(fold_batchnorm(tiny_generator()), 4, CPU, Precision.FP32)).upscale(pixels)
    cuda = TorchBackend(fold_batchnorm(tiny_generator()), 4, torch.device("cuda"), Precision(precision))
    result = Upscaler(cuda, TileSettings(tile_size=64, overlap=EXACT_OVERLAP, batch_size=4)).upscale(pixels)
    tolerance = {"fp32": 1, "fp16": 3, "bf16": 8}[precision]
    assert max_difference(result, expected) <= tolerance


def test_freed_memory_is_handed_back_after_large_outputs_only(monkeypatch):
    import srgan.engines.upscaler as upscaler_module

    calls = []
    monkeypatch.setattr(upscaler_module, "return_freed_memory", lambda: calls.append(True))
    monkeypatch.setattr(upscaler_module, "RETURN_MEMORY_AFTER_BYTES", 32 * 32 * 16 * 3)
    upscaler = Upscaler(NearestBackend(), TileSettings(16, 2))
    upscaler.upscale(random_image(31, 32, 3))
    assert not calls  # one row short of the threshold
    upscaler.upscale(random_image(32, 32, 3))
    assert calls == [True]


def test_other_architectures_keep_small_cpu_tiles():
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.PixelShuffle(4))
    assert TorchBackend(plain, 4, CPU, Precision.FP32).preferred_tile_size == 160  # no bands to bound it
    assert TorchBackend(NETWORK, 4, CPU, Precision.FP32).preferred_tile_size == 384
