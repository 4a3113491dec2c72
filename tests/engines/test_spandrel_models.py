"""The community's architectures through the one core: loading, descriptor, tiling, precision, export."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from srgan.engines import (
    BackendError,
    ModelFileError,
    Precision,
    TileSettings,
    Tiling,
    create_upscaler,
    load_model,
)
from srgan.engines.compiled import export_network
from srgan.engines.tiling import plan_tiles
from tests.community_models import community_state_dict, save_community_model, spandrel_whole_image
from tests.helpers import random_image

CPU = torch.device("cpu")

# (architecture, channels, scale): every scale 1-4 appears, gray and RGB, four architectures.
CASES = [
    ("ESRGAN", 3, 1),
    ("ESRGAN", 3, 2),
    ("ESRGAN", 3, 4),
    ("Compact", 3, 3),
    ("Compact", 1, 4),
    ("Compact", 1, 1),
    ("SPAN", 3, 2),
    ("SPAN", 3, 4),
    ("SwinIR", 3, 2),
]


def max_difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first.astype(np.int32) - second.astype(np.int32)).max())


@pytest.mark.parametrize("architecture,channels,scale", CASES)
def test_whole_window_equals_spandrels_call(tmp_path, architecture, channels, scale):
    """One window over the whole image: srgan's core gives spandrel's own result."""
    state = community_state_dict(architecture, channels, scale)
    path = save_community_model(tmp_path / f"{architecture}.safetensors", state)
    loaded = load_model(path)
    assert (loaded.info.architecture, loaded.info.scale, loaded.info.channels) == (architecture, scale, channels)
    pixels = random_image(19, 23, channels, seed=scale)
    upscaler = create_upscaler(loaded, "cpu", settings=TileSettings(tile_size=64))
    output = upscaler.upscale(pixels)
    expected = spandrel_whole_image(state, pixels)
    assert output.shape == (19 * scale, 23 * scale, channels)
    assert expected.std() > 2  # the model's output is not flat, so the comparison means something
    assert max_difference(output, expected) <= 1


@pytest.mark.parametrize("architecture,channels,scale", [case for case in CASES if case[0] != "SwinIR"])
def test_tiled_output_stays_within_one_level_with_the_models_overlap(tmp_path, architecture, channels, scale):
    state = community_state_dict(architecture, channels, scale, seed=1)
    loaded = load_model(save_community_model(tmp_path / "model.pth", state))
    pixels = random_image(110, 97, channels, seed=3)
    tile = 2 * loaded.info.geometry.overlap + 16
    upscaler = create_upscaler(loaded, "cpu", settings=TileSettings(tile_size=tile))
    settings = upscaler.resolved_settings(110, 97)
    assert settings.overlap == loaded.info.geometry.overlap
    assert len(plan_tiles(110, 97, (settings.tile_size, settings.tile_size), settings.overlap)) >= 4
    assert max_difference(upscaler.upscale(pixels), spandrel_whole_image(state, pixels)) <= 1


def test_swinir_is_tiled_with_the_largest_window_by_default(tmp_path):
    state = community_state_dict("SwinIR", 3, 2)
    loaded = load_model(save_community_model(tmp_path / "swinir.pth", state))
    assert loaded.info.geometry.tiling is Tiling.DISCOURAGED
    upscaler = create_upscaler(loaded, "cpu")
    assert upscaler.resolved_settings(300, 200).tile_size >= 300
    pixels = random_image(30, 21, 3)
    assert max_difference(upscaler.upscale(pixels), spandrel_whole_image(state, pixels)) <= 1


@pytest.mark.parametrize("wrap", [None, "params_ema", "params", "state_dict"])
def test_pytorch_files_plain_and_wrapped(tmp_path, wrap):
    state = community_state_dict("Compact", 3, 2)
    loaded = load_model(save_community_model(tmp_path / "compact.pth", state, wrap))
    assert loaded.info.architecture == "Compact" and loaded.info.file_format == "pytorch"
    pixels = random_image(12, 10, 3)
    assert max_difference(create_upscaler(loaded, "cpu").upscale(pixels), spandrel_whole_image(state, pixels)) <= 1


def test_sizes_off_multiple_of_are_padded_and_cropped_exactly(tmp_path):
    """A 2× ESRGAN with pixel-unshuffle needs sides divisible by 4; 21×23 windows are padded."""
    state = community_state_dict("ESRGAN", 3, 2, shuffle=2)
    loaded = load_model(save_community_model(tmp_path / "x2.safetensors", state))
    assert loaded.info.geometry.size_requirements.multiple_of == 4
    pixels = random_image(21, 23, 3, seed=5)
    output = create_upscaler(loaded, "cpu", settings=TileSettings(tile_size=64)).upscale(pixels)
    assert output.shape == (42, 46, 3)
    np.testing.assert_array_equal(output, spandrel_whole_image(state, pixels))
    tiled = create_upscaler(loaded, "cpu", settings=TileSettings(tile_size=36)).upscale(random_image(61, 50, 3))
    assert tiled.shape == (122, 100, 3)


def test_gray_model_runs_rgb_images_per_channel(tmp_path):
    state = community_state_dict("Compact", 1, 2)
    loaded = load_model(save_community_model(tmp_path / "gray.safetensors", state))
    rgb = random_image(14, 15, 3, seed=2)
    output = create_upscaler(loaded, "cpu").upscale(rgb)
    for channel in range(3):
        expected = spandrel_whole_image(state, rgb[:, :, channel : channel + 1])
        assert max_difference(output[:, :, channel : channel + 1], expected) <= 1


def test_rgb_model_keeps_gray_and_alpha_layouts(tmp_path):
    loaded = load_model(save_community_model(tmp_path / "c.safetensors", community_state_dict("Compact", 3, 3)))
    upscaler = create_upscaler(loaded, "cpu")
    assert upscaler.upscale(random_image(9, 8, 1)).shape == (27, 24, 1)
    assert upscaler.upscale(random_image(9, 8, 4, dtype=np.uint16)).shape == (27, 24, 4)


def test_descriptor_describes_the_model(tmp_path):
    loaded = load_model(save_community_model(tmp_path / "s.safetensors", community_state_dict("SwinIR", 3, 2)))
    description = loaded.info.describe()
    assert description["arch"] == "SwinIR" and description["scale"] == 2 and description["tiling"] == "discouraged"
    assert "fp16" not in description["precisions"] and "bf16" in description["precisions"]
    assert description["size_requirements"]["minimum"] == 16 and len(description["sha256"]) == 64
    assert description["compiled_engine"] is False


def test_auto_never_picks_an_unsupported_precision_and_explicit_ones_are_refused(tmp_path):
    loaded = load_model(save_community_model(tmp_path / "s.safetensors", community_state_dict("SwinIR", 3, 2)))
    from srgan.engines.compiled import model_precision

    assert model_precision(loaded, Precision.AUTO, torch.device("cuda")) is Precision.BF16
    with pytest.raises(BackendError, match="does not run correctly in fp16") as caught:
        model_precision(loaded, Precision.FP16, torch.device("cuda"))
    assert caught.value.suggestion == "auto"


@pytest.mark.parametrize("architecture", ["ESRGAN", "Compact", "SPAN"])
def test_exportable_architectures_export_and_match_eager(tmp_path, architecture):
    loaded = load_model(save_community_model(tmp_path / "m.safetensors", community_state_dict(architecture, 3, 2)))
    program = export_network(loaded, CPU, Precision.FP32)
    image = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(image), loaded.network(image), atol=1e-4, rtol=1e-4)


def test_other_architectures_are_refused_for_compiled_engines_with_a_reason(tmp_path):
    loaded = load_model(save_community_model(tmp_path / "s.safetensors", community_state_dict("SwinIR", 3, 2)))
    with pytest.raises(BackendError, match="not SwinIR"):
        create_upscaler(loaded, "cpu", backend="compiled", engines_dir=tmp_path)
    assert create_upscaler(loaded, "cpu", backend="auto", engines_dir=tmp_path).backend.name.startswith("torch-cpu")


class _Marker:
    """Unpickling this calls Path.touch: a pickle whose loading runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_a_malicious_pickle_is_refused_and_leaves_no_marker(tmp_path, suffix):
    marker = tmp_path / "marker"
    path = tmp_path / f"evil{suffix}"
    torch.save({"params_ema": community_state_dict("Compact", 3, 2), "trap": _Marker(marker)}, path)
    with pytest.raises(ModelFileError, match="needs code to load"):
        load_model(path)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ModelFileError):
        load_model(legacy)
    assert not marker.exists()


def test_torchscript_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 3)).save(str(path))
    with pytest.raises(ModelFileError, match="TorchScript.*safetensors"):
        load_model(path)


def test_unknown_tensors_are_refused_in_one_line(tmp_path):
    path = save_community_model(tmp_path / "odd.safetensors", {"weight": torch.zeros(3, 3)})
    with pytest.raises(ModelFileError, match="no architecture spandrel") as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


def test_onnx_models_run_through_onnx_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    state = community_state_dict("Compact", 3, 2)
    loaded = load_model(save_community_model(tmp_path / "compact.safetensors", state))
    path = tmp_path / "compact.onnx"
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "h2", 3: "w2"}}
    with torch.no_grad():
        torch.onnx.export(
            loaded.network,
            (torch.rand(1, 3, 32, 32),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=axes,
        )
    onnx_model = load_model(path)
    assert (onnx_model.info.architecture, onnx_model.info.scale, onnx_model.info.file_format) == ("ONNX", 2, "onnx")
    upscaler = create_upscaler(onnx_model, "cpu", settings=TileSettings(tile_size=48))
    assert upscaler.backend.name.startswith("onnxruntime")
    pixels = random_image(70, 9, 3, seed=8)
    assert max_difference(upscaler.upscale(pixels), spandrel_whole_image(state, pixels)) <= 1
    with pytest.raises(BackendError, match="ONNX"):
        create_upscaler(onnx_model, "cpu", backend="compiled", engines_dir=tmp_path)


def test_a_broken_onnx_file_is_refused_in_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(ModelFileError, match="broken.onnx: not a loadable ONNX model") as caught:
        load_model(path)
    assert "\n" not in str(caught.value)
