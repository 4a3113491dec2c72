from __future__ import annotations

import pytest
import torch

from srgan.engines import BackendError, Precision, Setting, TorchBackend, fold_batchnorm, resolve_device
from srgan.engines.backends import resolve_precision
from tests.helpers import tiny_generator

CPU = torch.device("cpu")


@pytest.mark.parametrize("spec", ["auto", "cpu", " CPU "])
def test_cpu_and_auto_resolve_here(spec):
    expected = "cuda" if spec == "auto" and torch.cuda.is_available() else "cpu"
    assert resolve_device(spec).type == expected


@pytest.mark.parametrize("spec, message", [("tpu", "not supported|unknown device"), ("gpu!", "unknown device")])
def test_unknown_devices_are_refused(spec, message):
    with pytest.raises(BackendError, match=message):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_which_setting_to_change():
    with pytest.raises(BackendError, match="sees no CUDA GPU") as raised:
        resolve_device("cuda:0")
    assert (raised.value.setting, raised.value.suggestion) == (Setting.DEVICE, "cpu")


def test_precision_defaults_and_refusals():
    assert resolve_precision(Precision.AUTO, CPU) is Precision.FP32
    assert resolve_precision(Precision.AUTO, torch.device("cuda")) is Precision.FP16
    with pytest.raises(BackendError, match="fp16 is not supported on the CPU"):
        resolve_precision(Precision.FP16, CPU)


def test_bf16_on_cpu_stays_close_to_fp32_and_backends_share_a_network():
    network = fold_batchnorm(tiny_generator())
    batch = torch.rand(2, 3, 16, 16)
    fp32_backend = TorchBackend(network, 4, CPU, Precision.FP32)
    fp32 = fp32_backend.infer(batch)
    bf16 = TorchBackend(network, 4, CPU, Precision.BF16).infer(batch)
    assert bf16.shape == fp32.shape == (2, 3, 64, 64)
    assert (bf16.float() - fp32).abs().max() < 0.05
    # Making the bf16 backend left the caller's network, and the fp32 backend, in fp32.
    assert all(parameter.dtype == torch.float32 for parameter in network.parameters())
    torch.testing.assert_close(fp32_backend.infer(batch), fp32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_runs_channels_last_half():
    backend = TorchBackend(fold_batchnorm(tiny_generator()), 4, torch.device("cuda"))
    result = backend.infer(torch.rand(2, 3, 16, 16, device="cuda"))
    assert result.dtype == torch.float16 and result.is_contiguous(memory_format=torch.channels_last)
