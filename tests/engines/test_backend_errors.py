"""Every backend keeps `Backend.infer`'s promise: failures are BackendError, lack of memory DeviceOutOfMemory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srgan.engines import (
    Backend,
    BackendError,
    DeviceOutOfMemory,
    Precision,
    TorchBackend,
    export_onnx,
    fold_batchnorm,
)
from srgan.engines.compiled import OnnxRuntimeBackend
from srgan.engines.model_file import LoadedModel, ModelInfo, srgan_descriptor
from tests.helpers import TINY, tiny_generator

CPU = torch.device("cpu")


def all_backends(base: type = Backend) -> list[type]:
    found = []
    for subclass in base.__subclasses__():
        found += [subclass, *all_backends(subclass)]
    return found


def test_no_backend_in_the_core_bypasses_the_error_mapping():
    import srgan.engines.compiled  # noqa: F401  (defines the engine backends)

    core = [cls for cls in all_backends() if cls.__module__.startswith("srgan.engines")]
    names = {cls.__name__ for cls in core}
    assert names >= {"TorchBackend", "CompiledBackend", "OnnxRuntimeBackend", "TensorRTBackend"}
    assert [cls.__name__ for cls in core if "infer" in vars(cls)] == []


class ExpectsFourChannels(nn.Module):
    """A real network that fails on the 3-channel batches every backend receives."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


class AllocatesTooMuch(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.empty(1 << 50, dtype=torch.uint8)  # a petabyte: no machine has it


def test_a_failing_network_is_a_backend_error_naming_the_batch():
    backend = TorchBackend(ExpectsFourChannels(), 1, CPU, Precision.FP32)
    with pytest.raises(BackendError, match=r"torch-cpu fp32 failed on a batch of \(2, 3, 8, 8\)") as error:
        backend.infer(torch.rand(2, 3, 8, 8))
    assert not isinstance(error.value, DeviceOutOfMemory) and "\n" not in str(error.value)


def test_an_allocation_that_fails_is_out_of_memory():
    with pytest.raises(DeviceOutOfMemory, match="ran out of memory"):
        TorchBackend(AllocatesTooMuch(), 1, CPU).infer(torch.rand(1, 3, 8, 8))


def tiny_model(tmp_path) -> LoadedModel:
    info = srgan_descriptor(ModelInfo(path=tmp_path / "tiny.safetensors", config=TINY))
    return LoadedModel(info, fold_batchnorm(tiny_generator()))


def test_onnx_runtime_failures_are_backend_errors(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_model(tmp_path)
    backend = OnnxRuntimeBackend(model, export_onnx(model, tmp_path / "tiny.onnx"))
    with pytest.raises(BackendError, match="onnxruntime-cpu fp32 failed on a batch of"):
        backend.infer(torch.rand(1, 4, 16, 16))  # the graph takes 3 channels


def test_engines_leave_the_callers_network_alone(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_model(tmp_path)
    path = export_onnx(model, tmp_path / "tiny.onnx")
    model.network.train()  # a state of the caller's that a backend must not change
    before = {name: value.clone() for name, value in model.network.state_dict().items()}
    backend = OnnxRuntimeBackend(model, path)
    assert model.network.training
    small = backend.infer(torch.rand(1, 3, 4, 4))  # under the engine's smallest side: the eager copy runs it
    assert small.shape == (1, 3, 16, 16)
    after = model.network.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_engine_on_the_gpu_does_not_move_the_callers_network(tmp_path):
    from srgan.engines.compiled import _EagerForSmallTiles

    class Probe(_EagerForSmallTiles):
        name = "probe"

        def _infer(self, batch: torch.Tensor) -> torch.Tensor:
            return self._small(batch)

    model = tiny_model(tmp_path)
    probe = Probe(model, torch.device("cuda"))
    assert probe.infer(torch.rand(1, 3, 4, 4, device="cuda")).device.type == "cuda"
    assert all(parameter.device.type == "cpu" for parameter in model.network.parameters())
