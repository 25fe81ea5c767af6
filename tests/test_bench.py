"""The benchmark runs and prints its table (tiny sizes; no timed assertions)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from cnnlab import bench
from cnnlab.bench import (
    Autocast,
    BenchConfig,
    bench_conv,
    bench_naive,
    bench_separable,
    bench_threads,
    bench_train_step,
    conv_layer_model,
    dense_layer_model,
    format_table,
    goals,
    layer_costs,
    load_results,
    run_bench,
    save_results,
    shift_image,
    tf32,
    translation_error,
)
from cnnlab.cli import main
from cnnlab.experiments import RunConfig
from cnnlab.perf import cpu_model, num_threads
from cnnlab.techniques import count_params

TINY = BenchConfig.tiny(threads=1)


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


def test_conv_part_agrees_with_pytorch_and_counts_the_im2col_blow_up():
    r = bench_conv(TINY)
    assert r["max_abs_diff"] < 1e-4
    assert r["im2col_ratio"] == pytest.approx(9.0)  # 3x3, stride 1, same padding: k^2
    assert set(r["variants"]) == {"im2col conv2d", "F.conv2d (NCHW)", "F.conv2d (channels_last)"}
    assert all(v["gflops"] > 0 and len(v["times"]) == TINY.repeats for v in r["variants"].values())


def test_naive_part_gives_the_same_output():
    r = bench_naive(TINY)
    assert all(v["max_abs_diff"] < 1e-4 for v in r["variants"].values())
    assert r["slowdown_naive"] > 0


def test_separable_part_counts_params_and_flops():
    r = bench_separable(TINY)
    c, o = TINY.in_channels, TINY.out_channels
    assert r["params"] == {"standard": o * c * 9, "separable": c * 9 + c * o}
    assert r["flop_ratio"] == pytest.approx((c * 9 + c * o) / (o * c * 9))


def test_step_part_times_every_variant_and_names_what_it_skipped():
    with num_threads(2):
        r = bench_train_step(TINY)  # on step_threads = 1, whatever the caller's count
        assert torch.get_num_threads() == 2
    assert r["threads"] == 1 and "1 thread(s)" in bench.format_part("step", r)
    assert {"fp32 NCHW", "fp32 channels_last"} <= set(r["variants"])
    assert r["variants"]["fp32 NCHW"]["speedup"] == 1.0
    assert "torch.compile (channels_last)" in r["skipped_variants"]
    assert ("bf16 autocast (channels_last)" in r["variants"]) != (
        "bf16 autocast (channels_last)" in r["skipped_variants"])


def test_a_failing_compile_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    r = bench_train_step(replace(TINY, compile=True))
    assert "no compiler here" in r["skipped_variants"]["torch.compile (channels_last)"]


def test_threads_part():
    r = bench_threads(TINY, counts=(1, 2))
    assert list(r["variants"]) == ["1 thread", "2 threads"] and r["speedup"] > 0


def test_run_bench_prints_the_table_with_cpu_and_threads():
    res = run_bench(TINY, parts=["conv", "naive", "peak", "separable", "threads"])
    text = format_table(res)
    assert cpu_model() in text and "1 torch threads" in text
    for header in ("[conv]", "[naive]", "[peak]", "[separable]", "[threads]", "goals"):
        assert header in text
    assert "of peak" in text and "GFLOP/s" in text
    assert "not measured" in text  # the ddp goal: its part was not run
    assert 0 < res["peak"]["fraction"]["F.conv2d (channels_last)"]
    only = format_table(res, ["conv"], header=False)
    assert only.startswith("[conv]") and "[peak]" not in only


def test_unknown_part_is_rejected():
    with pytest.raises(ValueError, match="Unknown benchmark part"):
        run_bench(TINY, parts=["warp"])


def test_a_part_that_fails_is_recorded_as_skipped(monkeypatch):
    def broken(cfg):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench, "bench_separable", broken)
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


def test_ddp_table_and_goals():
    res = {"hardware": {"cpu": "X", "cores": 2, "threads": 1, "torch": "2", "device": "cpu",
                        "device_name": "X"},
           "config": {"repeats": 3}, "ddp": _canned_ddp(1.6),
           "conv": {"skipped": "not here"}}
    text = format_table(res)
    assert "[ddp]" in text and "speed-up 1.60x" in text and "2 processes x 1 thread" in text
    assert "[conv] skipped: not here" in text
    measured = {t: (v, met) for t, v, met in goals(res)}
    assert measured["2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1"] == (
        1.6, True)
    res["ddp"] = _canned_ddp(1.2)
    assert "1.20x -> MISSED" in format_table(res)


def test_ddp_is_skipped_on_a_gpu_machine_with_too_few_gpus(monkeypatch):
    monkeypatch.setattr(bench, "_device", lambda cfg: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    r = bench.bench_ddp(TINY)
    assert "need 2 GPUs" in r["skipped"]


def test_results_round_trip_through_json(tmp_path):
    path = tmp_path / "sub" / "b.json"
    assert load_results(path) is None
    save_results({"a": math.nan, "b": [1.0, math.inf], "c": {"d": 2}}, path)
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2}}
    assert load_results(path)["c"] == {"d": 2}


def test_cli_bench_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--threads", "1", "--parts", "conv", "peak",
                 "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "[conv]" in out and "[peak]" in out and "1 torch threads" in out
    saved = json.loads(path.read_text())
    assert saved["hardware"]["threads"] == 1 and saved["config"]["batch"] == TINY.batch


def test_cli_bench_on_cuda_without_a_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--quick", "--device", "cuda", "--parts", "conv"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_tf32_context_restores_the_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32(not before[1]):
        assert torch.backends.cudnn.allow_tf32 == (not before[1])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# ----------------------------------------------------------------------------- chapter helpers


def test_layer_costs_match_the_models():
    shape = (1, 8, 8)
    costs = layer_costs(shape, 4)
    conv = conv_layer_model(shape, 10, 4)
    dense = dense_layer_model(shape, 10, 4)
    head = 4 * 64 * 10 + 10
    assert costs["conv_params"] == count_params(conv) - head
    assert costs["dense_params"] == count_params(dense) - head
    assert costs["dense_flops"] == 2 * 64 * 256 and costs["conv_flops"] == 2 * 4 * 64 * 9


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


def test_autocast_wrapper_returns_float32_close_to_fp32():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    out = Autocast(layer, device_type="cpu")(x)
    assert out.dtype == torch.float32
    assert_close(out, layer(x), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("runner", ["run_conv_layer", "run_dense_layer", "run_separable",
                                    "run_nchw", "run_bf16"])
def test_chapter_runners_return_sweep_rows(runner):
    cfg = RunConfig(dataset="digits", train_size=200, width=4, epochs=1)
    row = getattr(bench, runner)(cfg, 0)
    assert row["seed"] == 0 and row["width"] == 4 and 0.0 <= row["test_acc"] <= 1.0
    assert row["params"] > 0 and len(row["history"]["train_loss"]) == 1
    assert 0.0 <= row["shift_acc"] <= 1.0


def test_shift_image_fill_value():
    x = torch.ones(1, 2, 2)
    assert torch.equal(shift_image(x, 0, 1, fill=-1.0), torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]]))


def test_load_note_says_above_the_core_count_only_when_it_is():
    assert "above the core count: other jobs" in bench._load_note([1.5, 2.6], 2)
    quiet = bench._load_note([1.5, 1.6], 2)
    assert "1.5 -> 1.6 on 2 cores" in quiet and "not above the core count" in quiet
    assert bench._load_note([None], 2) == ""
