import math
import time

import pytest
import torch

from cnnlab.perf import (
    Peak,
    Timing,
    bf16_support,
    cpu_model,
    gflops,
    hardware_summary,
    matmul_flops,
    matmul_gflops,
    measure_peak,
    model_flops,
    num_threads,
    synchronize,
    time_fn,
    time_interleaved,
)


def test_hardware_summary_names_cpu_threads_and_torch():
    text = hardware_summary()
    assert cpu_model() in text
    assert f"{torch.get_num_threads()} torch threads" in text
    assert torch.__version__.split("+")[0] in text
    assert ("GPU " in text) == torch.cuda.is_available()


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


def test_timing_median_and_spread():
    t = Timing("x", (3.0, 1.0, 2.0, 10.0, 2.0))
    assert t.median == 2.0
    assert t.spread == pytest.approx((10.0 - 1.0) / 2.0)


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


def test_flop_arithmetic():
    assert matmul_flops(2, 3, 4) == 48
    assert gflops(2e9, 0.5) == 4.0
    assert math.isnan(gflops(1.0, 0.0))
    with pytest.raises(ValueError, match="Invalid k value: 0"):
        matmul_flops(2, 0, 4)


def test_matmul_gflops_is_positive():
    with num_threads(1):
        assert matmul_gflops(64, repeats=2) > 0


def test_peak_is_the_larger_of_matmul_and_best_conv():
    p = Peak(matmul_gflops=50.0, conv_gflops=80.0, conv_name="cl", threads=1, device="cpu")
    assert p.gflops == 80.0 and p.source == "cl" and p.fraction(40.0) == 0.5
    with num_threads(1):
        q = measure_peak({"slow": 1e-6, "fast": 2e-6}, matmul_size=64, repeats=2)
    assert q.source == "matmul" and q.gflops == q.matmul_gflops and q.conv_name == "fast"
    with num_threads(1):
        r = measure_peak({"huge": 1e9}, matmul_size=64, repeats=2)
    assert r.source == "huge" and r.fraction(1e9) == 1.0


def test_bf16_support_gives_a_reason_either_way():
    ok, reason = bf16_support("cpu")
    assert isinstance(ok, bool) and len(reason) > 10
    if not torch.cuda.is_available():
        ok_cuda, why = bf16_support("cuda")
        assert not ok_cuda and "bf16" in why


def test_synchronize_on_cpu_is_a_no_op():
    synchronize("cpu")
    synchronize(None)


def test_model_flops_counts_convolutions_and_matmuls():
    from cnnlab.models import SmallCNN
    from cnnlab.techniques import conv2d_flops

    m = SmallCNN(1, 10, input_size=8, width=4, hidden=16, separable=True)
    m.train()
    expected = (conv2d_flops(1, 4, 3, 8, 8, batch=2)  # conv1
                + conv2d_flops(4, 4, 3, 4, 4, groups=4, batch=2)  # depthwise
                + conv2d_flops(4, 8, 1, 4, 4, batch=2)  # pointwise
                + 2 * 2 * (8 * 2 * 2) * 16 + 2 * 2 * 16 * 10)  # fc1, fc2
    assert model_flops(m, torch.zeros(2, 1, 8, 8)) == expected
    assert m.training


def test_load_average_is_a_number_or_none():
    from cnnlab.perf import load_average

    value = load_average()
    assert value is None or value >= 0.0
