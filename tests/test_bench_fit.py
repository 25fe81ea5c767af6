"""The training-loop benchmark runs and prints its three sections (no timing is asserted)."""

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_fit.py"


@pytest.mark.slow
def test_bench_fit_quick_prints_ratios(capsys):
    main = runpy.run_path(str(BENCH))["main"]
    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "fit / hand-written loop =" in out and "fit / DataLoader loop   =" in out
    assert "fit / TensorDataset DataLoader =" in out and "data pipeline alone" in out
    assert "test accuracy" in out and "3. one epoch on the full Fashion-MNIST" in out
