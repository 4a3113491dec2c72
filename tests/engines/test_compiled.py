"""Compiled engines on the CPU: torch.export, AOTInductor, ONNX, the engine cache, backend choice."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srgan.engines import (
    BackendError,
    EngineCache,
    Picture,
    Precision,
    TileSettings,
    TorchBackend,
    Upscaler,
    create_upscaler,
    export_onnx,
    load_model,
    save_model,
    write_image,
)
from srgan.engines.errors import Setting
from srgan.cli.app import app
from srgan.engines.compiled import OnnxRuntimeBackend, export_network
from srgan.engines.engine_cache import EngineKey, EngineTiming
from tests.helpers import random_image, tiny_generator

CPU = torch.device("cpu")
SETTINGS = TileSettings(tile_size=48, overlap=14)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny model file, with nothing built from it."""
    model = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, tiny_generator())
    return model


def other_file_system(folder: Path) -> Path | None:
    """A folder on another file system than `folder` (a tmpfs), or None where there is none."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != folder.stat().st_dev:
        return Path(tempfile.mkdtemp(dir=shm))
    return None


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory):
    """A tiny model and an engine cache holding its AOTInductor package, built by the CLI.

    The system's temporary folder is put on another file system than the cache, as a tmpfs /tmp
    is on many systems, so the build must not depend on renaming across them.
    """
    model = tiny_model
    cache = tmp_path_factory.mktemp("engines") / "cache"
    elsewhere = other_file_system(cache.parent)
    saved, tempfile.tempdir = tempfile.tempdir, str(elsewhere) if elsewhere else tempfile.tempdir
    try:
        result = CliRunner().invoke(
            app,
            ["build-engine", str(model), "--kind", "compiled", "--device", "cpu", "--precision", "fp32"]
            + ["--engines-dir", str(cache)],
        )
    finally:
        tempfile.tempdir = saved
        if elsewhere:
            for leftover in sorted(elsewhere.rglob("*"), reverse=True):
                leftover.rmdir() if leftover.is_dir() else leftover.unlink()
            elsewhere.rmdir()
    assert result.exit_code == 0, result.output
    assert not [path for path in cache.iterdir() if path.name.startswith(".building-")]
    assert "tile compiled" in result.stdout and "tile eager" in result.stdout  # the build-time timing is reported
    return model, cache


def set_recorded_timing(cache: Path, engine_seconds: float, eager_seconds: float) -> None:
    """Overwrite the timing in every compiled package's record under `cache`."""
    for sidecar in Path(cache).glob("compiled/*/*.pt2.json"):
        record = json.loads(sidecar.read_text())
        # Equal tiles, so the seconds compare directly.
        times = {"engine_seconds": engine_seconds, "eager_seconds": eager_seconds}
        record["timing"] = {**record["timing"], **times, "engine_tile": 160, "eager_tile": 160}
        sidecar.write_text(json.dumps(record))


def eager(model: Path, pixels: np.ndarray) -> np.ndarray:
    loaded = load_model(model)
    return Upscaler(TorchBackend(loaded.network, 4, CPU, Precision.FP32), SETTINGS).upscale(pixels)


def test_export_is_dynamic_in_batch_height_and_width(built):
    loaded = load_model(built[0])
    program = export_network(loaded, CPU, Precision.FP32).module()
    for shape in [(1, 3, 8, 8), (3, 3, 37, 21), (2, 3, 64, 100)]:
        image = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(program(image), loaded.network(image), atol=1e-5, rtol=1e-4)


def test_the_build_records_a_timing_against_eager(built):
    model, cache = built
    key = EngineKey.for_device("compiled", load_model(model).info.sha256, CPU, "fp32")
    timing = EngineCache(cache).timing(key)
    # Each is timed on its own default tile: eager PyTorch runs larger ones on a CPU.
    assert timing is not None and (timing.engine_tile, timing.eager_tile) == (160, 384)
    assert timing.engine_seconds > 0 and timing.eager_seconds > 0 and timing.load_seconds > 0


def test_auto_takes_a_package_only_where_its_record_says_it_was_faster(built):
    model, cache = built
    loaded = load_model(model)
    try:
        set_recorded_timing(cache, engine_seconds=0.5, eager_seconds=0.4)
        assert create_upscaler(loaded, "cpu", Precision.FP32, SETTINGS, "auto", cache).backend.name == "torch-cpu fp32"
        set_recorded_timing(cache, engine_seconds=0.3, eager_seconds=0.4)
        chosen = create_upscaler(loaded, "cpu", Precision.FP32, SETTINGS, "auto", cache).backend.name
        assert chosen == "compiled-cpu fp32"
    finally:
        set_recorded_timing(cache, engine_seconds=0.3, eager_seconds=0.4)


def test_timings_on_tiles_of_different_sizes_compare_per_kept_pixel():
    record = {"engine_tile": 160, "eager_tile": 384, "overlap": 16, "load_seconds": 1.0}
    # 128² kept pixels in 0.2 s against 352² in 1.2 s: the engine takes 12.2 µs a pixel, eager 9.7.
    slower = EngineTiming.from_record({**record, "engine_seconds": 0.2, "eager_seconds": 1.2})
    assert slower is not None and 0.79 < slower.speedup < 0.80
    faster = EngineTiming.from_record({**record, "engine_seconds": 0.1, "eager_seconds": 1.2})
    assert faster is not None and faster.speedup > 1
    # A record from before both tiles were kept (one tile_size for both) is no evidence either way.
    old = {"tile_size": 160, "engine_seconds": 0.1, "eager_seconds": 1.2, "load_seconds": 1.0}
    assert EngineTiming.from_record(old) is None
    assert EngineTiming.from_record({**record, "engine_seconds": 0.0, "eager_seconds": 1.2}) is None
    assert EngineTiming.from_record({**record, "overlap": 80, "engine_seconds": 0.1, "eager_seconds": 1.2}) is None


def test_a_package_recorded_without_a_timing_is_not_assumed_faster(tmp_path, tiny_model):
    loaded = load_model(tiny_model)
    cache = EngineCache(tmp_path)
    built = tmp_path / "built.pt2"
    built.write_bytes(b"never loaded: auto passes it over on its record alone")
    cache.store(EngineKey.for_device("compiled", loaded.info.sha256, CPU, "fp32"), built)
    chosen = create_upscaler(loaded, "cpu", Precision.FP32, SETTINGS, "auto", tmp_path).backend.name
    assert chosen == "torch-cpu fp32"


def test_the_compiled_package_matches_eager(built):
    model, cache = built
    upscaler = create_upscaler(load_model(model), "cpu", Precision.FP32, SETTINGS, "compiled", cache)
    assert upscaler.backend.name == "compiled-cpu fp32"
    pixels = random_image(70, 53, 4, seed=2)
    assert np.abs(upscaler.upscale(pixels).astype(int) - eager(model, pixels)).max() <= 1
    tiny = random_image(3, 5, 3)  # under the engine's smallest side: the eager network takes it
    assert np.abs(upscaler.upscale(tiny).astype(int) - eager(model, tiny)).max() <= 1


def test_exporting_leaves_the_model_as_it_was(built):
    loaded = load_model(built[0])
    export_network(loaded, CPU, Precision.BF16)
    assert all(parameter.dtype == torch.float32 for parameter in loaded.network.parameters())


def test_auto_without_engines_is_eager_and_tensorrt_says_why_not(tmp_path, built):
    loaded = load_model(built[0])
    assert create_upscaler(loaded, "cpu", engines_dir=tmp_path).backend.name.startswith("torch-cpu ")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="TensorRT is unavailable"):
            create_upscaler(loaded, "cpu", backend="tensorrt", engines_dir=tmp_path)
    with pytest.raises(BackendError, match="unknown backend"):
        create_upscaler(loaded, "cpu", backend="fast")


def test_onnx_export_runs_in_onnx_runtime_through_the_core(tmp_path, built):
    model = built[0]
    path = export_onnx(load_model(model), tmp_path / "tiny.onnx")
    upscaler = Upscaler(OnnxRuntimeBackend(load_model(model), path), SETTINGS)
    pixels = random_image(61, 77, 3, seed=3)
    assert np.abs(upscaler.upscale(pixels).astype(int) - eager(model, pixels)).max() <= 1


def test_a_package_that_does_not_run_is_not_kept(tmp_path):
    from srgan.engines.compiled import check_package_runs

    broken = tmp_path / "engine.pt2"
    broken.write_bytes(b"PK\x03\x04 not really a package")
    with pytest.raises(BackendError, match="does not run with torch .* it was not kept"):
        check_package_runs(broken, torch.device("cpu"))


def test_a_package_that_crashes_its_loader_is_reported_by_signal(tmp_path, monkeypatch):
    """What torch 2.11 did on a lent H100: the load ended the process with SIGSEGV."""
    from srgan.engines import compiled

    monkeypatch.setattr(compiled, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(BackendError, match="killed by signal 11"):
        compiled.check_package_runs(tmp_path / "engine.pt2", torch.device("cpu"))


def test_cache_keys_change_with_every_part():
    base = EngineKey.for_device("compiled", "ab" * 32, CPU, "fp32")
    variants = [
        EngineKey.for_device("compiled", "cd" * 32, CPU, "fp32"),
        EngineKey.for_device("compiled", "ab" * 32, CPU, "bf16"),
        EngineKey.for_device("compiled", "ab" * 32, CPU, "fp32", (256, 256), 0),
        EngineKey.for_device("compiled", "ab" * 32, CPU, "fp32", (0, 0), 4),
        EngineKey.for_device("tensorrt", "ab" * 32, CPU, "fp32"),
    ]
    variants += [
        replace(base, device_kind="cuda"),
        replace(base, compute_capability="9.0"),
        replace(base, torch_version="0.0"),
        replace(base, torch_tensorrt_version="2.0"),
        replace(base, tensorrt_version="10.0"),
        replace(base, export_revision=base.export_revision - 1),
    ]
    digests = {key.digest() for key in [base, *variants]}
    assert len(digests) == len(variants) + 1


def test_foreign_and_corrupted_engines_are_refused(tmp_path):
    cache = EngineCache(tmp_path)
    key = EngineKey.for_device("compiled", "ab" * 32, CPU, "fp32")
    built = tmp_path / "built.pt2"
    built.write_bytes(b"engine bytes")
    path = cache.store(key, built)
    assert cache.lookup(key) == path
    path.write_bytes(b"engine bytes, altered")
    with pytest.raises(BackendError, match="changed since it was built"):
        cache.lookup(key)
    sidecar = path.with_suffix(".pt2.json")
    record = json.loads(sidecar.read_text())
    record["key"]["torch_version"] = "1.0"
    sidecar.write_text(json.dumps(record))
    with pytest.raises(BackendError, match="another model, shape, device or version"):
        cache.lookup(key)
    sidecar.write_text("{broken")
    with pytest.raises(BackendError, match="without a readable record"):
        cache.lookup(key)


def test_a_cache_folder_that_is_a_file_is_refused_before_compiling(tmp_path, tiny_model):
    blocker = tmp_path / "engines"
    blocker.write_text("not a folder")
    with pytest.raises(BackendError, match="cannot keep engines there .it is a file") as error:
        create_upscaler(load_model(tiny_model), "cpu", backend="compiled", engines_dir=blocker)
    assert error.value.setting is Setting.ENGINES_DIR
    inside = blocker / "sub"
    with pytest.raises(BackendError, match="cannot keep engines there"):
        EngineCache(inside).require_folder()
    result = CliRunner().invoke(
        app, ["build-engine", str(tiny_model), "--device", "cpu", "--engines-dir", str(blocker)]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert blocker.read_text() == "not a folder"


def test_builds_happen_inside_the_cache_folder(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    elsewhere = other_file_system(tmp_path)
    saved, tempfile.tempdir = tempfile.tempdir, str(elsewhere) if elsewhere else tempfile.tempdir
    try:
        with cache.scratch() as scratch:
            assert scratch.parent == cache.folder and scratch.stat().st_dev == cache.folder.stat().st_dev
            built = scratch / "engine.pt2"
            built.write_bytes(b"engine bytes")
            key = EngineKey.for_device("compiled", "ab" * 32, CPU, "fp32")
            assert cache.store(key, built) == cache.lookup(key) == cache.path_for(key)
    finally:
        tempfile.tempdir = saved
        if elsewhere:
            elsewhere.rmdir()
    assert [path.name for path in cache.folder.iterdir()] == ["compiled"]


@pytest.mark.parametrize("record", [b"[1, 2]", b"\xff\xfe binary", b"[" * 100_000, b"null", b'"text"'])
def test_sidecars_that_are_not_records_are_refused_in_one_line(tmp_path, record):
    cache = EngineCache(tmp_path)
    key = EngineKey.for_device("compiled", "ab" * 32, CPU, "fp32")
    built = tmp_path / "built.pt2"
    built.write_bytes(b"engine bytes")
    path = cache.store(key, built)
    path.with_suffix(".pt2.json").write_bytes(record)
    with pytest.raises(BackendError, match="without a readable record"):
        cache.lookup(key)


def test_onnx_export_to_an_unwritable_place_is_one_line(tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendError, match="cannot write the ONNX file") as error:
        export_onnx(load_model(tiny_model), blocker / "model.onnx")
    assert error.value.setting is Setting.OUTPUT


def test_upscale_command_takes_the_backend_option(tmp_path, built):
    model, cache = built
    source = tmp_path / "in.png"
    write_image(Picture(random_image(20, 20, 3)), source)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "upscale",
            str(source),
            "-o",
            str(tmp_path / "out.png"),
            "-m",
            str(model),
            "--backend",
            "compiled",
            "--engines-dir",
            str(cache),
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "compiled-cpu fp32" in result.stdout
    onnx = runner.invoke(app, ["build-engine", str(model), "--kind", "onnx"])
    assert onnx.exit_code == 2 and "-o PATH.onnx" in onnx.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_package_on_cuda(tmp_path, tiny_model):
    model = tiny_model
    upscaler = create_upscaler(load_model(model), "cuda", Precision.FP16, SETTINGS, "compiled", tmp_path)
    pixels = random_image(64, 80, 3)
    assert np.abs(upscaler.upscale(pixels).astype(int) - eager(model, pixels)).max() <= 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and torch-tensorrt")
def test_tensorrt_engine_matches_eager_within_fp16(tmp_path, tiny_model):
    pytest.importorskip("torch_tensorrt")
    model = tiny_model
    settings = TileSettings(tile_size=64, overlap=14, batch_size=4)
    upscaler = create_upscaler(load_model(model), "cuda", Precision.FP16, settings, "tensorrt", tmp_path)
    assert upscaler.backend.fixed_tile_shape == (64, 64) and upscaler.backend.fixed_batch == 4
    pixels = random_image(100, 90, 3)
    assert np.abs(upscaler.upscale(pixels).astype(int) - eager(model, pixels)).max() <= 3
