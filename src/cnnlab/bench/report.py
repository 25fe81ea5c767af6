"""The benchmark as text: each part's table with the absolute figures and the ratios side by
side; and targets (:class:`Goal`) checked against the figures (:func:`check_goals`)."""


from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab.bench.conv import CONV_NCHW
from cnnlab.bench.core import Result
from cnnlab.bench.run import PARTS

# ----------------------------------------------------------------------------- the table


def _ms(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def _rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return ["  " + fmt.format(*header), *("  " + fmt.format(*r) for r in rows)]


def _fmt_conv(conv: Result, res: Result) -> list[str]:
    s = conv["shape"]
    frac = (res.get("peak") or {}).get("fraction", {})
    base = conv["variants"][CONV_NCHW]["seconds"]
    header = ["variant", "time", "GFLOP/s", "time vs NCHW", *(["of peak"] if frac else []),
              "spread"]
    rows = [[name, _ms(v["seconds"]), _num(v["gflops"], ".1f"), f"{v['seconds'] / base:.2f}x",
             *([f"{frac[name]:.0%}" if name in frac else "n/a"] if frac else []),
             f"{v['spread']:.0%}"] for name, v in conv["variants"].items()]
    return [(f"[conv] {s['in_channels']}->{s['out_channels']} channels, {s['kernel']}x"
             f"{s['kernel']}, on {s['batch']}x{s['in_channels']}x{s['size']}x{s['size']} "
             f"({conv['flops'] / 1e9:.3g} GFLOP per call)"),
            *_rows(header, rows),
            (f"  im2col matrix {conv['im2col_bytes'] / 2**20:.3g} MiB = "
             f"{conv['im2col_ratio']:.2f}x the input; max |im2col - F.conv2d| = "
             f"{conv['max_abs_diff']:.1e}")]


def _fmt_naive(naive: Result, res: Result) -> list[str]:
    s = naive["shape"]
    base = naive["variants"][CONV_NCHW]["seconds"]
    rows = [[name, _ms(v["seconds"]), _num(v["gflops"], ".3g"), f"{v['seconds'] / base:.3g}x",
             f"{v['max_abs_diff']:.1e}"] for name, v in naive["variants"].items()]
    return [(f"[naive] on the CPU, tiny input {s['batch']}x{s['in_channels']}x{s['size']}x"
             f"{s['size']} -> {s['out_channels']} channels"),
            *_rows(["variant", "time", "GFLOP/s", "time vs F.conv2d", "max |diff|"], rows)]


def _fmt_peak(peak: Result, res: Result) -> list[str]:
    hw = res.get("hardware", {})
    where = hw["device_name"] if hw.get("device") == "cuda" else f"{peak['threads']} thread(s)"
    return [(f"[peak] {where}: fp32 matmul {peak['matmul_size']}^3 "
             f"{peak['matmul_gflops']:.1f} GFLOP/s, best conv ({peak['conv_name']}) "
             f"{peak['conv_gflops']:.1f} GFLOP/s -> peak {peak['peak_gflops']:.1f} GFLOP/s "
             f"(set by {peak['peak_source']})"),
            *(f"  {name}: {f:.0%} of peak" for name, f in peak["fraction"].items())]


def _fmt_separable(sep: Result, res: Result) -> list[str]:
    s = sep["shape"]
    rows = [[name, f"{sep['params'][name]:,}", f"{sep['flops'][name] / 1e9:.3g}",
             _ms(v["seconds"]), _num(v["gflops"], ".1f")] for name, v in sep["variants"].items()]
    return [(f"[separable] {s['in_channels']}->{s['out_channels']}, {s['kernel']}x{s['kernel']} "
             f"on {s['batch']}x{s['in_channels']}x{s['size']}x{s['size']}, forward+backward, "
             "channels_last"),
            *_rows(["layer", "params", "GFLOP", "time", "GFLOP/s"], rows),
            (f"  separable / standard: params {sep['param_ratio']:.2f}x, FLOPs "
             f"{sep['flop_ratio']:.2f}x, time {sep['time_ratio']:.2f}x")]


def _fmt_step(step: Result, res: Result) -> list[str]:
    s = step["shape"]
    rows = [[name, _ms(v["seconds"]), f"{v['speedup']:.2f}x", f"{v['spread']:.0%}"]
            for name, v in step["variants"].items()]
    cpu = "threads" in step and step.get("device") != "cuda"
    on = f", {step['threads']} thread(s)" if cpu else ""
    lines = [(f"[step] SmallCNN width {s['width']}, batch {s['batch']} of {s['size']}x"
              f"{s['size']}: forward + backward + SGD{on}"),
             *_rows(["variant", "time/step", "speed-up vs NCHW", "spread"], rows)]
    if "compile_seconds" in step:
        hits = step.get("compile_cache_hits", 0)
        cached = (f" ({hits} of {hits + step.get('compile_cache_misses', 0)} graphs from "
                  "inductor's on-disk cache)" if hits else "")
        lines.append(f"  torch.compile: {step['compile_seconds']:.1f} s to compile{cached}; max "
                     f"|param diff| vs eager after {step['compile_check_steps']} steps "
                     f"{step['compile_max_param_diff']:.1e}")
    lines += [f"  skipped {name}: {why}" for name, why in step["skipped_variants"].items()]
    return lines


def _fmt_threads(thr: Result, res: Result) -> list[str]:
    rows = [[name, _ms(v["seconds"]), f"{v['spread']:.0%}"] for name, v in thr["variants"].items()]
    return [f"[threads] the fp32 channels_last step, intra-op threads ({thr['cores']} cores)",
            *_rows(["threads", "time/step", "spread"], rows),
            f"  speed-up: {thr['speedup']:.2f}x"]


def _fmt_ddp(ddp: Result, res: Result) -> list[str]:
    b, n, c = ddp["bench"], ddp["world_size"], ddp["config"]
    lines = [(f"[ddp] {ddp['dataset']}, {c['train_size']} images/epoch, global batch "
              f"{c['batch_size']}, {ddp['backend']}, {len(b['single_times'])} interleaved rounds"),
             *_rows(["setup", "s/epoch"], [["1 process x 1 thread", f"{b['single_median']:.3g}"],
                                          [f"{n} processes x 1 thread",
                                           f"{b['parallel_median']:.3g}"]]),
             (f"  speed-up {b['speedup']:.2f}x; the whole launch, start-up included, took "
              f"{ddp['launch_seconds']:.1f} s")]
    if "max_param_diff" in ddp:
        lines.append(f"  --check: max |param diff| vs 1 process {ddp['max_param_diff']:.1e}")
    note = _load_note(ddp.get("load_average"), os.cpu_count())
    if note:
        lines.append("  " + note[2:])
    return lines


_FORMATTERS = {"conv": _fmt_conv, "naive": _fmt_naive, "peak": _fmt_peak,
               "separable": _fmt_separable, "step": _fmt_step, "threads": _fmt_threads,
               "ddp": _fmt_ddp}


def _ok(part: Result | None) -> bool:
    return bool(part) and "skipped" not in part


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Goal:
    """A target for one figure of a benchmark result (:func:`check_goals`), e.g.
    ``Goal("im2col within 3x of F.conv2d", "conv", ("ratio_im2col",), "<=", 3.0, "{:.2f}x")``.
    """

    description: str  # what the goal says, shown beside the figure
    part: str  # the result's part that holds the figure: "conv", "peak", "ddp", ...
    key: tuple[str, ...]  # the figure's path inside that part, e.g. ("fraction", CONV_CL)
    comparison: str  # ">=", "<=", ">" or "<": figure <comparison> threshold is met
    threshold: float
    fmt: str = "{:.3g}"  # how the figure is shown (str.format), e.g. "{:.0%}", "{:.2f}x"

    def __post_init__(self) -> None:
        if self.comparison not in _COMPARISONS:
            raise ValueError(f"Invalid comparison: {self.comparison!r} (choose from "
                             f"{list(_COMPARISONS)})")
        if (not isinstance(self.key, tuple) or not self.key
                or not all(isinstance(k, str) for k in self.key)):
            raise ValueError(f"Invalid key: {self.key!r} (a non-empty tuple of names)")

    def show(self, value: float | None) -> str:
        """``value`` in this goal's format; ``"not measured"`` for ``None``."""
        return "not measured" if value is None else self.fmt.format(value)


def check_goals(res: Result, goals: Sequence[Goal]) -> list[tuple[str, float | None, bool | None]]:
    """Each goal against a benchmark result: ``(description, measured value, met)``.

    Args:
        res: :func:`~cnnlab.bench.run.run_bench`'s results, or any dict of parts (``{"conv":
            bench_conv(cfg), ...}``).
        goals: the targets, in the order to report them.
    Returns:
        One tuple per goal; value and met are ``None`` where the figure was not measured (its
        part is missing or was skipped, or the part lacks the key).
    """
    out: list[tuple[str, float | None, bool | None]] = []
    for goal in goals:
        value: Any = res.get(goal.part)
        if not _ok(value):
            value = None
        for name in goal.key:
            value = value.get(name) if isinstance(value, dict) else None
        met = None if value is None else bool(_COMPARISONS[goal.comparison](value,
                                                                             goal.threshold))
        out.append((goal.description, value, met))
    return out


def _load_note(loads: Sequence[float | None] | None, cores: int | None) -> str:
    known = [x for x in (loads or []) if x is not None]
    if not known:
        return ""
    busy = cores is not None and max(known) > cores
    return (f"; load average {' -> '.join(f'{x:.1f}' for x in known)} on {cores} cores "
            + ("(above the core count: other jobs slowed the timings)" if busy
               else "(not above the core count)"))


def format_part(part: str, result: Result) -> str:
    """One part's section of :func:`format_table`, from that part's result alone (e.g.
    ``format_part("conv", bench_conv(cfg))``)."""
    if part not in _FORMATTERS:
        raise ValueError(f"Unknown benchmark part: {part!r} (choose from {list(PARTS)})")
    if not _ok(result):
        return f"[{part}] skipped: {result.get('skipped', 'not run')}"
    return "\n".join(_FORMATTERS[part](result, {}))


def format_table(res: Result, parts: Sequence[str] | None = None, *,
                 header: bool = True, goals: Sequence[Goal] = ()) -> str:
    """The benchmark as text: absolute figures and ratios side by side, then the goals.

    Args:
        res: :func:`run_bench`'s results (or a loaded JSON file of them).
        parts: the sections to show (default: every part in ``res``).
        header: start with the hardware line and the repeat count.
        goals: targets to check (:func:`check_goals`), listed last as met, MISSED or not
            measured (default: none, no goals section).
    """
    hw, cfg = res["hardware"], res["config"]
    lines = []
    if header:
        lines += [(f"CNN Lab benchmark on {hw['device_name']} ({hw['device']}); CPU "
                   f"{hw['cpu']}, {hw['cores']} cores, {hw['threads']} torch threads; "
                   f"PyTorch {hw['torch']}"),
                  f"every time is the median of {cfg['repeats']} interleaved repeats"
                  + _load_note(hw.get("load_average"), hw.get("cores"))]
    show = [p for p in (parts or PARTS) if p in res]
    for part in show:
        lines.append("")
        if _ok(res[part]):
            lines += _FORMATTERS[part](res[part], res)
        else:
            lines.append(f"[{part}] skipped: {res[part].get('skipped', 'not run')}")
    if goals:
        lines += ["", "goals"]
        for goal, (text, value, met) in zip(goals, check_goals(res, goals)):
            verdict = "" if met is None else f" -> {'met' if met else 'MISSED'}"
            lines.append(f"  {text}: {goal.show(value)}{verdict}")
    return "\n".join(lines).lstrip("\n")
