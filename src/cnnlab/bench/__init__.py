"""The benchmark runner behind ``python -m cnnlab bench`` and the convolution chapter's tables.

Every time is a median of interleaved repeats (:func:`cnnlab.perf.time_interleaved`): the
variants compared in one table are timed round-robin in the same run, so background load slows
them alike. Every ratio between them is the geometric mean of the paired repeats with its 95%
interval (:func:`~cnnlab.bench.core.time_ratio`, the book's timing rule); each part keeps its raw
repeats, so the ratios can be recomputed from saved results (:func:`update_results`). Parts:

* ``conv``: one convolution as im2col + matmul (:func:`cnnlab.techniques.conv2d`) and as
  ``F.conv2d`` in the default (NCHW) and channels_last (NHWC) layouts: time, GFLOP/s, ratios,
  and the im2col matrix's size against the input's.
* ``naive``: the same three plus the explicit loops of :func:`~cnnlab.techniques.conv2d_naive`
  on a tiny input.
* ``peak``: the hardware's theoretical peak (:func:`cnnlab.hardware.hardware_peak`, with its
  source and assumptions) and a big matrix product measured here; the fraction of each that
  every convolution reaches.
* ``separable``: a standard convolution against a depthwise-separable one with the same input and
  output: parameters, FLOPs and time (the FLOP ratio and the time ratio differ).
* ``step``: a full SmallCNN training step (forward, backward, SGD) in fp32 NCHW, fp32
  channels_last, bf16 autocast (where the hardware has bf16) and ``torch.compile``.
* ``threads``: the same step with 1 and 2 intra-op threads.
* ``ddp``: 1 process vs N data-parallel processes of 1 thread each (torchrun, gloo/NCCL), through
  :mod:`cnnlab.parallel`; optionally at several model sizes in one launch (a scaling curve,
  also against 1 process with several threads), with time to accuracy and batch norm's
  per-rank statistics.

The package also holds the runners of the chapter's multi-seed comparisons (one-layer conv vs
dense, depthwise-separable SmallCNN, NCHW and bf16 training), usable as ``runner=`` of
:func:`cnnlab.experiments.sweep`.

The package: :mod:`~cnnlab.bench.core` (configuration), :mod:`~cnnlab.bench.conv`,
:mod:`~cnnlab.bench.step`, :mod:`~cnnlab.bench.ddp` (the parts), :mod:`~cnnlab.bench.run`
(the whole run, JSON), :mod:`~cnnlab.bench.report` (tables, goals checked) and
:mod:`~cnnlab.bench.runners` (the chapter's runners); the names below are re-exported here.
"""

from cnnlab.bench.conv import (
    CONV_CL,
    CONV_IM2COL,
    CONV_NAIVE,
    CONV_NCHW,
    bench_conv,
    bench_naive,
    bench_peak,
    bench_separable,
        hardware_fraction,
    peak_figures,
)
from cnnlab.bench.core import (
    DDP_PARALLEL,
    DDP_SINGLE,
    DDP_THREADS,
    BenchConfig,
    time_ratio,
    timings,
)
from cnnlab.bench.ddp import (
    bench_ddp,
    grad_bytes,
    speedup_change,
    speedup_curve,
    step_costs,
)
from cnnlab.bench.report import (
    Goal,
    GoalCheck,
    check_goals,
    format_part,
    format_table,
    goal_line,
    ratios_text,
)
from cnnlab.bench.run import (
    PARTS,
    load_results,
    run_bench,
    save_results,
    tf32,
    update_results,
)
from cnnlab.bench.runners import (
    run_bf16,
    run_conv_layer,
    run_dense_layer,
    run_nchw,
    run_separable,
)
from cnnlab.bench.step import (
    STEP_BF16,
    STEP_CL,
    STEP_COMPILE,
    STEP_NCHW,
    Autocast,
    bench_threads,
    bench_train_step,
    step_flops,
)

__all__ = [
    "CONV_CL",
    "CONV_IM2COL",
    "CONV_NAIVE",
    "CONV_NCHW",
    "DDP_PARALLEL",
    "DDP_SINGLE",
    "DDP_THREADS",
    "PARTS",
    "STEP_BF16",
    "STEP_CL",
    "STEP_COMPILE",
    "STEP_NCHW",
    "Autocast",
    "BenchConfig",
    "Goal",
    "GoalCheck",
    "bench_conv",
    "bench_ddp",
    "bench_naive",
    "bench_peak",
    "bench_separable",
    "bench_threads",
    "bench_train_step",
    "check_goals",
    "format_part",
    "format_table",
    "goal_line",
    "grad_bytes",
    "hardware_fraction",
    "load_results",
    "peak_figures",
    "ratios_text",
    "run_bench",
    "run_bf16",
    "run_conv_layer",
    "run_dense_layer",
    "run_nchw",
    "run_separable",
    "save_results",
    "speedup_change",
    "speedup_curve",
    "step_costs",
    "step_flops",
    "tf32",
    "time_ratio",
    "timings",
    "update_results",
]
