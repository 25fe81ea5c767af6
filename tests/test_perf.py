import math
import os
import re
import time

import pytest
import torch

from cnnlab import perf
from cnnlab.perf import (
    Ratio,
    Timing,
    bf16_support,
    cpu_flags,
    cpu_model,
    gflops,
    hardware_summary,
    load_average,
    matmul_flops,
    matmul_gflops,
    matmul_timing,
    model_flops,
    num_threads,
    synchronize,
    throughput_fraction,
    time_fn,
    time_interleaved,
    time_ratio,
)


class FakeClock:
    """A ``time.perf_counter`` that only moves when a test says so: timed functions advance it
    by a cost the test chose (powers of two, so that every difference is exact)."""

    def __init__(self, log=None):
        self.now = 0.0
        self.log = log

    def __call__(self):
        if self.log is not None:
            self.log.append("clock")
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture()
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


def proc_cpuinfo(field):
    """The first ``field: value`` of /proc/cpuinfo, read independently of cnnlab."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    m = re.search(rf"^{field}\s*:\s*(.*)$", text, flags=re.MULTILINE)
    return m.group(1).strip() if m else None


# ----------------------------------------------------------------------------- hardware


def test_cpu_model_and_flags_are_read_from_proc_cpuinfo():
    model = proc_cpuinfo("model name")
    if model is None:
        pytest.skip("no 'model name' in /proc/cpuinfo on this machine")
    assert cpu_model() == model
    flags = proc_cpuinfo("flags")
    assert cpu_flags() == (set(flags.split()) if flags else set())


def test_hardware_summary_names_cpu_cores_threads_and_torch():
    text = hardware_summary()
    model = proc_cpuinfo("model name")
    if model is not None:
        assert text.startswith(f"{model}, {os.cpu_count()} cores, ")
    assert f"{torch.get_num_threads()} torch threads" in text
    assert text.endswith(f"PyTorch {torch.__version__.split('+')[0]}")
    assert ("GPU " in text) == torch.cuda.is_available()
    assert ("no GPU" in text) == (not torch.cuda.is_available())


def test_hardware_summary_names_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake H100")
    text = hardware_summary()
    assert "; GPU Fake H100; " in text and "no GPU" not in text


def test_load_average_is_the_first_figure_of_getloadavg(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.25, 7.0, 9.0))
    assert load_average() == 1.25

    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert load_average() is None
    monkeypatch.delattr(os, "getloadavg")  # Windows has no getloadavg
    assert load_average() is None


# ----------------------------------------------------------------------------- timing


def test_time_interleaved_calls_each_variant_in_rotating_rounds():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    out = time_interleaved(fns, repeats=3, number=2, warmup=1)
    assert list(out) == ["a", "b", "c"]
    assert all(isinstance(t, Timing) and len(t.times) == 3 for t in out.values())
    assert calls[:3] == ["a", "b", "c"]  # warm-up, one call each
    rounds = calls[3:]
    assert len(rounds) == 3 * 3 * 2
    firsts = [rounds[i * 6] for i in range(3)]
    assert firsts == ["a", "b", "c"]  # the order rotates: no variant is always first
    assert all(calls.count(n) == 1 + 3 * 2 for n in "abc")


def test_time_interleaved_reports_each_functions_own_seconds_per_call(clock):
    # Each function costs what the test says: 64 s on its warm-up call (which must not be
    # counted), then a per-round cost, the same for each of the `number` calls of a round.
    costs = {"a": [0.5, 0.25, 2.0], "b": [0.125, 0.125, 0.375], "c": [4.0, 1.0, 1.0]}
    number = 4
    done = {name: 0 for name in costs}

    def make(name):
        def call():
            k = done[name]
            done[name] += 1
            clock.advance(64.0 if k == 0 else costs[name][(k - 1) // number])
        return call

    out = time_interleaved({n: make(n) for n in costs}, repeats=3, number=number, warmup=1)
    for name, seq in costs.items():
        assert out[name].name == name
        assert out[name].times == tuple(seq)  # seconds per call, in the order run
    assert out["a"].median == 0.5 and out["b"].median == 0.125 and out["c"].median == 1.0
    assert out["a"].spread == (2.0 - 0.25) / 0.5


def test_time_fn_is_time_interleaved_of_one_function(clock):
    seq = iter([8.0, 0.5, 0.25, 0.75, 2.0])  # one warm-up, then four repeats

    t = time_fn(lambda: clock.advance(next(seq)), repeats=4, warmup=1)
    assert t.times == (0.5, 0.25, 0.75, 2.0)
    assert t.median == 0.625  # the mean of the middle two, not of all four


def test_timing_median_and_spread():
    t = Timing("x", (3.0, 1.0, 2.0, 10.0, 2.0))
    assert t.median == 2.0
    assert t.spread == pytest.approx((10.0 - 1.0) / 2.0)
    assert Timing("zero", (0.0, 0.0)).spread == 0.0


def test_time_fn_measures_sleep():
    t = time_fn(lambda: time.sleep(0.01), repeats=3, warmup=0)
    assert 0.009 < t.median < 0.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"repeats": 0}, "Invalid repeats value: 0"),
    ({"number": -1}, "Invalid number value: -1"),
    ({"warmup": -2}, "Invalid warmup value: -2"),
])
def test_time_interleaved_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        time_interleaved({"a": lambda: None}, **kwargs)
    with pytest.raises(ValueError, match="nothing to time"):
        time_interleaved({})


def test_synchronize_waits_for_cuda_devices_only(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    for device in ("cpu", None, torch.device("cpu"), "meta"):
        synchronize(device)
    assert synced == []
    synchronize("cuda")
    synchronize(torch.device("cuda", 1))
    assert synced == [torch.device("cuda"), torch.device("cuda", 1)]


def test_time_interleaved_on_cuda_synchronizes_around_every_measurement(monkeypatch):
    log = []
    monkeypatch.setattr(time, "perf_counter", FakeClock(log))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    time_interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")},
                     repeats=2, warmup=0, device="cuda")
    calls = [i for i, e in enumerate(log) if e in "ab"]
    assert len(calls) == 4
    for i in calls:  # queued kernels finished before the clock starts and before it stops
        assert log[i - 2:i] == ["sync", "clock"] and log[i + 1:i + 3] == ["sync", "clock"]

    log.clear()
    time_interleaved({"a": lambda: log.append("a")}, repeats=2, warmup=0, device="cpu")
    assert "sync" not in log


def test_num_threads_sets_and_restores():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with num_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="Invalid number of threads: 0"):
        with num_threads(0):
            pass


# ----------------------------------------------------------------------------- FLOP/s and peak


def test_flop_arithmetic():
    assert matmul_flops(2, 3, 4) == 48
    assert gflops(2e9, 0.5) == 4.0
    assert gflops(0, 1.0) == 0.0
    assert math.isnan(gflops(1.0, 0.0))
    with pytest.raises(ValueError, match="Invalid k value: 0"):
        matmul_flops(2, 0, 4)
    with pytest.raises(ValueError, match="Invalid flops value"):
        gflops(-1.0, 1.0)


@pytest.mark.parametrize(("m", "k", "n"), [(2, 3, 4), (7, 1, 5), (16, 9, 33)])
def test_matmul_flops_agree_with_torch_flop_counter(m, k, n):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        torch.mm(torch.zeros(m, k), torch.zeros(k, n))
    assert matmul_flops(m, k, n) == counter.get_total_flops() == 2 * m * k * n


def fake_matmuls(monkeypatch, clock, costs):
    """Make ``torch.mm`` cost ``costs[i]`` seconds on its i-th call (and record its operands)."""
    real_mm, calls = torch.mm, []

    def mm(a, b):
        calls.append((tuple(a.shape), tuple(b.shape), a.dtype, a.device.type))
        clock.advance(costs[len(calls) - 1])
        return real_mm(a, b)

    monkeypatch.setattr(torch, "mm", mm)
    return calls


def test_matmul_gflops_is_two_n_cubed_over_the_median_time(monkeypatch, clock):
    # two warm-up calls (slow, not counted), then three repeats of 1, 4 and 2 s: median 2 s
    calls = fake_matmuls(monkeypatch, clock, [100.0, 100.0, 1.0, 4.0, 2.0])
    value = matmul_gflops(48, repeats=3, dtype=torch.float64)
    assert value == pytest.approx(2 * 48 ** 3 / 2.0 / 1e9, rel=1e-12)
    assert calls == [((48, 48), (48, 48), torch.float64, "cpu")] * 5


def test_matmul_gflops_is_in_a_plausible_range_for_a_real_product():
    with num_threads(1):
        value = matmul_gflops(64, repeats=2)
    assert 0.01 < value < 1e4  # a 2 GHz core does ~1-100 fp32 GFLOP/s; far outside is a bug


def test_matmul_timing_keeps_every_repeat(monkeypatch, clock):
    fake_matmuls(monkeypatch, clock, [100.0, 100.0, 1.0, 4.0, 2.0])
    t = matmul_timing(16, repeats=3)
    assert t.times == (1.0, 4.0, 2.0) and t.median == 2.0  # the 2 warm-up calls are not kept


# ----------------------------------------------------------------------------- ratios

T_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (from tables)


def test_time_ratio_by_hand():
    # paired ratios 2, 2, 4: logs (1, 1, 2) ln 2, mean 4/3 ln 2, sd ln2 / sqrt(3)
    r = time_ratio([2.0, 4.0, 8.0], [1.0, 2.0, 2.0])
    half = T_975_2 * (math.log(2) / math.sqrt(3)) / math.sqrt(3)
    assert r.value == pytest.approx(2 ** (4 / 3))  # the geometric mean, not 8/3 (the mean)
    assert r.low == pytest.approx(2 ** (4 / 3) * math.exp(-half))
    assert r.high == pytest.approx(2 ** (4 / 3) * math.exp(half))
    assert r.n == 3 and r.decision == 0  # the interval (0.93 to 6.81) holds 1
    assert r.word("slower", "faster") == "no measurable difference on this machine"
    assert r.text() == "2.52x (95% CI 0.93x to 6.81x, 3 repeats)"
    assert r.interval() == [pytest.approx(r.low), pytest.approx(r.high)]
    # Timing objects pair the same way (times in the order run)
    assert time_ratio(Timing("a", (2.0, 4.0, 8.0)), Timing("b", (1.0, 2.0, 2.0))) == r


def test_time_ratio_verdicts_for_each_case():
    slower = time_ratio([2.0, 2.2, 1.9], [1.0, 1.05, 1.0])  # a takes about twice as long
    assert slower.decision == 1 and slower.low > 1
    assert slower.word("slower", "faster") == "slower"
    assert slower.word(above="a speed-up", below="a slow-down") == "a speed-up"
    faster = time_ratio([1.0, 1.1, 1.05], [2.0, 2.0, 2.1])
    assert faster.decision == -1 and faster.high < 1
    assert faster.word("slower", "faster") == "faster"
    one = time_ratio([3.0], [2.0])  # one pair: a ratio, no interval
    assert one.value == 1.5 and one.n == 1 and one.decision is None
    assert math.isnan(one.low) and one.interval() == [None, None]
    assert one.word("slower", "faster") == "one repeat: no interval"
    assert one.text() == "1.50x (1 repeat, no interval)"
    with pytest.raises(ValueError, match="same"):
        time_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        time_ratio([1.0, 0.0], [1.0, 1.0])


def test_throughput_fraction_is_the_time_at_the_peak_over_the_time_taken():
    # 1 GFLOP per call at a 20 GFLOP/s peak takes 0.05 s: 0.1 s is half the peak, 0.2 s a quarter
    same = throughput_fraction(1e9, [0.1, 0.1, 0.1], 20.0)
    assert (same.value, same.low, same.high) == (pytest.approx(0.5),) * 3
    mixed = throughput_fraction(1e9, Timing("conv", (0.1, 0.2)), 20.0)
    assert mixed.value == pytest.approx(math.sqrt(0.5 * 0.25))
    assert mixed.low < mixed.value < mixed.high and mixed.n == 2
    assert isinstance(mixed, Ratio)
    with pytest.raises(ValueError, match="peak_gflops"):
        throughput_fraction(1e9, [0.1], 0.0)
    with pytest.raises(ValueError, match="flops"):
        throughput_fraction(0, [0.1], 10.0)


def test_model_flops_counts_convolutions_and_matmuls():
    from cnnlab.models import SmallCNN

    def conv(c_in, c_out, k, h, w, groups=1, batch=2):  # 2 N C_out H W (C_in / g) k^2
        return 2 * batch * c_out * h * w * (c_in // groups) * k * k

    m = SmallCNN(1, 10, input_size=8, width=4, hidden=16, separable=True)
    m.train()
    expected = (conv(1, 4, 3, 8, 8)  # conv1
                + conv(4, 4, 3, 4, 4, groups=4)  # depthwise
                + conv(4, 8, 1, 4, 4)  # pointwise
                + 2 * 2 * (8 * 2 * 2) * 16 + 2 * 2 * 16 * 10)  # fc1, fc2
    assert model_flops(m, torch.zeros(2, 1, 8, 8)) == expected
    assert m.training
    m.eval()
    model_flops(m, torch.zeros(1, 1, 8, 8))
    assert not m.training  # the mode is restored, whichever it was


# ----------------------------------------------------------------------------- capabilities


def test_bf16_support_on_the_cpu_follows_its_flags(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(perf, "cpu_flags", lambda: {"sse2", "avx512_bf16", "amx_bf16"})
    ok, reason = bf16_support("cpu")
    assert ok and "(amx_bf16, avx512_bf16)" in reason
    monkeypatch.setattr(perf, "cpu_flags", lambda: {"sse2", "avx2", "avx512f"})
    ok, reason = bf16_support("cpu")
    assert not ok and "neither AMX nor AVX-512 BF16" in reason and "emulated" in reason
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    monkeypatch.setattr(perf, "cpu_flags", lambda: {"amx_bf16"})
    ok, reason = bf16_support("cpu")
    assert not ok and "no oneDNN" in reason


def test_bf16_support_on_this_cpu_matches_proc_cpuinfo():
    flags = set((proc_cpuinfo("flags") or "").split())
    expected = torch.backends.mkldnn.is_available() and bool(flags & {"amx_bf16", "avx512_bf16"})
    assert bf16_support("cpu")[0] == expected


def test_bf16_support_on_cuda_asks_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake A100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert bf16_support("cuda") == (True, "Fake A100 supports bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    ok, reason = bf16_support("cuda")
    assert not ok and "compute capability 8.0" in reason
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = bf16_support(torch.device("cuda"))
    assert not ok and "bf16" in reason
