"""Which CPU a benchmark ran on, and its fp32 FMA peak, for the header every CPU benchmark prints.

The peak is computed, not measured: fp32 lanes per FMA × FMA units per core × 2 flops × clock
× cores. Vector width comes from the CPU's flags (AVX-512: 16 lanes, AVX2/FMA3: 8); AMD's Zen 2
to Zen 4 (family 0x17 and 0x19) execute 512-bit instructions as two 256-bit halves, so they count
8 lanes whatever the flags say; two FMA units per core is right for those and for Intel's server
cores (a few Xeon Silver and Bronze parts have one: pass --fma-units 1). The clock is measured:
a chain of 64 dependent integer additions (one cycle each on every x86-64 core) is timed in
machine code, because a virtual machine's /proc/cpuinfo reports the nominal clock, not the boost
clock the cores run at; where that cannot run (not x86-64 Linux), /proc/cpuinfo's figure is used.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

FLAGS_THAT_MATTER = ("avx2", "fma3", "avx512_f", "avx512_bf16", "amx_bf16", "amx_tile")
# Variables that keep oneDNN's and ATen's kernels below what the CPU has.
LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


@dataclass(frozen=True)
class CpuPeak:
    """The CPU, and the arithmetic behind its fp32 FMA peak."""

    model: str
    flags: tuple[str, ...]
    cores: int
    threads: int
    lanes: int
    fma_units: int
    clock_ghz: float
    clock_source: str
    virtual: bool
    limit: str = ""

    @property
    def gflops(self) -> float:
        """fp32 peak of the `threads` cores in use, GFLOP/s (an FMA counts as two flops)."""
        return self.lanes * self.fma_units * 2 * self.clock_ghz * min(self.threads, self.cores)

    def header(self) -> str:
        where = ", virtual machine" if self.virtual else ""
        where += f"; code limited by {self.limit}" if self.limit else ""
        return (
            f"CPU: {self.model} ({', '.join(self.flags) or 'no AVX'}; {self.cores} cores, {self.threads} threads"
            f" used{where})\nfp32 FMA peak: {self.lanes} lanes × {self.fma_units} FMA units × 2 flops ×"
            f" {self.clock_ghz:.2f} GHz ({self.clock_source}) × {min(self.threads, self.cores)} cores ="
            f" {self.gflops:.0f} GFLOP/s"
        )


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def measure_clock_ghz(iterations: int = 5_000_000, repeats: int = 5) -> float | None:
    """The core clock, from timing 64 dependent `add rax, rdx` per loop turn; None off x86-64 Linux."""
    if platform.machine() not in ("x86_64", "AMD64") or not hasattr(mmap, "PROT_EXEC"):
        return None
    chain = 64
    code = bytes([0x31, 0xC0, 0xBA, 1, 0, 0, 0])  # xor eax, eax; mov edx, 1
    code += bytes([0x48, 0x01, 0xD0]) * chain  # add rax, rdx: each waits for the one before
    code += bytes([0x48, 0xFF, 0xCF])  # dec rdi
    code += bytes([0x0F, 0x85]) + (-(3 * chain + 3 + 6)).to_bytes(4, "little", signed=True)  # jnz back
    code += bytes([0xC3])  # ret
    try:
        buffer = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        return None  # a kernel that refuses writable, executable pages
    buffer.write(code)
    run = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buffer)))
    if run(10) != 10 * chain:
        return None
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        run(iterations)
        best = min(best, time.thread_time() - started)
    return chain * iterations / best / 1e9


def describe_cpu(threads: int | None = None, fma_units: int = 2, clock_ghz: float | None = None) -> CpuPeak:
    """The CPU this process runs on; `clock_ghz` overrides the measured clock."""
    capabilities = torch.cpu.get_capabilities()
    info = _cpuinfo()
    flags = tuple(flag for flag in FLAGS_THAT_MATTER if capabilities.get(flag) is True)
    limit = ", ".join(f"{name}={os.environ[name]}" for name in LIMITS if os.environ.get(name))
    onednn_limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if onednn_limit == "AVX" or onednn_limit.startswith(("SSE", "AVX2")):
        flags = tuple(flag for flag in flags if not flag.startswith(("avx512", "amx")))
    lanes = 16 if "avx512_f" in flags else 8 if ("avx2" in flags or "fma3" in flags) else 4
    family = int(info.get("cpu family", "0") or 0)
    if info.get("vendor_id") == "AuthenticAMD" and family in (0x17, 0x19):
        lanes = min(lanes, 8)  # Zen 2-4: 256-bit FMA datapaths
    source = "given"
    if clock_ghz is None:
        clock_ghz, source = measure_clock_ghz(), "measured"
    if clock_ghz is None:
        clock_ghz, source = float(info.get("cpu MHz", "0") or 0) / 1000, "/proc/cpuinfo"
    return CpuPeak(
        model=info.get("model name") or str(capabilities.get("cpu_name", platform.processor())),
        flags=flags,
        cores=int(capabilities.get("num_physical_cores", os.cpu_count() or 1)),
        threads=threads or torch.get_num_threads(),
        lanes=lanes,
        fma_units=fma_units,
        clock_ghz=clock_ghz,
        clock_source=source,
        virtual="hypervisor" in info.get("flags", "").split(),
        limit=limit,
    )


def network_gflop_per_output_mpx(network: torch.nn.Module, scale: int) -> float:
    """Convolution work of `network` per output megapixel, in GFLOP (2 flops per multiply-add).

    Counted with forward hooks on a 32×32 input; padding is counted as work, as the kernels do it.
    """
    macs = 0

    def count(module: torch.nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        macs += output.numel() * kernel

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            network(torch.rand(1, 3, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    return 2 * macs / (32 * 32 * scale * scale) * 1e6 / 1e9
