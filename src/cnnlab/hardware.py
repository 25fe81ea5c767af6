"""What the hardware can do at most: the theoretical peak FLOP/s of a CPU or GPU, and its source.

A "percentage of peak" needs a peak that does not depend on the kernels being measured. For a
CPU the peak is computed::

    peak = cores x clock x FLOPs per cycle per core
    FLOPs per cycle = FMA units x (vector width / 32 bits) x 2   (a fused multiply-add is 2 FLOPs)

with the vector width from the instruction set PyTorch dispatches to (AVX-512: 512 bits, AVX2
with FMA: 256) and the FMA units and maximum boost clock from a table of known processors
(:data:`CPU_TABLE`), since a virtual machine rarely reports its boost clock. The clock is the
maximum boost: with the base clock a well-tuned matrix product can exceed the "peak".

For a GPU the peak is the vendor's documented dense (non-sparse) figure (:data:`GPU_TABLE`, each
row with its data sheet), else ``SMs x clock x 128 FP32 lanes x 2`` where PyTorch reports them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from cnnlab.perf import cpu_flags, cpu_model

__all__ = [
    "CPU_TABLE",
    "GPU_TABLE",
    "CpuSpec",
    "HardwarePeak",
    "cpu_flops_per_cycle",
    "cpu_peak",
    "gpu_peak",
    "hardware_peak",
    "physical_cores",
]


@dataclass(frozen=True)
class HardwarePeak:
    """The theoretical peak of one device, in GFLOP/s, and where the number comes from."""

    device: str  # "cpu" or "cuda"
    name: str  # the CPU model or GPU name
    fp32_gflops: float | None  # None where the device is not known well enough to say
    bf16_gflops: float | None = None  # dense bf16 (tensor cores / bf16 instructions), if any
    tf32_gflops: float | None = None  # dense tf32 tensor-core rate (GPUs from Ampere on)
    source: str = ""  # the formula with its numbers, or the data sheet
    assumptions: tuple[str, ...] = ()  # what was assumed rather than read from the machine

    def fraction(self, gflops: float, precision: str = "fp32") -> float | None:
        """``gflops`` as a share of this peak (``None`` where the peak is unknown)."""
        peak = getattr(self, f"{precision}_gflops")
        return None if not peak else gflops / peak


@dataclass(frozen=True)
class CpuSpec:
    """What a CPU family does per cycle, and how fast it can clock."""

    name: str  # the microarchitecture, e.g. "AMD Zen 3 (EPYC Milan)"
    fma_units: int  # FMA pipes per core, each as wide as the vector width below
    vector_bits: int  # the widest vector the FMA pipes execute at full rate
    max_boost_ghz: float  # the highest single-core boost of the family's server parts
    source: str  # where the numbers come from
    # parts recognized by their base clock (the clock a VM reports): base GHz -> (part, boost GHz)
    parts: tuple[tuple[float, str, float], ...] = ()

    def boost_for(self, base_ghz: float | None) -> tuple[float, str]:
        """The maximum boost clock for a part with this base clock (within 1%), else the
        family's highest; and which it was."""
        for base, part, boost in self.parts:
            if base_ghz is not None and abs(base_ghz - base) <= 0.01 * base:
                return boost, f"{part} (base {base:g} GHz, boost {boost:g} GHz)"
        return self.max_boost_ghz, f"the family's highest boost, {self.max_boost_ghz:g} GHz"


# (vendor, family, model) from /proc/cpuinfo -> spec. Zen 4 executes AVX-512 in two 256-bit
# halves, so its full-rate width is 256 bits.
CPU_TABLE: dict[tuple[str, int, int], CpuSpec] = {
    ("AuthenticAMD", 23, 49): CpuSpec(
        "AMD Zen 2 (EPYC Rome)", 2, 256, 3.9, "AMD EPYC 7002 data sheets; Zen 2: 2 x 256-bit FMA",
        ((2.25, "EPYC 7742/7B12", 3.4), (2.6, "EPYC 7H12", 3.3))),
    ("AuthenticAMD", 25, 1): CpuSpec(
        "AMD Zen 3 (EPYC Milan)", 2, 256, 4.1, "AMD EPYC 7003 data sheets; Zen 3: 2 x 256-bit FMA",
        ((2.45, "EPYC 7763/7B13", 3.5), (2.0, "EPYC 7713", 3.675), (2.8, "EPYC 7543", 3.7))),
    ("AuthenticAMD", 25, 17): CpuSpec(
        "AMD Zen 4 (EPYC Genoa)", 2, 256, 4.4, "AMD EPYC 9004 data sheets; Zen 4: AVX-512 as "
        "2 x 256-bit", ((2.4, "EPYC 9654", 3.7),)),
    ("GenuineIntel", 6, 85): CpuSpec(
        "Intel Skylake/Cascade Lake-SP", 2, 512, 4.4, "Intel Xeon Scalable data sheets (Gold "
        "6xxx/Platinum: 2 AVX-512 FMA units)"),
    ("GenuineIntel", 6, 106): CpuSpec(
        "Intel Ice Lake-SP", 2, 512, 3.7, "Intel Xeon 3rd gen data sheets"),
    ("GenuineIntel", 6, 143): CpuSpec(
        "Intel Sapphire Rapids", 2, 512, 4.1, "Intel Xeon 4th gen data sheets (AMX not counted)"),
}

# GPU name (as torch reports it, matched by substring, first match wins) -> dense TFLOP/s
# (fp32, tf32, bf16) and the data sheet. Sparse figures (2x) are not used.
GPU_TABLE: list[tuple[str, float, float | None, float | None, str]] = [
    ("H200", 67.0, 494.7, 989.4, "NVIDIA H200 data sheet (SXM; tensor figures without sparsity)"),
    ("H100 PCIe", 51.2, 378.0, 756.0, "NVIDIA H100 data sheet (PCIe, without sparsity)"),
    ("H100", 67.0, 494.7, 989.4, "NVIDIA H100 data sheet (SXM, without sparsity)"),
    ("A100", 19.5, 156.0, 312.0, "NVIDIA A100 data sheet (without sparsity)"),
    ("A10", 31.2, 62.5, 125.0, "NVIDIA A10 data sheet (without sparsity)"),
    ("L4", 30.3, 60.0, 121.0, "NVIDIA L4 data sheet (without sparsity)"),
    ("T4", 8.1, None, None, "NVIDIA T4 data sheet (fp16 tensor cores only)"),
    ("V100", 15.7, None, None, "NVIDIA V100 data sheet (SXM2; fp16 tensor cores only)"),
]


def physical_cores() -> int:
    """Physical cores this process can use (hyper-threads share a core's FMA units)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    per_core = 1
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        siblings = [int(x.split(":")[1]) for x in info.splitlines() if x.startswith("siblings")]
        cores = [int(x.split(":")[1]) for x in info.splitlines() if x.startswith("cpu cores")]
        if siblings and cores and cores[0] > 0:
            per_core = max(1, siblings[0] // cores[0])
    except (OSError, ValueError, IndexError):
        pass
    return max(1, logical // per_core)


def cpu_flops_per_cycle(vector_bits: int, fma_units: int) -> int:
    """fp32 FLOPs one core can do per cycle: ``fma_units x (vector_bits / 32) x 2``."""
    if vector_bits % 32 or vector_bits < 32 or fma_units < 1:
        raise ValueError(f"Invalid CPU spec: vector_bits={vector_bits}, fma_units={fma_units}")
    return fma_units * (vector_bits // 32) * 2


def cpu_peak(cores: int, clock_ghz: float, vector_bits: int, fma_units: int) -> float:
    """The fp32 peak in GFLOP/s: ``cores x clock (GHz) x FLOPs per cycle per core``."""
    if cores < 1 or not clock_ghz > 0:
        raise ValueError(f"Invalid CPU: cores={cores}, clock_ghz={clock_ghz}")
    return cores * clock_ghz * cpu_flops_per_cycle(vector_bits, fma_units)


def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_id(fields: dict[str, str]) -> tuple[str, int, int]:
    try:
        return (fields.get("vendor_id", ""), int(fields.get("cpu family", -1)),
                int(fields.get("model", -1)))
    except ValueError:
        return fields.get("vendor_id", ""), -1, -1


def _max_clock_ghz() -> float | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read().strip()) / 1e6  # kHz
    except (OSError, ValueError):
        return None


def _cpu_hardware_peak(threads: int | None) -> HardwarePeak:
    cores_here = physical_cores()
    cores = min(threads or torch.get_num_threads(), cores_here)
    info = _cpuinfo()
    spec = CPU_TABLE.get(_cpu_id(info))
    flags = cpu_flags()
    assumptions = []
    if spec is not None:
        vector_bits, fma_units = spec.vector_bits, spec.fma_units
    else:  # unknown family: the widest ISA with 2 FMA units, as on most server CPUs since 2013
        vector_bits = 512 if "avx512f" in flags else 256 if {"avx2", "fma"} <= flags else 128
        fma_units = 2
        assumptions.append(f"unknown CPU family: {fma_units} FMA units of {vector_bits} bits "
                           "assumed from its instruction set")
    clock = _max_clock_ghz()
    if clock is None and spec is not None:
        try:
            base = float(info.get("cpu MHz", "")) / 1e3
        except ValueError:
            base = None
        clock, which = spec.boost_for(base)
        assumptions.append(f"the clock is the maximum boost of {which}, from the data sheets "
                           "(this machine does not report its own)")
    if clock is None:
        return HardwarePeak("cpu", cpu_model(), None, source="unknown CPU and clock",
                            assumptions=tuple(assumptions))
    assumptions.append(f"{cores} of {cores_here} physical cores, each at the maximum clock")
    fp32 = cpu_peak(cores, clock, vector_bits, fma_units)
    per_cycle = cpu_flops_per_cycle(vector_bits, fma_units)
    bf16 = 2 * fp32 if "avx512_bf16" in flags else None
    plural = "s" if cores > 1 else ""
    source = (f"{cores} core{plural} x {clock:g} GHz x {per_cycle} FLOPs/cycle "
              f"({fma_units} FMA x {vector_bits}-bit)")
    if spec is not None:
        source += f"; {spec.name}: {spec.source}"
    return HardwarePeak("cpu", cpu_model(), fp32, bf16_gflops=bf16, source=source,
                        assumptions=tuple(assumptions))


def gpu_peak(name: str) -> HardwarePeak:
    """The data-sheet peak of a GPU known by its name (as PyTorch reports it, or as stored in a
    saved result): the first row of :data:`GPU_TABLE` whose key is in ``name``. An unknown GPU
    gets ``fp32_gflops=None``. "H200"/"H100" rows are the SXM parts: a stored name does not say
    SXM or NVL."""
    for key, fp32, tf32, bf16, sheet in GPU_TABLE:
        if key in name:
            return HardwarePeak("cuda", name, fp32 * 1e3, bf16_gflops=bf16 and bf16 * 1e3,
                                tf32_gflops=tf32 and tf32 * 1e3, source=sheet)
    return HardwarePeak("cuda", name, None, source="GPU not in the data-sheet table")


def _gpu_hardware_peak(device: torch.device) -> HardwarePeak:
    name = torch.cuda.get_device_name(device)
    sheet = gpu_peak(name)
    if sheet.fp32_gflops is not None:
        return sheet
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "clock_rate", None)
    if not clock_khz:
        return HardwarePeak("cuda", name, None, source="GPU not in the table, clock unknown")
    fp32 = props.multi_processor_count * clock_khz / 1e6 * 128 * 2
    return HardwarePeak("cuda", name, fp32,
                        source=f"{props.multi_processor_count} SMs x {clock_khz / 1e6:g} GHz x "
                               "128 FP32 lanes x 2",
                        assumptions=("128 FP32 lanes per SM (Ampere and later)",))


def hardware_peak(device: str | torch.device = "cpu", *, threads: int | None = None
                  ) -> HardwarePeak:
    """The theoretical peak of ``device`` (see the module's docstring for how it is found).

    Args:
        device: ``"cpu"`` or a CUDA device.
        threads: on a CPU, the threads the measured kernels use (default: PyTorch's intra-op
            threads); the peak counts that many physical cores.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return _gpu_hardware_peak(dev)
    if dev.type != "cpu":
        raise ValueError(f"Invalid device: {device!r} (cpu or cuda)")
    return _cpu_hardware_peak(threads)
