"""cnnlab.hardware: the theoretical peak, checked by hand and against a measured matrix product."""

import pytest
import torch

from cnnlab import hardware
from cnnlab.hardware import (
    CPU_TABLE,
    cpu_flops_per_cycle,
    cpu_peak,
    hardware_peak,
)
from cnnlab.perf import matmul_gflops


def test_cpu_formula_on_two_hand_worked_examples():
    # AMD EPYC 7763 (Zen 3): 2 FMA x 256 bits = 2 x 8 lanes x 2 = 32 FLOPs/cycle; 2 cores, 3.5 GHz
    assert cpu_flops_per_cycle(256, 2) == 32
    assert cpu_peak(2, 3.5, 256, 2) == pytest.approx(224.0)
    # Intel Xeon Platinum 8280 (Cascade Lake): 2 FMA x 512 bits = 64 FLOPs/cycle; 4 cores, 4.0 GHz
    assert cpu_flops_per_cycle(512, 2) == 64
    assert cpu_peak(4, 4.0, 512, 2) == pytest.approx(1024.0)
    with pytest.raises(ValueError, match="vector_bits=100"):
        cpu_flops_per_cycle(100, 2)
    with pytest.raises(ValueError, match="cores=0"):
        cpu_peak(0, 3.0, 256, 2)


def test_a_part_is_recognized_by_its_base_clock():
    milan = CPU_TABLE[("AuthenticAMD", 25, 1)]
    assert milan.boost_for(2.445)[0] == 3.5  # what this kind of VM reports as "cpu MHz"
    assert milan.boost_for(None)[0] == milan.max_boost_ghz  # unknown part: the highest boost
    assert milan.boost_for(1.0)[0] == milan.max_boost_ghz


def test_the_peak_is_never_below_a_measured_matmul_here():
    for threads in (1, torch.get_num_threads()):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            peak = hardware_peak("cpu")
            measured = matmul_gflops(512, repeats=3)
        finally:
            torch.set_num_threads(old)
        if peak.fp32_gflops is None:
            pytest.skip(f"unknown CPU here: {peak.source}")
        assert peak.fp32_gflops >= measured, (peak, measured)
        assert peak.fraction(measured) == pytest.approx(measured / peak.fp32_gflops)
        cores = min(threads, hardware.physical_cores())
        assert f"{cores} core{'s' if cores > 1 else ''} x" in peak.source


def test_an_unknown_cpu_is_described_by_its_instruction_set(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"vendor_id": "Other", "cpu family": "1",
                                                       "model": "2"})
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(hardware, "_max_clock_ghz", lambda: 3.0)
    monkeypatch.setattr(hardware, "physical_cores", lambda: 4)
    peak = hardware_peak("cpu", threads=2)
    assert peak.fp32_gflops == pytest.approx(2 * 3.0 * 32)
    assert any("unknown CPU family" in a for a in peak.assumptions)
    monkeypatch.setattr(hardware, "_max_clock_ghz", lambda: None)
    assert hardware_peak("cpu").fp32_gflops is None  # no clock, no family: no peak claimed


def test_gpu_peaks_come_from_the_data_sheet_table(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    peak = hardware._gpu_hardware_peak(torch.device("cuda", 0))
    assert (peak.fp32_gflops, peak.tf32_gflops, peak.bf16_gflops) == (67000.0, 494700.0,
                                                                       989400.0)
    assert "H200 data sheet" in peak.source
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert hardware._gpu_hardware_peak(torch.device("cuda", 0)).fp32_gflops == 51200.0
    with pytest.raises(ValueError, match="Invalid device"):
        hardware_peak("meta")
