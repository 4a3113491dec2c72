from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from srgan.engines import GeneratorConfig, ModelFileError, load_generator, load_model, save_model
from srgan.engines.model_file import ModelInfo
from tests.helpers import tiny_generator

IMAGE = torch.rand(1, 3, 9, 11)


def reference(generator: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return generator(IMAGE)


def run(network: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return network(IMAGE)


@pytest.mark.parametrize(
    "config",
    [
        GeneratorConfig(blocks=2, channels=8),
        GeneratorConfig(scale=2, blocks=1, channels=4, batchnorm=False),
        GeneratorConfig(scale=8, blocks=1, channels=4),
    ],
)
def test_safetensors_round_trip_keeps_weights_and_metadata(tmp_path, config):
    generator = tiny_generator(config)
    path = tmp_path / "model.safetensors"
    save_model(path, generator, {"dataset": "wallpapers", "steps": "1000"})
    loaded = load_model(path)
    assert load_generator(path)[1].config == config and loaded.scale == config.scale
    assert loaded.info.architecture == "SRGAN" and loaded.info.details["features"] == config.channels
    assert loaded.info.training == {"dataset": "wallpapers", "steps": "1000"}
    assert len(loaded.info.sha256) == 64
    torch.testing.assert_close(run(loaded.network), reference(generator), atol=1e-5, rtol=1e-4)
    description = loaded.info.describe()
    assert description["blocks"] == config.blocks and description["format"] == "safetensors"
    json.dumps(description)


def test_half_precision_files_are_half_the_size_and_close(tmp_path):
    generator = tiny_generator(GeneratorConfig(blocks=2, channels=16))
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_model(full, generator)
    save_model(half, generator, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    torch.testing.assert_close(run(load_model(half).network), reference(generator), atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: state,
        lambda state: {"params_ema": state, "params": {}},
        lambda state: {"state_dict": {f"module.{key}": value for key, value in state.items()}},
        lambda state: {f"netG.{key}": value for key, value in state.items()},
        lambda state: {"epoch": 3, "state_dict": {f"module.netG.{key}": value for key, value in state.items()}},
    ],
    ids=["plain", "params_ema", "state_dict+module", "netG", "checkpoint"],
)
def test_pytorch_state_dicts_are_unwrapped(tmp_path, wrap):
    generator = tiny_generator()
    path = tmp_path / "model.pth"
    torch.save(wrap(generator.state_dict()), path)
    loaded = load_model(path)
    assert loaded.info.file_format == "pytorch"
    torch.testing.assert_close(run(loaded.network), reference(generator), atol=1e-5, rtol=1e-4)


class Payload:
    """Unpickling this would run code: it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_executes_code(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_generator().state_dict(), "payload": Payload(marker)}, path)
    with pytest.raises(ModelFileError, match="needs code to load .*convert it to safetensors"):
        load_model(path)
    assert not marker.exists()


def test_range_metadata_maps_outputs_to_unit_range(tmp_path):
    generator = tiny_generator()
    path = tmp_path / "tanh-range.safetensors"
    save_model(path, generator, output_range=(-1.0, 1.0))
    loaded = load_model(path)
    assert loaded.info.details["output_range"] == [-1.0, 1.0]
    torch.testing.assert_close(run(loaded.network), (reference(generator) + 1) / 2, atol=1e-5, rtol=1e-4)


def truncated(tmp_path: Path, suffix: str) -> Path:
    full = tmp_path / f"full{suffix}"
    if suffix == ".safetensors":
        save_model(full, tiny_generator())
    else:
        torch.save(tiny_generator().state_dict(), full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_files_are_rejected(tmp_path, suffix):
    path = truncated(tmp_path, suffix)
    with pytest.raises(ModelFileError, match="truncated") as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_foreign_architecture_is_rejected_with_what_was_expected(tmp_path):
    path = tmp_path / "esrgan.pth"
    torch.save({"conv_first.weight": torch.zeros(64, 3, 3, 3), "RRDB_trunk.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelFileError, match="not an SRGAN generator"):
        load_model(path)


def test_mismatched_tensor_shapes_are_named(tmp_path):
    state = tiny_generator().state_dict()
    state["tail.weight"] = torch.zeros(3, 8, 5, 5)
    path = tmp_path / "bad.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, path)
    with pytest.raises(ModelFileError, match="tail.weight"):
        load_model(path)


def test_missing_tensors_are_named(tmp_path):
    state = tiny_generator().state_dict()
    del state["body.0.conv2.weight"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match="missing"):
        load_model(path)


def test_metadata_that_contradicts_the_tensors_is_rejected(tmp_path):
    state = {key: value.contiguous() for key, value in tiny_generator().state_dict().items()}
    path = tmp_path / "liar.safetensors"
    save_file(state, path, metadata={"format": "srgan-generator", "blocks": "16"})
    with pytest.raises(ModelFileError, match="blocks=16"):
        load_model(path)


def test_other_safetensors_formats_go_to_spandrel_and_unknown_tensors_are_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not an SRGAN generator, and no architecture spandrel"):
        load_model(path)
    with pytest.raises(ModelFileError, match="format 'pt'"):
        load_generator(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.safetensors", None, "not found"),
        ("model.onnx", b"x", "not a loadable ONNX model"),
        ("model.h5", b"x", "unknown model file type"),
        ("garbage.safetensors", b"\x00" * 64, "not a readable safetensors"),
        ("garbage.pth", b"not a zip", "is not a PyTorch model file"),
        ("text.pth", b"junk\n", "is not a PyTorch model file"),
        ("empty.pth", b"", "is not a PyTorch model file"),
    ],
)
def test_unreadable_files_are_rejected(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_model_info_defaults_are_unit_ranges(tmp_path):
    info = ModelInfo(path=tmp_path, config=GeneratorConfig())
    assert info.input_range == info.output_range == (0.0, 1.0)


def test_a_recorded_bf16_cost_decides_auto_precision_on_a_native_bf16_cpu(tmp_path, monkeypatch):
    from srgan.engines import create_upscaler, record_bf16_cost

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx512_bf16": True})
    path = tmp_path / "tiny.safetensors"
    save_model(path, tiny_generator(), {"note": "kept"})
    assert load_model(path).info.bf16_cost_db is None
    # no recorded cost: auto stays in fp32
    assert create_upscaler(load_model(path), "cpu", engines_dir=tmp_path).backend.name == "torch-cpu fp32"
    before = load_model(path).network.state_dict()
    record_bf16_cost(path, 0.08)
    loaded = load_model(path)
    assert loaded.info.bf16_cost_db == pytest.approx(0.08) and loaded.info.training == {"note": "kept"}
    assert all(torch.equal(value, before[name]) for name, value in loaded.network.state_dict().items())
    assert create_upscaler(loaded, "cpu", engines_dir=tmp_path).backend.name == "torch-cpu fp32"
    record_bf16_cost(path, 0.01)
    assert create_upscaler(load_model(path), "cpu", engines_dir=tmp_path).backend.name == "torch-cpu bf16"
