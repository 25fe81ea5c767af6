"""The benchmark's figures against references computed here (hand FLOP counts, parameter sums,
medians of the raw repeats it reports), and its table's numbers parsed back (tiny sizes; no
timed assertions)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import statistics
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnlab import bench
from cnnlab.bench import (
    CONV_CL,
    CONV_IM2COL,
    CONV_NAIVE,
    CONV_NCHW,
    STEP_BF16,
    STEP_CL,
    STEP_COMPILE,
    STEP_NCHW,
    Autocast,
    BenchConfig,
    Goal,
    bench_conv,
    bench_naive,
    bench_separable,
    bench_threads,
    bench_train_step,
    check_goals,
    format_part,
    format_table,
    load_results,
    run_bench,
    save_results,
    tf32,
)
from cnnlab.cli import main
from cnnlab.config import RunConfig
from cnnlab.experiments import run
from cnnlab.models import build_model, conv_layer_model, dense_layer_model
from cnnlab.perf import bf16_support, cpu_model, num_threads
from cnnlab.techniques.conv import layer_costs, shift_image, translation_error

TINY = BenchConfig.tiny(threads=1)
TINY3 = replace(TINY, repeats=3)  # three repeats: a median is no longer the mean
GOALS = (  # targets as a page would set them (the package knows none)
    Goal("channels_last F.conv2d >= 60% of the measured peak", "peak", ("fraction", CONV_CL),
         ">=", 0.6, "{:.0%}"),
    Goal("im2col conv2d forward within 3x of F.conv2d (NCHW)", "conv", ("ratio_im2col",), "<=",
         3.0, "{:.2f}x"),
    Goal("2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1", "ddp",
         ("bench", "speedup"), ">=", 1.4, "{:.2f}x"),
)


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


# ----------------------------------------------------------------------------- references


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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
    t = check_variant_figures(r, 3, flops)
    assert r["ratio_im2col"] == pytest.approx(t[CONV_IM2COL] / t[CONV_NCHW])
    assert r["ratio_im2col_cl"] == pytest.approx(t[CONV_IM2COL] / t[CONV_CL])
    assert r["speedup_cl"] == pytest.approx(t[CONV_NCHW] / t[CONV_CL])
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
    base = r["variants"][CONV_NCHW]["seconds"]
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
        assert_shown(rows[name]["time vs NCHW"], v["seconds"] / base)
        assert_shown(rows[name]["spread"], v["spread"])
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
    t = check_variant_figures(r, 3, flops)  # at least 3 repeats, whatever the config says
    assert r["slowdown_naive"] == pytest.approx(t[CONV_NAIVE] / t[CONV_NCHW])
    text = format_part("naive", r)
    assert text.splitlines()[0] == "[naive] on the CPU, tiny input 1x3x8x8 -> 4 channels"
    rows = table(text, "variant")
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
        assert_shown(rows[name]["time vs F.conv2d"], v["seconds"] / t[CONV_NCHW])
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
    t = check_variant_figures(r, 3, flops)
    assert r["param_ratio"] == pytest.approx(params["separable"] / params["standard"])
    assert r["flop_ratio"] == pytest.approx(flops["separable"] / flops["standard"])
    assert r["time_ratio"] == pytest.approx(t["separable"] / t["standard"])
    text = format_part("separable", r)
    rows = table(text, "layer")
    for name, v in r["variants"].items():
        assert_shown(rows[name]["params"], params[name])
        assert_shown(rows[name]["GFLOP"], flops[name] / 1e9)
        assert_shown(rows[name]["time"], v["seconds"])
        assert_shown(rows[name]["GFLOP/s"], v["gflops"])
    m = line_matching(text, r"separable / standard: params (\S+), FLOPs (\S+), time (\S+)$")
    for got, key in zip(m.groups(), ("param_ratio", "flop_ratio", "time_ratio")):
        assert_shown(got, r[key])


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
    t = check_variant_figures(r, 3)
    for name, v in r["variants"].items():
        assert v["speedup"] == pytest.approx(t[STEP_NCHW] / t[name])
    text = format_part("step", r)
    assert text.splitlines()[0] == ("[step] SmallCNN width 4, batch 8 of 8x8: forward + "
                                    "backward + SGD, 1 thread(s)")
    rows = table(text, "variant")
    assert list(rows) == list(r["variants"])
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time/step"], v["seconds"])
        assert_shown(rows[name]["speed-up vs NCHW"], v["speedup"])
        assert_shown(rows[name]["spread"], v["spread"])
    for name, why in r["skipped_variants"].items():
        assert f"  skipped {name}: {why}" in text.splitlines()


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
    t = check_variant_figures(r, 3)
    assert r["speedup"] == pytest.approx(t["1 thread"] / t["2 threads"])
    text = format_part("threads", r)
    rows = table(text, "threads")
    for name, v in r["variants"].items():
        assert_shown(rows[name]["time/step"], v["seconds"])
        assert_shown(rows[name]["spread"], v["spread"])
    assert_shown(line_matching(text, r"^  speed-up: (\S+)$")[1], r["speedup"])


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


def test_run_bench_table_shows_the_measured_peak_fractions_and_goals():
    res = run_bench(TINY3, parts=["conv", "naive", "peak", "separable", "threads"])
    conv, peak = res["conv"], res["peak"]
    best = max(conv["variants"], key=lambda name: conv["variants"][name]["gflops"])
    assert (peak["conv_name"], peak["conv_gflops"]) == (best, conv["variants"][best]["gflops"])
    assert peak["peak_gflops"] == max(peak["matmul_gflops"], peak["conv_gflops"])
    assert peak["peak_source"] == ("matmul" if peak["matmul_gflops"] >= peak["conv_gflops"]
                                   else best)
    for name, v in conv["variants"].items():
        assert peak["fraction"][name] == pytest.approx(v["gflops"] / peak["peak_gflops"])

    text = format_table(res, goals=GOALS)
    head = text.splitlines()[:2]
    assert head[0].startswith(f"CNN Lab benchmark on {cpu_model()} (cpu); CPU {cpu_model()}, "
                              f"{os.cpu_count()} cores, 1 torch threads; PyTorch ")
    assert head[1].startswith("every time is the median of 3 interleaved repeats")
    for header in ("[conv]", "[naive]", "[peak]", "[separable]", "[threads]", "goals"):
        assert header in text
    rows = table(text, "variant")  # the conv table: the first one
    for name in conv["variants"]:
        assert_shown(rows[name]["of peak"], peak["fraction"][name])
    m = line_matching(text, r"^\[peak\] 1 thread\(s\): fp32 matmul (\d+)\^3 (\S+) GFLOP/s, "
                            r"best conv \((.+)\) (\S+) GFLOP/s -> peak (\S+) GFLOP/s "
                            r"\(set by (.+)\)$")
    assert int(m[1]) == TINY3.matmul_size and m[3] == best and m[6] == peak["peak_source"]
    for got, key in zip((m[2], m[4], m[5]), ("matmul_gflops", "conv_gflops", "peak_gflops")):
        assert_shown(got, peak[key])
    for name, f in peak["fraction"].items():
        assert_shown(line_matching(text, rf"^  {re.escape(name)}: (\S+) of peak$")[1], f)

    measured = {desc: (value, met) for desc, value, met in check_goals(res, GOALS)}
    cl = peak["fraction"][CONV_CL]
    assert measured["channels_last F.conv2d >= 60% of the measured peak"] == (cl, cl >= 0.6)
    ratio = conv["ratio_im2col"]
    assert measured["im2col conv2d forward within 3x of F.conv2d (NCHW)"] == (ratio, ratio <= 3)
    for desc, (value, met) in measured.items():
        if value is None:
            assert f"  {desc}: not measured" in text  # the ddp goal: its part was not run
            continue
        m = line_matching(text, rf"^  {re.escape(desc)}: (\S+) -> (met|MISSED)$")
        assert_shown(m[1], value)
        assert m[2] == ("met" if met else "MISSED")
    only = format_table(res, ["conv"], header=False)
    assert only.startswith("[conv]") and "[peak]" not in only and "goals" not in only
    assert "goals" not in format_table(res)  # no goals given, no goals section


def test_check_goals_on_hand_made_results():
    res = {"conv": {"ratio_im2col": 2.5}, "peak": {"fraction": {CONV_CL: 0.5}},
           "ddp": {"skipped": "torchrun failed"}, "step": {"variants": {}}}
    goals = [
        Goal("im2col within 3x", "conv", ("ratio_im2col",), "<=", 3.0),  # met
        Goal("im2col within 2x", "conv", ("ratio_im2col",), "<=", 2.0),  # not met
        Goal("cl at 60% of peak", "peak", ("fraction", CONV_CL), ">=", 0.6),  # not met
        Goal("cl at 50% of peak", "peak", ("fraction", CONV_CL), ">=", 0.5),  # met: at the bound
        Goal("cl above 50% of peak", "peak", ("fraction", CONV_CL), ">", 0.5),  # strict: not met
        Goal("ratio below 2.6", "conv", ("ratio_im2col",), "<", 2.6),  # met
        Goal("ddp 1.4x", "ddp", ("bench", "speedup"), ">=", 1.4),  # skipped part
        Goal("threads 1.5x", "threads", ("speedup",), ">=", 1.5),  # part not run
        Goal("nchw share", "peak", ("fraction", CONV_NCHW), ">=", 0.1),  # key missing
        Goal("step speed-up", "step", ("variants", "x", "speedup"), ">=", 1.0),  # deeper missing
    ]
    assert check_goals(res, goals) == [
        ("im2col within 3x", 2.5, True), ("im2col within 2x", 2.5, False),
        ("cl at 60% of peak", 0.5, False), ("cl at 50% of peak", 0.5, True),
        ("cl above 50% of peak", 0.5, False), ("ratio below 2.6", 2.5, True),
        ("ddp 1.4x", None, None), ("threads 1.5x", None, None), ("nchw share", None, None),
        ("step speed-up", None, None)]
    assert check_goals(res, []) == []
    assert [g.show(v) for g, (_, v, _) in zip(GOALS, check_goals(res, GOALS))] == [
        "50%", "2.50x", "not measured"]


def test_goals_are_validated():
    with pytest.raises(ValueError, match="Invalid comparison"):
        Goal("x", "conv", ("ratio_im2col",), "=>", 3.0)
    with pytest.raises(ValueError, match="Invalid key"):
        Goal("x", "conv", "ratio_im2col", "<=", 3.0)  # a bare string, not a path
    with pytest.raises(ValueError, match="Invalid key"):
        Goal("x", "conv", (), "<=", 3.0)


def test_peak_part_is_set_by_a_convolution_faster_than_the_matmul():
    conv = {"variants": {CONV_IM2COL: {"gflops": 1.0}, CONV_NCHW: {"gflops": 1e7},
                         CONV_CL: {"gflops": 2.5e6}}}  # far above any 64^3 matmul
    r = bench.bench_peak(TINY, conv)
    assert (r["conv_name"], r["conv_gflops"], r["peak_gflops"]) == (CONV_NCHW, 1e7, 1e7)
    assert r["peak_source"] == CONV_NCHW and r["matmul_size"] == TINY.matmul_size
    assert 0 < r["matmul_gflops"] < 1e7 and r["threads"] == 1
    assert r["fraction"] == {CONV_IM2COL: 1e-7, CONV_NCHW: 1.0, CONV_CL: 0.25}
    text = format_part("peak", r)
    assert text.splitlines()[0].endswith("-> peak 10000000.0 GFLOP/s (set by F.conv2d (NCHW))")
    assert text.splitlines()[1:] == [f"  {CONV_IM2COL}: 0% of peak", f"  {CONV_NCHW}: 100% of peak",
                                     f"  {CONV_CL}: 25% of peak"]


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
    return {"world_size": 2, "backend": "gloo", "dataset": "digits",
            "config": {"train_size": 128, "batch_size": 64},
            "bench": {"single_times": [1.0], "parallel_times": [1.0 / speedup],
                      "single_median": 1.0, "parallel_median": 1.0 / speedup,
                      "speedup": speedup},
            "max_param_diff": 1e-7, "launch_seconds": 9.0}


def _hardware(**overrides) -> dict:
    return {"cpu": "X", "cores": 2, "threads": 1, "torch": "2", "device": "cpu",
            "device_name": "X", **overrides}


def test_ddp_table_and_goals():
    res = {"hardware": _hardware(), "config": {"repeats": 3}, "ddp": _canned_ddp(1.6),
           "conv": {"skipped": "not here"}}
    text = format_table(res, goals=GOALS)
    assert ("[ddp] digits, 128 images/epoch, global batch 64, gloo, 1 interleaved rounds"
            in text.splitlines())
    rows = table(text, "setup")
    assert_shown(rows["1 process x 1 thread"]["s/epoch"], 1.0)
    assert_shown(rows["2 processes x 1 thread"]["s/epoch"], 1 / 1.6)
    m = line_matching(text, r"^  speed-up (\S+); the whole launch, start-up included, "
                            r"took (\S+) s$")
    assert_shown(m[1], 1.6)
    assert_shown(m[2], 9.0)
    assert_shown(line_matching(text, r"--check: max \|param diff\| vs 1 process (\S+)$")[1], 1e-7)
    assert "[conv] skipped: not here" in text
    measured = {t: (v, met) for t, v, met in check_goals(res, GOALS)}
    assert measured["2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1"] == (
        1.6, True)
    assert "1.4x faster than 1 x 1: 1.60x -> met" in text
    assert "  im2col conv2d forward within 3x of F.conv2d (NCHW): not measured" in text
    res["ddp"] = _canned_ddp(1.2)
    assert "1.4x faster than 1 x 1: 1.20x -> MISSED" in format_table(res, goals=GOALS)


def test_the_table_says_whether_the_load_was_above_the_core_count(monkeypatch):
    def second_line(loads):
        res = {"hardware": _hardware(cores=2, load_average=loads), "config": {"repeats": 3}}
        return format_table(res).splitlines()[1]

    busy = second_line([1.5, 2.6])
    assert busy == ("every time is the median of 3 interleaved repeats; load average "
                    "1.5 -> 2.6 on 2 cores (above the core count: other jobs slowed the timings)")
    quiet = second_line([1.5, 1.6])
    assert quiet.endswith("load average 1.5 -> 1.6 on 2 cores (not above the core count)")
    assert second_line([None, 2.5]).endswith("load average 2.5 on 2 cores (above the core "
                                              "count: other jobs slowed the timings)")
    assert second_line([None, None]) == "every time is the median of 3 interleaved repeats"
    assert second_line(None) == "every time is the median of 3 interleaved repeats"

    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # the ddp part notes this machine's load
    ddp = {**_canned_ddp(1.6), "load_average": [5.0, 3.0]}
    text = format_part("ddp", ddp)
    assert text.splitlines()[-1] == ("  load average 5.0 -> 3.0 on 4 cores (above the core "
                                     "count: other jobs slowed the timings)")


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
        assert_shown(rows[name]["of peak"], saved["peak"]["fraction"][name])
    m = line_matching(out, r"-> peak (\S+) GFLOP/s")
    assert_shown(m[1], saved["peak"]["peak_gflops"])


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
