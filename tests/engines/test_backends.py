from __future__ import annotations

import pytest
import torch

from srgan.engines import (
    BackendError,
    Precision,
    Setting,
    TorchBackend,
    choose_precision,
    fold_batchnorm,
    resolve_device,
)
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


AVX512_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}


@pytest.mark.parametrize(
    "capabilities, expected",
    [
        (AVX512_ONLY, Precision.FP32),
        ({**AVX512_ONLY, "avx512_bf16": True}, Precision.BF16),
        ({**AVX512_ONLY, "amx_bf16": True, "amx_tile": True}, Precision.BF16),
        ({"architecture": "x86_64", "avx2": True}, Precision.FP32),
        ({"architecture": "arm64", "neon": True, "bf16": True}, Precision.BF16),
        ({"architecture": "arm64", "neon": True, "bf16": False}, Precision.FP32),
    ],
)
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_reports_native_bf16(monkeypatch, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    choice = choose_precision(Precision.AUTO, CPU, bf16_cost_db=0.01)
    assert choice.precision is expected
    assert ("no native bf16" in choice.reason) == (expected is Precision.FP32)
    unmeasured = choose_precision(Precision.AUTO, CPU)
    assert unmeasured.precision is Precision.FP32
    assert resolve_precision(Precision.AUTO, torch.device("cuda")) is Precision.FP16
    assert resolve_precision(Precision.FP32, CPU) is Precision.FP32


@pytest.mark.parametrize(
    "limit, expected",
    [
        ("AVX2", Precision.FP32),
        ("avx512_core", Precision.FP32),
        ("AVX512_CORE_VNNI", Precision.FP32),
        ("AVX512_CORE_BF16", Precision.BF16),
        ("AVX512_CORE_AMX_FP16", Precision.BF16),
        ("ALL", Precision.BF16),
        ("DEFAULT", Precision.BF16),
        ("AVX10_2_512", Precision.BF16),
        ("", Precision.BF16),
    ],
)
def test_auto_follows_a_limit_on_onednn_instruction_sets(monkeypatch, limit, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**AVX512_ONLY, "avx512_bf16": True})
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    choice = choose_precision(Precision.AUTO, CPU, bf16_cost_db=0.01)
    assert choice.precision is expected
    if expected is Precision.FP32:
        assert f"ONEDNN_MAX_CPU_ISA={limit.upper()} keeps oneDNN from native bf16" == choice.reason
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # the older name
    assert resolve_precision(Precision.AUTO, CPU, bf16_cost_db=0.01) is Precision.FP32


def test_auto_keeps_fp32_for_a_model_whose_bf16_cost_is_too_high(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**AVX512_ONLY, "avx512_bf16": True})
    assert resolve_precision(Precision.AUTO, CPU, bf16_cost_db=0.02) is Precision.BF16
    costly = choose_precision(Precision.AUTO, CPU, bf16_cost_db=0.08)
    assert costly.precision is Precision.FP32 and "0.080 dB" in costly.reason
    assert resolve_precision(Precision.BF16, CPU, bf16_cost_db=0.08) is Precision.BF16  # asked for: given


def test_fp16_on_a_cpu_is_refused_with_the_setting_that_fixes_it():
    with pytest.raises(BackendError, match="fp16 is not supported on the CPU") as refused:
        resolve_precision(Precision.FP16, CPU)
    assert refused.value.setting is Setting.PRECISION and refused.value.suggestion == "fp32"


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
