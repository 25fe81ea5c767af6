"""The benchmark's figures against references computed here (hand FLOP counts, parameter sums,
medians and paired ratios of the raw repeats it reports, the data-sheet peak of the stored GPU
results), and its table's numbers parsed back (tiny sizes; no timed assertions)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode

from cnnlab import bench
from cnnlab.bench import (
    CONV_CL,
    CONV_IM2COL,
    CONV_NAIVE,
    CONV_NCHW,
    DDP_PARALLEL,
    DDP_SINGLE,
    DDP_THREADS,
    STEP_BF16,
    STEP_CL,
    STEP_COMPILE,
    STEP_NCHW,
    Autocast,
    BenchConfig,
    Goal,
    GoalCheck,
    bench_conv,
    bench_naive,
    bench_separable,
    bench_threads,
    bench_train_step,
    check_goals,
    format_part,
    format_table,
        grad_bytes,
    load_results,
    peak_figures,
    run_bench,
    save_results,
    step_flops,
    tf32,
    time_ratio,
    update_results,
)
from cnnlab.bench.core import _ratio_fields
from cnnlab.cli import main
from cnnlab.config import RunConfig
from cnnlab.experiments import run
from cnnlab.hardware import HardwarePeak, gpu_peak, hardware_peak
from cnnlab.models import build_model, conv_layer_model, dense_layer_model
from cnnlab.parallel import time_to_target
from cnnlab.perf import Ratio, bf16_support, cpu_model, model_flops, num_threads
from cnnlab.techniques.conv import layer_costs, shift_image, translation_error

TINY = BenchConfig.tiny(threads=1)
TINY3 = replace(TINY, repeats=3)  # three repeats: a median is no longer the mean
DATA = Path(__file__).parents[1] / "book" / "data"
GOALS = (  # targets as a page would set them (the package knows none)
    Goal("channels_last F.conv2d >= 60% of the hardware peak", "peak",
         ("fraction_hardware", CONV_CL), ">=", 0.6, "{:.0%}",
         interval=("fraction_hardware_ci", CONV_CL)),
    Goal("im2col conv2d forward within 3x of F.conv2d (NCHW)", "conv", ("ratio_im2col",), "<=",
         3.0, "{:.2f}x", interval=("ratio_im2col_ci",)),
    Goal("2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1", "ddp",
         ("speedup",), ">=", 1.4, "{:.2f}x", interval=("speedup_ci",)),
)


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


# ----------------------------------------------------------------------------- references


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """The reference for a time ratio ``a / b`` of paired repeats: the geometric mean of
    ``a[i] / b[i]`` and its 95% Student-t interval on the log scale (scipy's t quantile)."""
    logs = [math.log(x / y) for x, y in zip(a, b)]
    n, mean = len(logs), statistics.fmean(logs)
    if n < 2:
        return math.exp(mean), math.nan, math.nan
    half = scipy_stats.t.ppf(0.975, n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def check_ratio(result: dict, key: str, a: list[float], b: list[float]) -> None:
    """``result[key]`` and ``result[key + "_ci"]`` are the paired ratio of ``a`` over ``b``."""
    value, low, high = paired(a, b)
    assert result[key] == pytest.approx(value, rel=1e-12)
    assert result[f"{key}_ci"] == [pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12)]


def times_of(result: dict) -> dict[str, list[float]]:
    return {name: v["times"] for name, v in result["variants"].items()}


def medians(result: dict) -> dict[str, float]:
    """Each variant's median over the raw repeats the result reports."""
    return {name: statistics.median(v["times"]) for name, v in result["variants"].items()}


def check_variant_figures(result: dict, repeats: int, flops=None) -> dict[str, float]:
    """seconds = median of the reported times, spread = range / median, GFLOP/s = flops /
    seconds; returns the medians."""
    t = medians(result)
    for name, v in result["variants"].items():
        assert len(v["times"]) == repeats
        assert v["seconds"] == t[name]
        assert v["spread"] == pytest.approx((max(v["times"]) - min(v["times"])) / t[name])
        if flops is not None:
            f = flops[name] if isinstance(flops, dict) else flops
            assert v["gflops"] == pytest.approx(f / t[name] / 1e9, rel=1e-12)
    return t


def shown(text: str) -> tuple[float, float]:
    """A number as printed in a table -> (its value, half a unit of its last printed digit):
    "1.23 ms", "4.5 s", "12%", "1.00x", "2,400", "1.2e-07", "0.0176"."""
    text, scale = text.strip(), 1.0
    for suffix, factor in ((" ms", 1e-3), (" s", 1.0), ("%", 0.01), ("x", 1.0)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    mantissa, _, exponent = text.lower().partition("e")
    mantissa = mantissa.replace(",", "")
    power = 10.0 ** int(exponent) if exponent else 1.0
    decimals = len(mantissa.partition(".")[2])
    return float(mantissa) * power * scale, 0.5 * 10.0 ** -decimals * power * scale


def assert_shown(text: str, value: float) -> None:
    """``text`` is ``value`` rounded to the digits it prints."""
    number, half = shown(text)
    assert abs(number - value) <= half * (1 + 1e-9) + 1e-300, f"{text!r} does not show {value!r}"


def assert_shown_ci(text: str, value: float, low: float, high: float) -> None:
    """``text`` is "V (L-H)" with the unit on V and H ("1.92x (1.85-2.00x)", "31% (29-33%)"),
    each rounded from ``value``, ``low`` and ``high``."""
    m = re.fullmatch(r"(\S+) \((\S+?)-(\S+)\)", text.strip())
    assert m, f"{text!r} is not a value with its interval"
    unit = m[3][-1] if m[3][-1] in "x%" else ""
    assert_shown(m[1], value)
    assert_shown(m[2] + unit, low)
    assert_shown(m[3], high)


def table(text: str, first: str) -> dict[str, dict[str, str]]:
    """The table whose header's first cell is ``first``: row name -> {column: cell}. Cells are
    separated by two or more spaces."""
    lines = text.splitlines()
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines]
    start = next(i for i, c in enumerate(cells) if c[0] == first and len(c) > 1)
    header, rows = cells[start], {}
    for c in cells[start + 1:]:
        if len(c) != len(header):
            break
        rows[c[0]] = dict(zip(header[1:], c[1:]))
    return rows


def line_matching(text: str, pattern: str) -> re.Match:
    match = re.search(pattern, text, flags=re.MULTILINE)
    assert match, f"no line matches {pattern!r} in:\n{text}"
    return match


def test_shown_understands_the_table_formats():
    assert shown("1.23 ms") == (pytest.approx(1.23e-3), pytest.approx(0.5e-5))
    assert shown("2.5 s") == (2.5, pytest.approx(0.05))
    assert shown("12%") == (pytest.approx(0.12), pytest.approx(0.005))
    assert shown("1.00x") == (1.0, pytest.approx(0.005))
    assert shown("2,400") == (2400.0, 0.5)
    assert shown("1.2e-07") == (pytest.approx(1.2e-7), pytest.approx(0.05e-7))
    with pytest.raises(AssertionError):
        assert_shown("1.23 ms", 1.24e-3)


# ----------------------------------------------------------------------------- parts


def test_conv_part_figures_are_medians_and_hand_counted_flops():
    r = bench_conv(TINY3)
    n, c, o, h, k = 2, 4, 8, 8, 3
    flops = 2 * n * o * h * h * c * k * k  # 2 N C_out H W C_in k^2 (stride 1, same padding)
    assert r["shape"] == {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": k}
    assert r["flops"] == flops
    assert list(r["variants"]) == [CONV_IM2COL, CONV_NCHW, CONV_CL]
    check_variant_figures(r, 3, flops)
    t = times_of(r)  # ratios: the repeats paired round by round, not the medians
    check_ratio(r, "ratio_im2col", t[CONV_IM2COL], t[CONV_NCHW])
    check_ratio(r, "ratio_im2col_cl", t[CONV_IM2COL], t[CONV_CL])
    check_ratio(r, "speedup_cl", t[CONV_NCHW], t[CONV_CL])
    assert time_ratio(r, CONV_IM2COL, CONV_NCHW).value == r["ratio_im2col"]
    assert r["max_abs_diff"] < 1e-4
    assert r["input_bytes"] == n * c * h * h * 4
    assert r["im2col_bytes"] == n * (c * k * k) * (h * h) * 4  # one column per output pixel
    assert r["im2col_ratio"] == 9.0  # 3x3, stride 1, same padding: k^2


def test_conv_table_shows_the_measured_figures():
    r = bench_conv(TINY3)
    text = format_part("conv", r)
    m = line_matching(text, r"^\[conv\] (\d+)->(\d+) channels, (\d+)x\3, on (\d+)x\1x(\d+)x\5 "
                            r"\((\S+) GFLOP per call\)$")
    s = r["shape"]
    assert [int(m[i]) for i in (1, 2, 3, 4, 5)] == [s["in_channels"], s["out_channels"],
                                                    s["kernel"], s["batch"], s["size"]]
    assert_shown(m[6], r["flops"] / 1e9)
    rows = table(text, "variant")
    assert list(rows) == list(r["variants"])
    t = times_of(r)
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
        if name == CONV_NCHW:
            assert rows[name]["time vs NCHW"] == "1.00x"
        else:
            assert_shown_ci(rows[name]["time vs NCHW"], *paired(t[name], t[CONV_NCHW]))
        assert_shown(rows[name]["spread"], v["spread"])
    assert "of hw peak" not in text  # no peak part: no fraction columns
    m = line_matching(text, r"im2col matrix (\S+) MiB = (\S+)x the input; "
                            r"max \|im2col - F\.conv2d\| = (\S+)$")
    assert_shown(m[1], r["im2col_bytes"] / 2**20)
    assert_shown(m[2], r["im2col_ratio"])
    assert_shown(m[3], r["max_abs_diff"])


def test_naive_part_gives_the_same_output_and_its_table_shows_its_figures():
    r = bench_naive(TINY, shape=(1, 3, 8, 4))
    flops = 2 * 1 * 4 * 8 * 8 * 3 * 9
    assert r["flops"] == flops
    assert list(r["variants"]) == [CONV_NAIVE, CONV_IM2COL, CONV_NCHW]
    assert all(v["max_abs_diff"] < 1e-4 for v in r["variants"].values())
    assert r["variants"][CONV_NCHW]["max_abs_diff"] == 0.0  # the reference itself
    check_variant_figures(r, 3, flops)  # at least 3 repeats, whatever the config says
    t = times_of(r)
    check_ratio(r, "slowdown_naive", t[CONV_NAIVE], t[CONV_NCHW])
    text = format_part("naive", r)
    assert text.splitlines()[0] == "[naive] on the CPU, tiny input 1x3x8x8 -> 4 channels"
    rows = table(text, "variant")
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
        if name != CONV_NCHW:
            assert_shown_ci(rows[name]["time vs F.conv2d"], *paired(t[name], t[CONV_NCHW]))
        assert_shown(rows[name]["max |diff|"], v["max_abs_diff"])


def test_separable_part_counts_params_and_flops_and_its_table_shows_them():
    r = bench_separable(TINY3)
    n, c, o, h = TINY3.batch, TINY3.in_channels, TINY3.out_channels, TINY3.size
    standard = torch.nn.Conv2d(c, o, 3, bias=False)
    separable = [torch.nn.Conv2d(c, c, 3, groups=c, bias=False), torch.nn.Conv2d(c, o, 1,
                                                                                 bias=False)]
    params = {"standard": n_params(standard), "separable": sum(map(n_params, separable))}
    assert params == {"standard": o * c * 9, "separable": c * 9 + c * o}
    assert r["params"] == params
    flops = {"standard": 3 * 2 * n * h * h * o * c * 9,  # forward, and twice that backward
             "separable": 3 * 2 * n * h * h * (c * 9 + o * c)}
    assert r["flops"] == flops
    check_variant_figures(r, 3, flops)
    t = times_of(r)
    assert r["param_ratio"] == pytest.approx(params["separable"] / params["standard"])
    assert r["flop_ratio"] == pytest.approx(flops["separable"] / flops["standard"])
    check_ratio(r, "time_ratio", t["separable"], t["standard"])
    text = format_part("separable", r)
    rows = table(text, "layer")
    for name, v in r["variants"].items():
        assert_shown(rows[name]["params"], params[name])
        assert_shown(rows[name]["GFLOP"], flops[name] / 1e9)
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
    m = line_matching(text, r"separable / standard: params (\S+), FLOPs (\S+), time (.+)$")
    assert_shown(m[1], r["param_ratio"])
    assert_shown(m[2], r["flop_ratio"])
    assert_shown_ci(m[3], r["time_ratio"], *r["time_ratio_ci"])


def test_step_part_times_every_variant_and_names_what_it_skipped():
    with num_threads(2):
        r = bench_train_step(TINY3)  # on step_threads = 1, whatever the caller's count
        assert torch.get_num_threads() == 2
    assert r["threads"] == 1
    ok, reason = bf16_support("cpu")
    assert r["bf16_reason"] == reason
    assert list(r["variants"]) == [STEP_NCHW, STEP_CL] + ([STEP_BF16] if ok else [])
    assert r["skipped_variants"] == {**({} if ok else {STEP_BF16: reason}),
                                     STEP_COMPILE: "not requested (compile=False)"}
    flops = 3 * model_forward_flops(TINY3)  # the step counted as three forward passes
    assert r["flops"] == flops == step_flops(r["shape"])
    check_variant_figures(r, 3, flops)
    t = times_of(r)
    for name, v in r["variants"].items():
        check_ratio(v, "speedup", t[STEP_NCHW], t[name])
    text = format_part("step", r)
    assert text.splitlines()[0] == ("[step] SmallCNN width 4, batch 8 of 8x8: forward + "
                                    "backward + SGD, 1 thread(s)")
    rows = table(text, "variant")
    assert list(rows) == list(r["variants"])
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time/step"], v["seconds"])
        if name != STEP_NCHW:
            assert_shown_ci(rows[name]["speed-up vs NCHW"], v["speedup"], *v["speedup_ci"])
        assert_shown(rows[name]["spread"], v["spread"])
    m = line_matching(text, r"^  (\S+) GFLOP per step \(3 forward passes\): fp32 NCHW at (\S+) "
                            r"GFLOP/s$")
    assert_shown(m[1], flops / 1e9)
    assert_shown(m[2], r["variants"][STEP_NCHW]["gflops"])
    for name, why in r["skipped_variants"].items():
        assert f"  skipped {name}: {why}" in text.splitlines()


def model_forward_flops(cfg: BenchConfig) -> int:
    """FLOPs of one forward pass of the step part's SmallCNN, from torch's own counter."""
    model = build_model((1, cfg.step_size, cfg.step_size), 10, width=cfg.step_width)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(cfg.step_batch, 1, cfg.step_size, cfg.step_size))
    return counter.get_total_flops()


def test_step_flops_count_three_forward_passes_at_least_the_backward_pass():
    shape = {"batch": 4, "width": 4, "size": 8}
    model = build_model((1, 8, 8), 10, width=4)
    x = torch.zeros(4, 1, 8, 8)
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as both:
        F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)).backward()
    assert step_flops(shape) == 3 * forward.get_total_flops()
    # autograd skips the first layer's input gradient: the count is a slight overcount
    assert forward.get_total_flops() < both.get_total_flops() <= step_flops(shape)


def test_a_failing_compile_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    r = bench_train_step(replace(TINY, compile=True))
    assert r["skipped_variants"][STEP_COMPILE] == (
        "torch.compile failed: RuntimeError: no compiler here")
    assert STEP_COMPILE not in r["variants"]


def test_threads_part_speedup_is_the_ratio_of_the_median_step_times():
    r = bench_threads(TINY3, counts=(1, 2))
    assert list(r["variants"]) == ["1 thread", "2 threads"] and r["cores"] == os.cpu_count()
    check_variant_figures(r, 3)
    t = times_of(r)
    check_ratio(r, "speedup", t["1 thread"], t["2 threads"])
    text = format_part("threads", r)
    rows = table(text, "threads")
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time/step"], v["seconds"])
        assert_shown(rows[name]["spread"], v["spread"])
    assert_shown_ci(line_matching(text, r"^  speed-up: (.+)$")[1], r["speedup"],
                    *r["speedup_ci"])


def test_threads_part_runs_each_variant_with_its_thread_count(monkeypatch):
    seen = []
    real_loss = F.cross_entropy

    def spy(*args, **kwargs):  # the loss of each training step
        seen.append(torch.get_num_threads())
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    bench_threads(replace(TINY, repeats=1), counts=(1, 2))
    assert sorted(set(seen)) == [1, 2]
    assert torch.get_num_threads() == 1  # restored


def test_run_bench_table_shows_the_hardware_peak_the_matmul_and_the_goals():
    res = run_bench(TINY3, parts=["conv", "naive", "peak", "separable", "threads"])
    conv, peak = res["conv"], res["peak"]
    hw = hardware_peak("cpu", threads=1)  # the reference: the peak does not use the measurements
    assert peak["hardware"]["fp32_gflops"] == hw.fp32_gflops
    assert peak["hardware"]["source"] == hw.source
    assert peak["hardware_gflops"] == hw.fp32_gflops and peak["precision"] == "fp32"
    assert len(peak["matmul_times"]) == 3 and peak["threads"] == 1
    n = TINY3.matmul_size
    assert peak["matmul_gflops"] == pytest.approx(
        2 * n**3 / statistics.median(peak["matmul_times"]) / 1e9, rel=1e-12)
    for name, v in conv["variants"].items():
        assert peak["fraction_matmul"][name] == pytest.approx(v["gflops"] / peak["matmul_gflops"])
        if hw.fp32_gflops is None:
            assert peak["fraction_hardware"][name] is None
            continue
        ideal = [conv["flops"] / (hw.fp32_gflops * 1e9)] * len(v["times"])
        check_ratio({"f": peak["fraction_hardware"][name],
                     "f_ci": peak["fraction_hardware_ci"][name]}, "f", ideal, v["times"])

    text = format_table(res, goals=GOALS)
    head = text.splitlines()[:2]
    assert head[0].startswith(f"CNN Lab benchmark on {cpu_model()} (cpu); CPU {cpu_model()}, "
                              f"{os.cpu_count()} cores, 1 torch threads; PyTorch ")
    assert head[1].startswith("times are medians of 3 interleaved repeats, ratios geometric "
                              "means of the paired repeats with their 95% intervals")
    for header in ("[conv]", "[naive]", "[peak]", "[separable]", "[threads]", "goals"):
        assert header in text
    rows = table(text, "variant")  # the conv table: the first one
    for name in conv["variants"]:
        assert_shown(rows[name]["of matmul"], peak["fraction_matmul"][name])
        if hw.fp32_gflops is not None:
            assert_shown_ci(rows[name]["of hw peak"], peak["fraction_hardware"][name],
                            *peak["fraction_hardware_ci"][name])
    if hw.fp32_gflops is not None:
        m = line_matching(text, r"^\[peak\] hardware peak, fp32: (\S+) GFLOP/s \((.+)\)$")
        assert_shown(m[1], hw.fp32_gflops)
        assert m[2] == hw.source
    for a in hw.assumptions:
        assert f"  assumed: {a}" in text.splitlines()
    m = line_matching(text, r"^  measured on 1 thread\(s\): fp32 matmul (\d+)\^3 (\S+) GFLOP/s")
    assert int(m[1]) == n
    assert_shown(m[2], peak["matmul_gflops"])
    peak_rows = table(text, "convolution")
    assert list(peak_rows) == list(conv["variants"])

    checks = {c.description: c for c in check_goals(res, GOALS)}
    cl = checks["channels_last F.conv2d >= 60% of the hardware peak"]
    assert cl.value == peak["fraction_hardware"][CONV_CL]
    if cl.value is not None:
        low, high = peak["fraction_hardware_ci"][CONV_CL]
        assert (cl.low, cl.high) == (low, high)
        assert cl.status == ("met" if low >= 0.6 else "missed" if high < 0.6 else "undecided")
    im2col = checks["im2col conv2d forward within 3x of F.conv2d (NCHW)"]
    low, high = conv["ratio_im2col_ci"]
    assert (im2col.value, im2col.low, im2col.high) == (conv["ratio_im2col"], low, high)
    assert im2col.status == ("met" if high <= 3 else "missed" if low > 3 else "undecided")
    assert checks["2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1"].status == (
        "not measured")
    words = {"met": "met", "missed": "MISSED", "undecided": "undecided (the interval holds the "
             "target)"}
    for desc, c in checks.items():
        if c.value is None:
            assert f"  {desc}: not measured" in text  # the ddp goal: its part was not run
            continue
        m = line_matching(text, rf"^  {re.escape(desc)}: (\S+) \(95% CI (\S+) to (\S+)\) -> "
                                r"(.+)$")
        for got, want in zip(m.groups()[:3], (c.value, c.low, c.high)):
            assert_shown(got, want)
        assert m[4] == words[c.status]
    only = format_table(res, ["conv"], header=False)
    assert only.startswith("[conv]") and "[peak]" not in only and "goals" not in only
    assert "goals" not in format_table(res)  # no goals given, no goals section


def test_check_goals_on_hand_made_results():
    res = {"conv": {"ratio_im2col": 2.5, "ratio_im2col_ci": [2.0, 3.1], "wide_ci": [None, None]},
           "peak": {"fraction_hardware": {CONV_CL: 0.5}},
           "ddp": {"skipped": "torchrun failed"}, "step": {"variants": {}}}
    goals = [
        Goal("im2col within 3x", "conv", ("ratio_im2col",), "<=", 3.0),  # met
        Goal("im2col within 2x", "conv", ("ratio_im2col",), "<=", 2.0),  # not met
        Goal("cl at 60% of peak", "peak", ("fraction_hardware", CONV_CL), ">=", 0.6),  # not met
        Goal("cl at 50% of peak", "peak", ("fraction_hardware", CONV_CL), ">=", 0.5),  # at bound
        Goal("cl above 50% of peak", "peak", ("fraction_hardware", CONV_CL), ">", 0.5),  # strict
        Goal("ratio below 2.6", "conv", ("ratio_im2col",), "<", 2.6),  # met
        Goal("ddp 1.4x", "ddp", ("speedup",), ">=", 1.4),  # skipped part
        Goal("threads 1.5x", "threads", ("speedup",), ">=", 1.5),  # part not run
        Goal("nchw share", "peak", ("fraction_hardware", CONV_NCHW), ">=", 0.1),  # key missing
        Goal("step speed-up", "step", ("variants", "x", "speedup"), ">=", 1.0),  # deeper missing
        # with the interval 2.0 to 3.1: the goal's side holds all of it, none of it, or a part
        Goal("ci within 3.2x", "conv", ("ratio_im2col",), "<=", 3.2, interval=("ratio_im2col_ci",)),
        Goal("ci within 1.9x", "conv", ("ratio_im2col",), "<=", 1.9, interval=("ratio_im2col_ci",)),
        Goal("ci within 3x", "conv", ("ratio_im2col",), "<=", 3.0, interval=("ratio_im2col_ci",)),
        Goal("ci at least 2x", "conv", ("ratio_im2col",), ">=", 2.0, interval=("ratio_im2col_ci",)),
        Goal("ci above 2x", "conv", ("ratio_im2col",), ">", 2.0, interval=("ratio_im2col_ci",)),
        Goal("no interval stored", "conv", ("ratio_im2col",), "<=", 3.0, interval=("wide_ci",)),
    ]
    got = [(c.description, c.value, c.low, c.high, c.status) for c in check_goals(res, goals)]
    assert got == [
        ("im2col within 3x", 2.5, None, None, "met"),
        ("im2col within 2x", 2.5, None, None, "missed"),
        ("cl at 60% of peak", 0.5, None, None, "missed"),
        ("cl at 50% of peak", 0.5, None, None, "met"),
        ("cl above 50% of peak", 0.5, None, None, "missed"),
        ("ratio below 2.6", 2.5, None, None, "met"),
        ("ddp 1.4x", None, None, None, "not measured"),
        ("threads 1.5x", None, None, None, "not measured"),
        ("nchw share", None, None, None, "not measured"),
        ("step speed-up", None, None, None, "not measured"),
        ("ci within 3.2x", 2.5, 2.0, 3.1, "met"),
        ("ci within 1.9x", 2.5, 2.0, 3.1, "missed"),
        ("ci within 3x", 2.5, 2.0, 3.1, "undecided"),
        ("ci at least 2x", 2.5, 2.0, 3.1, "met"),  # the bound itself meets ">="
        ("ci above 2x", 2.5, 2.0, 3.1, "undecided"),
        ("no interval stored", 2.5, None, None, "met"),
    ]
    checks = check_goals(res, goals)
    assert [c.met for c in checks[10:15]] == [True, False, None, True, None]
    assert isinstance(checks[0], GoalCheck)
    assert check_goals(res, []) == []
    shown_goals = [GOALS[0], GOALS[1], GOALS[2]]
    res["conv"]["ratio_im2col_ci"] = [2.9, 3.4]
    res["peak"]["fraction_hardware_ci"] = {CONV_CL: [0.45, 0.55]}
    lines = [bench.goal_line(g, c) for g, c in zip(shown_goals, check_goals(res, shown_goals))]
    assert lines == [
        "channels_last F.conv2d >= 60% of the hardware peak: 50% (95% CI 45% to 55%) -> MISSED",
        "im2col conv2d forward within 3x of F.conv2d (NCHW): 2.50x (95% CI 2.90x to 3.40x) -> "
        "undecided (the interval holds the target)",
        "2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1: not measured"]


def test_goals_are_validated():
    with pytest.raises(ValueError, match="Invalid comparison"):
        Goal("x", "conv", ("ratio_im2col",), "=>", 3.0)
    with pytest.raises(ValueError, match="Invalid key"):
        Goal("x", "conv", "ratio_im2col", "<=", 3.0)  # a bare string, not a path
    with pytest.raises(ValueError, match="Invalid key"):
        Goal("x", "conv", (), "<=", 3.0)
    with pytest.raises(ValueError, match="Invalid interval"):
        Goal("x", "conv", ("ratio_im2col",), "<=", 3.0, interval="ratio_im2col_ci")


def fake_conv(flops: float = 2e9) -> dict:
    """A conv part with hand-made repeats: 2 GFLOP per call at 0.1 s (20 GFLOP/s) or slower."""
    times = {CONV_IM2COL: [0.4, 0.4], CONV_NCHW: [0.1, 0.1], CONV_CL: [0.1, 0.2]}
    return {"flops": flops, "variants": {
        name: {"times": t, "seconds": statistics.median(t),
               "gflops": flops / statistics.median(t) / 1e9} for name, t in times.items()}}


def test_peak_fractions_against_a_known_hardware_peak_and_the_matmul():
    hw = HardwarePeak("cpu", "Fake", 80.0, source="2 cores x 2.5 GHz x 16 FLOPs/cycle",
                      assumptions=("the clock is assumed",))
    r = peak_figures(fake_conv(), hw, matmul_size=64, matmul_gflops=40.0, threads=2)
    # at 80 GFLOP/s the 2 GFLOP take 0.025 s: 0.4 s is 1/16 of the peak, 0.1 s a quarter
    assert r["fraction_hardware"][CONV_IM2COL] == pytest.approx(1 / 16)
    assert r["fraction_hardware"][CONV_NCHW] == pytest.approx(0.25)
    assert r["fraction_hardware_ci"][CONV_NCHW] == [pytest.approx(0.25), pytest.approx(0.25)]
    assert r["fraction_hardware"][CONV_CL] == pytest.approx(math.sqrt(0.25 * 0.125))
    low, high = r["fraction_hardware_ci"][CONV_CL]
    assert low < r["fraction_hardware"][CONV_CL] < high
    # against the matrix product: the medians' GFLOP/s over 40 GFLOP/s
    assert r["fraction_matmul"] == {CONV_IM2COL: pytest.approx(5 / 40), CONV_NCHW: 0.5,
                                    CONV_CL: pytest.approx(2e9 / 0.15 / 1e9 / 40)}
    assert r["matmul_of_hardware"] == 0.5 and r["hardware_gflops"] == 80.0
    text = format_part("peak", r)
    assert text.splitlines()[:3] == [
        "[peak] hardware peak, fp32: 80.0 GFLOP/s (2 cores x 2.5 GHz x 16 FLOPs/cycle)",
        "  assumed: the clock is assumed",
        "  measured on 2 thread(s): fp32 matmul 64^3 40.0 GFLOP/s = 50% of the fp32 hardware peak"]
    rows = table(text, "convolution")
    assert rows[CONV_NCHW] == {"of hw peak": "25% (25-25%)", "of matmul": "50%"}
    assert rows[CONV_IM2COL]["of hw peak"] == "6% (6-6%)"
    # a peak that is not known: no fraction of it, and the goal is not measured
    unknown = HardwarePeak("cpu", "Other", None, source="unknown CPU and clock")
    u = peak_figures(fake_conv(), unknown, matmul_size=64, matmul_gflops=40.0, threads=1)
    assert u["fraction_hardware"] == dict.fromkeys(u["fraction_matmul"])
    assert u["matmul_of_hardware"] is None and u["fraction_matmul"][CONV_NCHW] == 0.5
    assert format_part("peak", u).splitlines()[0] == (
        "[peak] hardware peak, fp32: unknown (unknown CPU and clock)")
    assert check_goals({"peak": u}, GOALS[:1])[0].status == "not measured"


def test_peak_part_uses_the_hardware_peak_not_the_measurements(monkeypatch):
    hw = HardwarePeak("cpu", "Fake", 1e6, source="a peak far above anything measured here")
    monkeypatch.setattr(bench.conv, "hardware_peak", lambda dev, threads=None: hw)
    conv = fake_conv(flops=1e12)  # 10 TFLOP/s "measured": faster than the matmul
    r = bench.bench_peak(TINY, conv)
    assert r["hardware_gflops"] == 1e6 and r["precision"] == "fp32"
    assert r["fraction_hardware"][CONV_NCHW] == pytest.approx(1e12 / 0.1 / 1e9 / 1e6)  # 1%
    assert r["fraction_matmul"][CONV_NCHW] > 1  # the conv beats the matmul: more than 100% of it
    assert 0 < r["matmul_gflops"] < 1e4 and r["matmul_size"] == TINY.matmul_size


def test_gpu_precision_follows_the_tf32_flags():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert bench.conv._precisions(cpu, {"cudnn": True, "matmul": True}) == ("fp32", "fp32")
    assert bench.conv._precisions(cuda, {"cudnn": False, "matmul": False}) == ("fp32", "fp32")
    assert bench.conv._precisions(cuda, {"cudnn": True, "matmul": False}) == ("tf32", "fp32")
    assert bench.conv._precisions(cuda, {"cudnn": True, "matmul": True}) == ("tf32", "tf32")


def test_gpu_peaks_by_name_come_from_the_data_sheet_table():
    h200 = gpu_peak("NVIDIA H200")
    assert (h200.fp32_gflops, h200.tf32_gflops, h200.bf16_gflops) == (67000.0, 494700.0,
                                                                       989400.0)
    assert "H200 data sheet" in h200.source
    assert gpu_peak("NVIDIA H100 PCIe").fp32_gflops == 51200.0  # before the SXM row
    assert gpu_peak("NVIDIA A100-SXM4-80GB").fp32_gflops == 19500.0
    assert gpu_peak("Tesla T4").tf32_gflops is None
    assert gpu_peak("Some GPU").fp32_gflops is None


def test_stored_gpu_results_are_read_against_the_data_sheet_peak():
    raw = load_results(DATA / "bench_cuda.json")
    assert raw["hardware"]["device_name"] == "NVIDIA H200"
    assert "fraction_hardware" not in raw["peak"]  # recorded before the hardware peak
    res = update_results(raw)
    assert "fraction_hardware" not in raw["peak"]  # a copy: the loaded dict is not changed
    peak, conv = res["peak"], res["conv"]
    assert peak["precision"] == "fp32" and peak["hardware_gflops"] == 67000.0  # H200, fp32
    assert peak["matmul_gflops"] == raw["peak"]["matmul_gflops"]
    assert peak["matmul_of_hardware"] == pytest.approx(raw["peak"]["matmul_gflops"] / 67000.0)
    for name, v in conv["variants"].items():
        ideal = [conv["flops"] / 67e12] * len(v["times"])  # seconds per call at 67 TFLOP/s
        check_ratio({"f": peak["fraction_hardware"][name],
                     "f_ci": peak["fraction_hardware_ci"][name]}, "f", ideal, v["times"])
        assert peak["fraction_matmul"][name] == pytest.approx(
            v["gflops"] / raw["peak"]["matmul_gflops"])
    t = times_of(conv)
    check_ratio(conv, "ratio_im2col", t[CONV_IM2COL], t[CONV_NCHW])
    check_ratio(conv, "speedup_cl", t[CONV_NCHW], t[CONV_CL])
    step = res["step"]
    assert step["flops"] == step_flops(raw["step"]["shape"])
    ts = times_of(step)
    for name, v in step["variants"].items():
        check_ratio(v, "speedup", ts[STEP_NCHW], ts[name])
        assert v["gflops"] == pytest.approx(step["flops"] / v["seconds"] / 1e9)
    st = times_of(res["separable"])
    check_ratio(res["separable"], "time_ratio", st["separable"], st["standard"])
    assert res["ddp"] == raw["ddp"]  # skipped parts stay as they were
    assert update_results(res) == res  # the current format comes back unchanged
    text = format_table(raw)  # the table reads stored results the same way
    assert_shown(line_matching(text, r"^\[peak\] hardware peak, fp32: (\S+) GFLOP/s")[1], 67000.0)
    rows = table(text, "convolution")
    for name in conv["variants"]:
        assert_shown_ci(rows[name]["of hw peak"], peak["fraction_hardware"][name],
                        *peak["fraction_hardware_ci"][name])


def test_stored_tf32_results_are_held_to_the_tf32_peak():
    raw = load_results(DATA / "bench_cuda_tf32.json")
    assert raw["hardware"]["tf32"] == {"matmul": True, "cudnn": True}
    peak = update_results(raw)["peak"]
    assert (peak["precision"], peak["matmul_precision"]) == ("tf32", "tf32")
    assert peak["hardware_gflops"] == 494700.0
    cl = raw["conv"]["variants"][CONV_CL]
    ideal = [raw["conv"]["flops"] / 494.7e12] * len(cl["times"])
    assert peak["fraction_hardware"][CONV_CL] == pytest.approx(paired(ideal, cl["times"])[0])


def test_unknown_part_is_rejected():
    with pytest.raises(ValueError, match="Unknown benchmark part"):
        run_bench(TINY, parts=["warp"])
    with pytest.raises(ValueError, match="Unknown benchmark part"):
        format_part("warp", {})


def test_a_part_that_fails_is_recorded_as_skipped(monkeypatch):
    def broken(cfg):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench.run, "bench_separable", broken)  # what run_bench calls
    res = run_bench(TINY, parts=["separable"])
    assert res["separable"]["skipped"] == "RuntimeError: boom"
    assert "[separable] skipped: RuntimeError: boom" in format_table(res)


def _canned_ddp(speedup: float) -> dict:
    single = [1.0, 1.1, 0.9]
    parallel = [t / speedup for t in single]  # the same speed-up in every round
    return {"world_size": 2, "backend": "gloo", "dataset": "digits",
            "config": {"train_size": 128, "batch_size": 64},
            "bench": {"single_times": single, "parallel_times": parallel,
                      "single_median": 1.0, "parallel_median": 1.0 / speedup,
                      "speedup": speedup, "steps_per_epoch": 2},
            "max_param_diff": 1e-7, "launch_seconds": 9.0, "grad_bytes": 3 * 2**20}


def _hardware(**overrides) -> dict:
    return {"cpu": "X", "cores": 2, "threads": 1, "torch": "2", "device": "cpu",
            "device_name": "X", **overrides}


def test_ddp_table_and_goals():
    res = {"hardware": _hardware(), "config": {"repeats": 3}, "ddp": _canned_ddp(1.6),
           "conv": {"skipped": "not here"}}
    text = format_table(res, goals=GOALS)
    assert ("[ddp] digits, 128 images/epoch, global batch 64, gloo, 3 interleaved rounds"
            in text.splitlines())
    rows = table(text, "setup")
    assert_shown(rows["1 process x 1 thread"]["s/epoch"], 1.0)
    assert_shown(rows["2 processes x 1 thread"]["s/epoch"], 1 / 1.6)
    m = line_matching(text, r"^  speed-up (.+); the whole launch, start-up included, "
                            r"took (\S+) s$")
    assert m[1] == "1.60x (1.60-1.60x)"  # the same ratio in every round: no spread
    assert_shown(m[2], 9.0)
    assert "  2 steps per epoch, each all-reducing 3 MiB of gradient" in text.splitlines()
    assert_shown(line_matching(text, r"--check: max \|param diff\| vs 1 process (\S+)$")[1], 1e-7)
    assert "[conv] skipped: not here" in text
    measured = {c.description: c for c in check_goals(res, GOALS)}
    ddp_goal = measured["2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1"]
    assert ddp_goal.value == pytest.approx(1.6) and ddp_goal.status == "met"
    assert "1.4x faster than 1 x 1: 1.60x (95% CI 1.60x to 1.60x) -> met" in text
    assert "  im2col conv2d forward within 3x of F.conv2d (NCHW): not measured" in text
    res["ddp"] = _canned_ddp(1.2)
    assert "1.4x faster than 1 x 1: 1.20x (95% CI 1.20x to 1.20x) -> MISSED" in format_table(
        res, goals=GOALS)
    noisy = _canned_ddp(1.0)
    noisy["bench"]["parallel_times"] = [0.5, 1.1, 1.2]  # ratios 2, 1, 0.75: a wide interval
    check = check_goals({"ddp": noisy}, GOALS[2:])[0]
    ref = paired(noisy["bench"]["single_times"], noisy["bench"]["parallel_times"])
    assert (check.value, check.low, check.high) == tuple(pytest.approx(x) for x in ref)
    assert check.status == "undecided" and ref[1] < 1.4 < ref[2]
    assert time_ratio(noisy, DDP_SINGLE, DDP_PARALLEL).value == pytest.approx(ref[0])


def test_ddp_gradient_bytes_are_the_models_parameters():
    model = build_model((1, 28, 28), 10, width=16)
    assert grad_bytes("fashion_mnist", 16) == 4 * sum(p.numel() for p in model.parameters())
    small = build_model((1, 8, 8), 10, width=4)
    assert grad_bytes("digits", 4) == 4 * n_params(small)


def test_the_table_says_whether_the_load_was_above_the_core_count(monkeypatch):
    def second_line(loads):
        res = {"hardware": _hardware(cores=2, load_average=loads), "config": {"repeats": 3}}
        return format_table(res).splitlines()[1]

    head = ("times are medians of 3 interleaved repeats, ratios geometric means of the paired "
            "repeats with their 95% intervals")
    busy = second_line([1.5, 2.6])
    assert busy == (head + "; load average 1.5 -> 2.6 on 2 cores (above the core count: other "
                    "jobs slowed the timings)")
    quiet = second_line([1.5, 1.6])
    assert quiet.endswith("load average 1.5 -> 1.6 on 2 cores (not above the core count)")
    assert second_line([None, 2.5]).endswith("load average 2.5 on 2 cores (above the core "
                                              "count: other jobs slowed the timings)")
    assert second_line([None, None]) == head
    assert second_line(None) == head

    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # the ddp part notes this machine's load
    ddp = {**_canned_ddp(1.6), "load_average": [5.0, 3.0]}
    text = format_part("ddp", ddp)
    assert text.splitlines()[-1] == ("  load average 5.0 -> 3.0 on 4 cores (above the core "
                                     "count: other jobs slowed the timings)")


def test_ddp_scaling_launch_on_tiny_sizes():
    """One torchrun launch times every size in every setting, then time to accuracy and batch
    norm's per-rank statistics: the figures against the raw rounds it reports, the model's own
    counts and the table (correctness only; no timing is asserted)."""
    cfg = replace(TINY, ddp_rounds=3, ddp_sizes=((4, 16), (6, 32)), ddp_threads=2,
                  ddp_tta_epochs=2, ddp_tta_target=0.3, ddp_bn=True, ddp_budget=600.0)
    r = bench.bench_ddp(cfg)
    assert r["world_size"] == 2 and r["backend"] == "gloo" and r["max_param_diff"] <= 1e-5
    assert "--sizes 4:16,6:32 --bench-threads 2 --bench-budget 600 --tta 2 --bn" in r["command"]
    sizes = r["scaling"]
    assert [(s["width"], s["batch_per_rank"]) for s in sizes] == [(4, 16), (6, 32)]
    for s in sizes:
        raw, gb = s["bench"], s["global_batch"]
        assert gb == 2 * s["batch_per_rank"] and s["steps_per_epoch"] == math.ceil(128 / gb)
        assert all(len(raw[f"{k}_times"]) == 3 for k in ("single", "threads", "parallel"))
        model = build_model((1, 8, 8), 10, width=s["width"])
        assert s["flops_per_step"] == 3 * model_flops(model, torch.zeros(gb, 1, 8, 8))
        assert s["grad_bytes"] == grad_bytes("digits", s["width"])
        assert s["allreduce_seconds"] > 0
        check_ratio(s, "speedup", raw["single_times"], raw["parallel_times"])
        check_ratio(s, "speedup_threads", raw["threads_times"], raw["parallel_times"])
        check_ratio(s, "threads_speedup", raw["single_times"], raw["threads_times"])
    last = sizes[-1]["bench"]  # the top level (the goal's figure) is the last size
    check_ratio(r, "speedup", last["single_times"], last["parallel_times"])
    assert r["grad_bytes"] == sizes[-1]["grad_bytes"] and r["bench"]["rounds"] == 3

    work, curves = bench.speedup_curve(r)
    assert work == [s["flops_per_step"] / 1e9 for s in sizes]
    vs_one, vs_threads = curves.values()
    assert list(curves) == ["2 processes x 1 thread over 1 x 1",
                            "2 processes x 1 thread over 1 x 2 threads"]
    assert [c.value for c in vs_one] == pytest.approx([s["speedup"] for s in sizes])
    assert [c.value for c in vs_threads] == pytest.approx([s["speedup_threads"] for s in sizes])

    tta = r["tta"]
    assert (tta["width"], tta["global_batch"], tta["epochs"], tta["target"]) == (6, 64, 2, 0.3)
    for kind in (DDP_SINGLE, DDP_PARALLEL):
        t = tta[kind]
        assert tta[f"{kind}_to_target"] == time_to_target(t["seconds"], t["val_acc"], 0.3)
    diffs = [abs(a - b) for a, b in zip(tta["single"]["val_acc"], tta["parallel"]["val_acc"])]
    assert max(diffs) <= 2 / tta["val_images"]  # the same steps, up to rounding

    bn = r["bn"]
    assert bn["batch_per_rank"] == 16 and bn["channels"] == 4
    assert bn["rank_mean_off_std"] > 0 and bn["rank_var_off_rel"] > 0  # two shards differ
    assert bn["synced_mean_diff"] < 1e-5 and bn["synced_var_diff"] < 1e-4  # rounding only

    st = r["startup"]
    pieces = [st[f"{k}_seconds"] for k in ("launcher", "import", "init", "load")]
    assert all(p >= 0 for p in pieces)
    assert sum(pieces) <= st["ready_seconds"] <= r["launch_seconds"]

    text = format_part("ddp", r)
    rows = table(text, "width")
    for s in sizes:
        row, raw = rows[str(s["width"])], s["bench"]
        assert row["per rank"] == str(s["batch_per_rank"])
        assert_shown(row["GFLOP/step"], s["flops_per_step"] / 1e9)
        assert_shown(row["all-reduce"], s["allreduce_seconds"] * 1e3)
        for col, kind in (("1x1", "single"), ("1x2", "threads"), ("2x1", "parallel")):
            assert_shown(row[col], raw[f"{kind}_median"] / s["steps_per_epoch"] * 1e3)
        assert_shown_ci(row["2x1 vs 1x1"], s["speedup"], *s["speedup_ci"])
        assert_shown_ci(row["2x1 vs 1x2"], s["speedup_threads"], *s["speedup_threads_ci"])
    assert f"time to 30% validation accuracy ({tta['val_images']} images; width 6" in text


def _canned_scaling(threads: int | None) -> dict:
    sizes = []
    for width, speedup in ((16, 0.8), (32, 1.5)):
        single = [1.0, 1.2, 1.1]
        raw = {"single_times": single, "parallel_times": [t / speedup for t in single],
               "single_median": 1.1, "parallel_median": 1.1 / speedup}
        if threads:
            raw.update(threads_times=[t / 0.5 for t in single], threads_median=2.2)
        size = {"width": width, "batch_per_rank": 32, "global_batch": 64,
                "steps_per_epoch": 16, "grad_bytes": 2**20, "flops_per_step": 5e8 * width,
                "allreduce_seconds": 1e-3, "bench": raw}
        size.update(_ratio_fields("speedup", time_ratio(size, DDP_SINGLE, DDP_PARALLEL)))
        sizes.append(size)
    ddp = _canned_ddp(1.5)
    ddp["bench"].update(sizes[-1]["bench"], threads=threads)
    return {**ddp, "scaling": sizes}


def test_ddp_scaling_table_without_a_threads_series():
    r = _canned_scaling(None)
    text = format_part("ddp", r)
    rows = table(text, "width")
    assert list(rows) == ["16", "32"]
    assert list(rows["16"]) == ["per rank", "GFLOP/step", "grad MiB", "all-reduce", "1x1", "2x1",
                                "2x1 vs 1x1"]
    assert rows["16"]["2x1 vs 1x1"] == "0.80x (0.80-0.80x)"
    assert "1 x None" not in text and "1 process x 1 thread, 2 processes x 1 thread" in text
    costs = bench.step_costs(r["scaling"][0])  # 1.1 s per epoch of 16 steps, speed-up 0.8
    one = 1.1 / 16 * 1e3
    assert costs == pytest.approx({"single": one, "threads": None, "parallel": one / 0.8,
                                   "even": one / 2, "extra": one / 0.8 - one / 2,
                                   "allreduce": 1.0})
    assert "speed-up at the last size 1.50x (1.50-1.50x)" in text
    work, curves = bench.speedup_curve(r)
    assert work == [8.0, 16.0] and list(curves) == ["2 processes x 1 thread over 1 x 1"]
    with pytest.raises(ValueError, match="no scaling curve"):
        bench.speedup_curve(_canned_ddp(1.5))
    grew = bench.speedup_change(r)  # 0.8 -> 1.5 in every round
    assert (grew.value, grew.n) == (pytest.approx(1.5 / 0.8), 3)
    r["scaling"][-1]["bench"]["parallel_times"] = [1.0 / 1.2, 1.2 / 1.8, 1.1 / 1.5]
    ref = paired([1.2, 1.8, 1.5], [0.8, 0.8, 0.8])  # per-round speed-ups, paired by round
    got = bench.speedup_change(r)
    assert (got.value, got.low, got.high) == tuple(pytest.approx(x) for x in ref)
    with pytest.raises(ValueError, match="1 size"):
        bench.speedup_change({**r, "scaling": r["scaling"][:1]})


def test_ratios_text_groups_the_points_by_verdict():
    up, same = Ratio(1.8, 1.52, 2.13, 3), Ratio(0.73, 0.5, 1.05, 3)
    assert bench.ratios_text([same, up], ["0.23", "3.3"], above="faster", below="slower",
                             unit="GFLOP per step") == (
        "0.73x (95% CI 0.50x to 1.05x) at 0.23 and 1.80x (95% CI 1.52x to 2.13x) at 3.3 GFLOP "
        "per step (3 repeats each): no measurable difference on this machine at 0.23; faster "
        "at 3.3")
    down = Ratio(0.5, 0.4, 0.6, 5)
    assert bench.ratios_text([down, down, down], ["a", "b", "c"], above="faster",
                             below="slower") == (
        "0.50x (95% CI 0.40x to 0.60x) at a, 0.50x (95% CI 0.40x to 0.60x) at b and 0.50x "
        "(95% CI 0.40x to 0.60x) at c (5 repeats each): slower at each")
    one = Ratio(1.2, math.nan, math.nan, 1)
    assert bench.ratios_text([one], ["x"], above="up", below="down") == (
        "1.20x (no interval) at x (1 repeat each): one repeat: no interval at each")
    with pytest.raises(ValueError, match="Invalid ratios / labels: 1 / 2"):
        bench.ratios_text([one], ["x", "y"], above="up", below="down")


def test_ddp_timings_include_the_threads_series():
    size = _canned_scaling(2)["scaling"][0]
    assert list(bench.timings(size)) == [DDP_SINGLE, DDP_THREADS, DDP_PARALLEL]
    assert time_ratio(size, DDP_THREADS, DDP_PARALLEL).value == pytest.approx(0.8 / 0.5)


def test_ddp_is_skipped_on_a_gpu_machine_with_too_few_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    r = bench.bench_ddp(replace(TINY, device="cuda", ddp_procs=2))
    assert r["skipped"].startswith("2 processes need 2 GPUs")
    assert r["skipped"].endswith("this machine has 1")
    assert format_part("ddp", r) == f"[ddp] skipped: {r['skipped']}"


def test_results_round_trip_through_json(tmp_path):
    path = tmp_path / "sub" / "b.json"
    assert load_results(path) is None
    save_results({"a": math.nan, "b": [1.0, math.inf], "c": {"d": 2}}, path)
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2}}
    assert load_results(path)["c"] == {"d": 2}


def test_cli_bench_prints_the_figures_it_writes_to_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--threads", "1", "--parts", "conv", "peak",
                 "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "[conv]" in out and "[peak]" in out and "1 torch threads" in out
    assert "goals" not in out  # targets are the book's: the command sets none
    saved = json.loads(path.read_text())
    assert saved["hardware"]["threads"] == 1 and saved["config"]["batch"] == TINY.batch
    assert saved["parts"] == ["conv", "peak"]
    rows = table(out, "variant")
    assert list(rows) == list(saved["conv"]["variants"])
    for name, v in saved["conv"]["variants"].items():
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
        assert_shown(rows[name]["of matmul"], saved["peak"]["fraction_matmul"][name])
    m = line_matching(out, r"fp32 matmul \d+\^3 (\S+) GFLOP/s")
    assert_shown(m[1], saved["peak"]["matmul_gflops"])
    assert saved["peak"]["hardware"]["source"] == hardware_peak("cpu", threads=1).source


def test_cli_bench_on_cuda_without_a_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--quick", "--device", "cuda", "--parts", "conv"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_tf32_context_restores_the_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32(not before[1]):
        assert torch.backends.cudnn.allow_tf32 == (not before[1])
        assert torch.backends.cuda.matmul.allow_tf32 == (not before[1])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# ----------------------------------------------------------------------------- chapter helpers


@pytest.mark.parametrize(("shape", "channels", "k"), [((1, 8, 8), 4, 3), ((3, 5, 7), 6, 5),
                                                      ((2, 6, 6), 3, 1)])
def test_layer_costs_match_the_models_and_torch_flop_counter(shape, channels, k):
    from torch.utils.flop_counter import FlopCounterMode

    costs = layer_costs(shape, channels, kernel_size=k)
    conv = conv_layer_model(shape, 10, channels, kernel_size=k)[0]
    dense = dense_layer_model(shape, 10, channels)[1]
    c, h, w = shape
    assert costs["in_features"] == c * h * w and costs["out_features"] == channels * h * w
    assert costs["conv_params"] == n_params(conv) == channels * (c * k * k + 1)
    assert costs["dense_params"] == n_params(dense)
    x = torch.zeros(1, *shape)
    with FlopCounterMode(display=False) as counter:
        assert conv(x).shape == (1, channels, h, w)  # same padding
    assert costs["conv_flops"] == counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        dense(x.flatten(1))
    assert costs["dense_flops"] == counter.get_total_flops()


def test_convolution_is_translation_equivariant_and_dense_is_not():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 1, 12, 12)
    x[..., 3:9, 3:9] = torch.randn(2, 1, 6, 6, generator=g)
    conv = conv_layer_model((1, 12, 12), 10, 4)[0]
    dense = dense_layer_model((1, 12, 12), 10, 4)[1]
    assert translation_error(conv, x) < 1e-6
    err = translation_error(lambda t: dense(t.flatten(1)), x, out_shape=(4, 12, 12))
    assert err > 0.1


def test_shift_image_moves_pixels_and_fills_zeros():
    x = torch.arange(9.0).reshape(1, 3, 3)
    assert torch.equal(shift_image(x, 1, 0)[0, 0], torch.zeros(3))
    assert torch.equal(shift_image(x, 1, 0)[0, 1], x[0, 0])
    assert torch.equal(shift_image(x, 0, -1)[0, :, 0], x[0, :, 1])
    assert torch.equal(shift_image(x, -1, 1)[0], torch.tensor([[0.0, 3, 4], [0, 6, 7],
                                                               [0, 0, 0]]))


def test_autocast_wrapper_runs_in_bf16_and_returns_float32():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    out = Autocast(layer, device_type="cpu")(x)
    assert out.dtype == torch.float32
    in_bf16 = F.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()).float()
    assert_close(out, in_bf16)
    assert not torch.equal(out, layer(x))  # not silently fp32
    assert_close(out, layer(x), atol=0.05, rtol=0.05)


CHAPTER_MODELS = {  # the model each runner is documented to train, built here on digits (1x8x8)
    "run_conv_layer": lambda: conv_layer_model((1, 8, 8), 10, 4),
    "run_dense_layer": lambda: dense_layer_model((1, 8, 8), 10, 4),
    "run_separable": lambda: build_model((1, 8, 8), 10, width=4, separable=True),
    "run_nchw": lambda: build_model((1, 8, 8), 10, width=4),
    "run_bf16": lambda: build_model((1, 8, 8), 10, width=4),
}


@pytest.mark.parametrize("runner", list(CHAPTER_MODELS))
def test_chapter_runners_return_sweep_rows(runner):
    cfg = RunConfig(dataset="digits", train_size=200, width=4, epochs=1)
    row = getattr(bench, runner)(cfg, 0)
    assert row["seed"] == 0 and row["width"] == 4 and 0.0 <= row["test_acc"] <= 1.0
    assert row["params"] == n_params(CHAPTER_MODELS[runner]())
    assert len(row["history"]["train_loss"]) == 1
    assert row["train_acc"] == row["history"]["train_acc"][-1]
    assert set(row) == run_fields() | {"params", "shift_acc"}  # run's row, two fields more
    assert row["weights"]["count"] > 0
    assert 0.0 <= row["shift_acc"] <= 1.0


@functools.cache
def run_fields() -> set[str]:
    """The fields of a row of :func:`cnnlab.experiments.run`."""
    return set(run(RunConfig(dataset="digits", train_size=100, width=2, epochs=1), 0))


def test_chapter_model_sizes_by_hand():
    assert n_params(CHAPTER_MODELS["run_conv_layer"]()) == (4 * 9 + 4) + (4 * 64 * 10 + 10)
    assert n_params(CHAPTER_MODELS["run_dense_layer"]()) == (64 * 256 + 256) + (256 * 10 + 10)


def test_shift_image_fill_value():
    x = torch.ones(1, 2, 2)
    assert torch.equal(shift_image(x, 0, 1, fill=-1.0), torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]]))
