"""`Upscaler`: the one tiled-inference core that every front end uses."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .backends import Backend, return_freed_memory
from .errors import Cancelled, DeviceOutOfMemory
from .tiling import SizeRequirements, Tile, Tiling, axis_weights, blend_weights, plan_tiles

ProgressCallback = Callable[[int, int], None]
"""Called with (tiles done, tiles in all) after every batch."""

# Outputs from this size up are followed by handing freed memory back (`return_freed_memory`):
# their encoding needs buffers as large again, and the page faults it costs the next image's
# tiles, a few tenths of a second, are small next to the minute such an image takes on a CPU.
RETURN_MEMORY_AFTER_BYTES = 64 << 20


@dataclass(frozen=True)
class TileSettings:
    """How images are cut into tiles.

    tile_size: side of the square window the network sees, in input pixels; None takes the
        backend's preferred size (on a CPU bounded by RSS, larger on a GPU), or the whole image
        for models whose tiling is discouraged. It is rounded down to what the model's size
        requirements allow.
    overlap: pixels of image context read on each side of a tile's core; None takes the
        model's (from its architecture's receptive field, `ModelGeometry.overlap`).
    batch_size: tiles run through the backend at once.
    min_tile_size: smallest tile the out-of-memory retry halves down to.
    """

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 1
    min_tile_size: int = 32

    def __post_init__(self) -> None:
        if self.overlap is None:
            if self.tile_size is not None and self.tile_size < 16:
                raise ValueError(f"tile size {self.tile_size} is too small: use at least 16")
        elif self.overlap < 0 or (self.tile_size is not None and self.tile_size - 2 * self.overlap < 8):
            raise ValueError(
                f"tile size {self.tile_size} leaves too little after {self.overlap} pixels of overlap"
                " on each side: use a tile size of at least 2 × overlap + 8"
            )
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")


@dataclass(frozen=True)
class _Pass:
    """One run of the tiler over a set of channels of the image."""

    source: np.ndarray  # H×W×k view of the input, k = 3 (colour) or 1 (gray or alpha)
    target: np.ndarray  # (s·H)×(s·W)×k view of the output


class Upscaler:
    """Upscales whole images of any size through a `Backend`, one tile batch at a time.

    Not thread-safe for concurrent calls on one instance (they would share the device); holds
    no per-image state between calls.
    """

    def __init__(self, backend: Backend, settings: TileSettings = TileSettings()) -> None:
        self.backend = backend
        self.settings = settings

    @property
    def scale(self) -> int:
        return self.backend.scale

    def upscale(
        self,
        pixels: np.ndarray,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """Upscale an image by `scale`.

        pixels: H×W (gray) or H×W×C with C = 1 (gray), 2 (gray, alpha), 3 (RGB) or 4 (RGBA);
        uint8 or uint16. Returns an array of the same dtype and layout, scale·H × scale·W.
        Alpha is run through the network as a gray image unless it is constant. A gray (1-channel)
        model upscales each colour channel on its own; an RGB model sees gray as equal R, G, B.
        Raises Cancelled when `cancel` is set, DeviceOutOfMemory when even the smallest tile
        does not fit, BackendError when the backend fails, ValueError for unsupported arrays.
        """
        image = _as_channels(pixels)
        height, width, channels = image.shape
        scale = self.scale
        output = np.empty((height * scale, width * scale, channels), dtype=image.dtype)
        if channels >= 3 and self.backend.geometry.channels == 1:
            passes = [_Pass(image[:, :, c : c + 1], output[:, :, c : c + 1]) for c in range(3)]
        else:
            passes = [
                _Pass(
                    image[:, :, :3] if channels >= 3 else image[:, :, :1],
                    output[:, :, :3] if channels >= 3 else output[:, :, :1],
                )
            ]
        if channels in (2, 4):
            alpha, alpha_out = image[:, :, -1:], output[:, :, -1:]
            if alpha.min() == alpha.max():
                alpha_out[...] = alpha[0, 0, 0]
            else:
                passes.append(_Pass(alpha, alpha_out))
        settings = self.resolved_settings(height, width)
        while True:
            try:
                self._run_passes(passes, settings, progress, cancel)
                break
            except DeviceOutOfMemory:
                # Every pixel is rewritten by the next attempt, in the same order, so the
                # partly written output needs no reset.
                half = self.backend.geometry.size_requirements.tile_size(settings.tile_size // 2)
                floor = max(settings.min_tile_size, 2 * settings.overlap + 8)
                if self.backend.fixed_tile_shape is not None or half < floor or half >= settings.tile_size:
                    raise
                settings = replace(settings, tile_size=half)
        if output.nbytes >= RETURN_MEMORY_AFTER_BYTES:
            return_freed_memory()
        return output.reshape(output.shape[:2]) if pixels.ndim == 2 else output

    def resolved_settings(self, height: int, width: int) -> TileSettings:
        """The settings with tile size and overlap resolved for this backend's model and this image."""
        geometry = self.backend.geometry
        settings = self.settings
        overlap = settings.overlap
        tile = settings.tile_size
        if tile is None:
            if geometry.tiling is Tiling.SUPPORTED:
                tile = max(self.backend.preferred_tile_size, 2 * (overlap or geometry.overlap) + 8)
            else:
                # The model wants global context: one window over the whole image, halved on
                # out-of-memory until it fits.
                tile = max(height, width, self.backend.preferred_tile_size)
        tile = geometry.size_requirements.tile_size(tile)
        if overlap is None:
            overlap = max(0, min(geometry.overlap, (tile - 8) // 2))
        return replace(settings, tile_size=tile, overlap=overlap)

    def _window(self, settings: TileSettings) -> tuple[int, int]:
        fixed = self.backend.fixed_tile_shape
        return fixed if fixed is not None else (settings.tile_size, settings.tile_size)

    def _run_passes(
        self,
        passes: Sequence[_Pass],
        settings: TileSettings,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        height, width = passes[0].source.shape[:2]
        fixed = self.backend.fixed_tile_shape is not None
        multiple = self.backend.geometry.size_requirements.multiple_of
        tiles = plan_tiles(height, width, self._window(settings), settings.overlap, not fixed, multiple)
        batch_size = self.backend.fixed_batch or settings.batch_size
        total, done = len(tiles) * len(passes), 0
        for image_pass in passes:
            canvas = _DeviceCanvas.create(image_pass, self.backend.device, self.scale)
            for start in range(0, len(tiles), batch_size):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("upscale cancelled")
                batch = tiles[start : start + batch_size]
                if canvas is not None:
                    windows = canvas.windows(batch)
                else:
                    windows = _host_windows(image_pass.source, batch, self.backend.device)
                upscaled = self._infer(windows, image_pass.source.dtype)
                if canvas is not None:
                    canvas.write(batch, upscaled)
                else:
                    integers = upscaled.to(torch.uint8 if image_pass.source.dtype == np.uint8 else torch.int32)
                    host = integers.permute(0, 2, 3, 1).cpu().numpy().astype(image_pass.source.dtype, copy=False)
                    for tile, tile_output in zip(batch, host):
                        _write_tile(image_pass.target, tile, tile_output, self.scale)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if canvas is not None:
                canvas.download(image_pass.target)

    @torch.inference_mode()
    def _infer(self, windows: torch.Tensor, dtype: np.dtype) -> torch.Tensor:
        """Run a batch of tile windows (N×k×h×w integers on the device) through the backend.

        Returns N×k×(s·h)×(s·w) float32 on the device, already rounded to the integer values
        of `dtype`, so that no per-tile conversion is left for the host.
        """
        backend = self.backend
        peak = float(np.iinfo(dtype).max)
        channels, rows, columns = windows.shape[1:]
        batch = windows.float().div_(peak).contiguous(memory_format=torch.channels_last)
        widen = channels == 1 and backend.geometry.channels == 3
        if widen:
            batch = batch.expand(-1, 3, -1, -1)
        batch = pad_to_requirements(batch, backend.geometry.size_requirements)
        padded = _pad_to_engine(batch, backend.fixed_tile_shape, backend.fixed_batch)
        result = backend.infer(padded)[: len(windows), :, : rows * backend.scale, : columns * backend.scale]
        if widen:
            result = result.float().mean(dim=1, keepdim=True)
        return result.float().clamp_(0.0, 1.0).mul_(peak).round_()


class _DeviceCanvas:
    """A pass's source and output held on a CUDA device while it is tiled.

    The source goes up once and the finished output comes down once; tiles are cut, blended
    and written on the device, so the host neither waits for nor converts individual tiles.
    """

    def __init__(self, source: torch.Tensor, output: torch.Tensor, scale: int) -> None:
        self.source = source  # k×H×W, uint8 or int32
        self.output = output  # (s·H)×(s·W)×k, same dtype
        self.scale = scale

    @classmethod
    def create(cls, image_pass: _Pass, device: torch.device, scale: int) -> _DeviceCanvas | None:
        """A canvas on `device`, or None off CUDA or where it would take over half the free memory."""
        if device.type != "cuda":
            return None
        height, width, channels = image_pass.source.shape
        itemsize = 1 if image_pass.source.dtype == np.uint8 else 4
        free, _ = torch.cuda.mem_get_info(device)
        if 2 * height * width * channels * scale * scale * itemsize > free:
            return None
        try:
            return cls.upload(image_pass, device, scale)
        except torch.OutOfMemoryError:
            return None

    @classmethod
    def upload(cls, image_pass: _Pass, device: torch.device, scale: int) -> _DeviceCanvas:
        """Copy a pass's source to `device` and allocate its output there."""
        source = image_pass.source
        height, width, channels = source.shape
        host = torch.from_numpy(np.require(source if source.dtype == np.uint8 else source.astype(np.int32), None, "CW"))
        if device.type == "cuda":
            host = host.pin_memory()
        uploaded = host.to(device, non_blocking=True)
        output = torch.empty((height * scale, width * scale, channels), dtype=uploaded.dtype, device=device)
        return cls(uploaded.permute(2, 0, 1), output, scale)

    def windows(self, tiles: Sequence[Tile]) -> torch.Tensor:
        return torch.stack(
            [self.source[:, t.y.window_start : t.y.window_end, t.x.window_start : t.x.window_end] for t in tiles]
        )

    def write(self, tiles: Sequence[Tile], upscaled: torch.Tensor) -> None:
        """Write each tile's output (k×h×w, rounded floats) over its region, blending as `_write_tile` does."""
        scale, device = self.scale, self.output.device
        for tile, tile_output in zip(tiles, upscaled):
            target_area, tile_area = _placement(tile, scale)
            fresh = tile_output[(slice(None), *tile_area)].permute(1, 2, 0)
            region = self.output[target_area]
            if tile.y.blend == 0 and tile.x.blend == 0:
                region.copy_(fresh)
                continue
            rows = torch.from_numpy(axis_weights(tile.y, scale)).to(device, non_blocking=True)
            columns = torch.from_numpy(axis_weights(tile.x, scale)).to(device, non_blocking=True)
            weights = (rows[:, None] * columns[None, :])[:, :, None]
            blended = fresh * weights + region.float() * (1.0 - weights)
            region.copy_(blended.round_())

    def download(self, target: np.ndarray) -> None:
        host = self.output.cpu().numpy()
        target[...] = host if host.dtype == target.dtype else host.astype(target.dtype)


def _host_windows(source: np.ndarray, tiles: Sequence[Tile], device: torch.device) -> torch.Tensor:
    """A batch of tile windows cut on the host, N×k×h×w on `device` (int32 for 16-bit sources)."""
    windows = np.stack([source[t.y.window_start : t.y.window_end, t.x.window_start : t.x.window_end] for t in tiles])
    batch = torch.from_numpy(windows.astype(np.int32) if source.dtype == np.uint16 else windows)
    return batch.to(device, non_blocking=True).permute(0, 3, 1, 2)


def _as_channels(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, not {pixels.dtype}")
    image = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or 0 in image.shape:
        raise ValueError(f"pixels must be H×W or H×W×C with C in 1..4, not shape {pixels.shape}")
    return image


def pad_to_requirements(batch: torch.Tensor, requirements: SizeRequirements) -> torch.Tensor:
    """Pad N×C×h×w windows at the bottom and right to sizes the network accepts.

    Mirrors the window's own pixels (as spandrel does for whole images, so a window that is the
    whole image gives exactly spandrel's result), replicating the edge for what reflection,
    which reaches at most size - 1 pixels, cannot cover. The caller crops the output.
    """
    rows, columns = batch.shape[2:]
    padded_rows, padded_columns = requirements.padded(rows, columns)
    pad_rows, pad_columns = padded_rows - rows, padded_columns - columns
    if not pad_rows and not pad_columns:
        return batch
    reflect_rows, reflect_columns = min(pad_rows, rows - 1), min(pad_columns, columns - 1)
    if reflect_rows or reflect_columns:
        batch = F.pad(batch, (0, reflect_columns, 0, reflect_rows), mode="reflect")
    if pad_rows - reflect_rows or pad_columns - reflect_columns:
        batch = F.pad(batch, (0, pad_columns - reflect_columns, 0, pad_rows - reflect_rows), mode="replicate")
    return batch


def _pad_to_engine(batch: torch.Tensor, tile_shape: tuple[int, int] | None, batch_size: int | None) -> torch.Tensor:
    """Pad a batch up to an engine's fixed tile shape (replicating edges) and batch size."""
    if tile_shape is not None:
        pad_rows, pad_columns = tile_shape[0] - batch.shape[2], tile_shape[1] - batch.shape[3]
        if pad_rows or pad_columns:
            batch = F.pad(batch, (0, pad_columns, 0, pad_rows), mode="replicate")
    if batch_size is not None and batch.shape[0] < batch_size:
        filler = batch[-1:].expand(batch_size - batch.shape[0], -1, -1, -1)
        batch = torch.cat([batch, filler])
    return batch


def _write_tile(target: np.ndarray, tile: Tile, tile_output: np.ndarray, scale: int) -> None:
    """Write a tile's output over its region of `target`, blending in its blend bands."""
    target_area, tile_area = _placement(tile, scale)
    fresh = tile_output[tile_area]
    region = target[target_area]
    if tile.y.blend == 0 and tile.x.blend == 0:
        region[...] = fresh
        return
    weights = blend_weights(tile, scale)
    blended = fresh * weights + region * (1.0 - weights)
    region[...] = np.rint(blended).astype(target.dtype)


def _placement(tile: Tile, scale: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Where a tile writes: (rows, columns) in the output image and in the tile's own output."""
    top, left = tile.y.write_start * scale, tile.x.write_start * scale
    bottom, right = tile.y.core_end * scale, tile.x.core_end * scale
    window_top, window_left = tile.y.window_start * scale, tile.x.window_start * scale
    return (
        (slice(top, bottom), slice(left, right)),
        (slice(top - window_top, bottom - window_top), slice(left - window_left, right - window_left)),
    )
