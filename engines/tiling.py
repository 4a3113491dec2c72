"""Tile geometry: pure arithmetic, no model calls.

Coordinates here are input pixels. Along each axis the image is cut into *cores* that cover it
exactly once. Each core is read with `overlap` pixels of real image context on both sides
(fewer at the image border, where the network's own zero padding matches whole-image
inference), inside a *window* of one fixed length, so that every tile of an image has the same
shape and tiles batch together. A core that follows another also rewrites a *blend* band of up
to overlap // 4 pixels in front of it, fading in over what the previous tile wrote, which hides
the small differences that remain at seams. Inside that band the new tile still has at least
overlap - blend pixels of context, so when that covers the network's receptive field the
tiled result equals whole-image inference up to rounding.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis, in input pixels; all ranges are half-open."""

    window_start: int
    window_end: int
    core_start: int
    core_end: int
    blend: int

    @property
    def write_start(self) -> int:
        """First pixel this tile writes: the blend band in front of the core."""
        return self.core_start - self.blend


@dataclass(frozen=True)
class Tile:
    """One tile: a window to run through the model and the part of its output to keep."""

    y: Span
    x: Span


def plan_axis(length: int, window: int, overlap: int, shrink: bool = True, multiple: int = 1) -> list[Span]:
    """Cut an axis of `length` pixels into spans whose windows all have one length.

    Uses the fewest tiles whose windows fit in `window`: edge cores need context on one side
    only, so they are `overlap` longer than the others. With `shrink`, the window is then cut
    down to what those cores need, so no pixel is computed that is not needed; without it
    (engines with a fixed input shape) every window is exactly `window` long, or `length` when
    the axis is shorter. multiple: shrunk windows are rounded up to a multiple of it (for
    networks that need one), never beyond `window`.
    Raises ValueError when the window leaves no core after the context on both sides.
    """
    if length < 1:
        raise ValueError(f"cannot tile an axis of length {length}")
    if overlap < 0 or window - 2 * overlap < 1:
        raise ValueError(f"a tile of {window} pixels with {overlap} pixels overlap has no core")
    if length <= window:
        return [Span(0, length, 0, length, 0)]
    count = math.ceil((length - 2 * overlap) / (window - 2 * overlap))
    original = window
    inner = [overlap + round(i * (length - 2 * overlap) / count) for i in range(1, count)]
    bounds = [0, *inner, length]
    if shrink:
        window = max(
            bounds[1] + overlap,
            length - bounds[-2] + overlap,
            *(end - start + 2 * overlap for start, end in zip(bounds[1:-2], bounds[2:-1])),
        )
        window = min(math.ceil(window / multiple) * multiple, original)
    spans = []
    for index in range(count):
        core_start, core_end = bounds[index], bounds[index + 1]
        window_start = min(max(core_start - overlap, 0), length - window)
        blend = 0
        if index > 0:
            blend = min(overlap // 4, core_start - window_start, core_start - bounds[index - 1])
        spans.append(Span(window_start, window_start + window, core_start, core_end, blend))
    return spans


def plan_tiles(
    height: int, width: int, window: tuple[int, int], overlap: int, shrink: bool = True, multiple: int = 1
) -> list[Tile]:
    """All tiles of a height×width image in raster order (the order blending relies on).

    window: (rows, columns) of a tile's largest window in input pixels; see `plan_axis` for
    `shrink`, `multiple` and for axes shorter than their window.
    """
    rows = plan_axis(height, window[0], overlap, shrink, multiple)
    columns = plan_axis(width, window[1], overlap, shrink, multiple)
    return [Tile(row, column) for row in rows for column in columns]


def blend_weights(tile: Tile, scale: int) -> np.ndarray:
    """Weights of a tile's output over its written region, shape (rows, columns, 1), float32.

    1 inside the core; inside the blend bands a linear fade-in from near 0 to near 1, the product
    of the two axes in the corner they share. The previous content gets 1 - weight.
    """
    rows = axis_weights(tile.y, scale)
    columns = axis_weights(tile.x, scale)
    return (rows[:, None] * columns[None, :])[:, :, None]


def axis_weights(span: Span, scale: int) -> np.ndarray:
    """One axis's factor of `blend_weights`: the fade over the blend band, then ones."""
    band = span.blend * scale
    core = (span.core_end - span.core_start) * scale
    fade = (np.arange(band, dtype=np.float32) + 0.5) / band if band else np.empty(0, np.float32)
    return np.concatenate([fade, np.ones(core, np.float32)])


class Tiling(str, enum.Enum):
    """How a model wants to be tiled (spandrel's `ModelTiling`).

    SUPPORTED: tiles of any size. DISCOURAGED: works tiled, but global context matters, so the
    core uses the largest tile memory allows. INTERNAL: the model tiles itself; same as
    DISCOURAGED here.
    """

    SUPPORTED = "supported"
    DISCOURAGED = "discouraged"
    INTERNAL = "internal"


@dataclass(frozen=True)
class SizeRequirements:
    """Input sizes a network accepts: each side at least `minimum`, a multiple of `multiple_of`, square if asked."""

    minimum: int = 0
    multiple_of: int = 1
    square: bool = False

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.multiple_of < 1:
            raise ValueError(f"invalid size requirements: minimum {self.minimum}, multiple_of {self.multiple_of}")

    @property
    def none(self) -> bool:
        return self.minimum <= 1 and self.multiple_of == 1 and not self.square

    def padded(self, rows: int, columns: int) -> tuple[int, int]:
        """The smallest (rows, columns) at least as large as the given ones that meet the requirements."""
        rows = _round_up(max(rows, self.minimum), self.multiple_of)
        columns = _round_up(max(columns, self.minimum), self.multiple_of)
        if self.square:
            rows = columns = max(rows, columns)
        return rows, columns

    def tile_size(self, requested: int) -> int:
        """A square tile side near `requested` needing no padding: rounded down to a multiple, at least the minimum."""
        side = max(requested // self.multiple_of * self.multiple_of, self.multiple_of)
        return max(side, _round_up(self.minimum, self.multiple_of))


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


@dataclass(frozen=True)
class ModelGeometry:
    """What the tiler must know about a network to cut, pad and blend tiles for it.

    scale: output pixels per input pixel along each side (1 for restoration models).
    channels: input and output channels: 3 (RGB) or 1 (gray; colour images go through per channel).
    size_requirements: window sizes the network accepts; the core pads windows to them.
    overlap: default context in input pixels around each tile, from the architecture's receptive field.
    tiling: whether the model wants small tiles or the largest that fit.
    """

    scale: int = 4
    channels: int = 3
    size_requirements: SizeRequirements = SizeRequirements()
    overlap: int = 16
    tiling: Tiling = Tiling.SUPPORTED
