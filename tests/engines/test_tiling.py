from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from srgan.engines.tiling import Span, blend_weights, plan_axis, plan_tiles


@given(length=st.integers(1, 3000), window=st.integers(9, 600), overlap=st.integers(0, 64), shrink=st.booleans())
def test_cores_cover_the_axis_once_and_windows_hold_their_context(length, window, overlap, shrink):
    if window - 2 * overlap < 1:
        with pytest.raises(ValueError):
            plan_axis(length, window, overlap, shrink)
        return
    spans = plan_axis(length, window, overlap, shrink)
    assert spans[0].core_start == 0 and spans[-1].core_end == length
    for before, after in zip(spans, spans[1:]):
        assert before.core_end == after.core_start
    sizes = {span.window_end - span.window_start for span in spans}
    assert len(sizes) == 1, "every window of an axis has one length, so tiles batch"
    size = sizes.pop()
    assert size <= window
    if not shrink:
        assert size == min(window, length)
    for span in spans:
        assert 0 <= span.window_start and span.window_end <= length
        assert span.core_end > span.core_start
        assert span.window_start <= max(span.core_start - overlap, 0)
        assert span.window_end >= min(span.core_end + overlap, length)
        assert span.window_start <= span.write_start <= span.core_start
        assert span.blend <= overlap // 4
        if span.blend:
            assert span.write_start - span.window_start >= overlap - span.blend


def test_fewest_tiles_and_no_wasted_window():
    spans = plan_axis(520, 192, 16)
    assert len(spans) == 4  # 3 windows of 192 cannot hold 520 pixels plus the inner context
    assert spans[0].window_end - spans[0].window_start == 154


def test_axis_shorter_than_the_window_is_one_span():
    assert plan_axis(7, 64, 16) == [Span(0, 7, 0, 7, 0)]


@pytest.mark.parametrize("length", [0, -3])
def test_empty_axis_is_refused(length):
    with pytest.raises(ValueError):
        plan_axis(length, 64, 8)


def test_tiles_run_in_raster_order():
    tiles = plan_tiles(300, 500, (128, 128), 8)
    order = [(tile.y.core_start, tile.x.core_start) for tile in tiles]
    assert order == sorted(order)


@given(
    height=st.integers(1, 400),
    width=st.integers(1, 400),
    window=st.integers(24, 200),
    overlap=st.integers(0, 8),
    scale=st.sampled_from([2, 4, 8]),
)
def test_sequential_blending_gives_a_convex_combination_everywhere(height, width, window, overlap, scale):
    """Composite weights the way Upscaler writes tiles: every output pixel's weights sum to 1."""
    total = np.zeros((height * scale, width * scale))
    written = np.zeros_like(total, dtype=bool)
    for tile in plan_tiles(height, width, (window, window), overlap):
        top, left = tile.y.write_start * scale, tile.x.write_start * scale
        bottom, right = tile.y.core_end * scale, tile.x.core_end * scale
        weights = blend_weights(tile, scale)[:, :, 0]
        assert weights.shape == (bottom - top, right - left)
        blended = weights < 1
        assert written[top:bottom, left:right][blended].all(), "a blend band fades over pixels already written"
        total[top:bottom, left:right] = weights + total[top:bottom, left:right] * (1 - weights)
        written[top:bottom, left:right] = True
    assert written.all()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
