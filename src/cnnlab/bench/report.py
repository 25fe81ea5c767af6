"""The benchmark as text: each part's table with the absolute figures (medians) and the ratios
with their 95% intervals side by side; and targets (:class:`Goal`) checked against the figures
and their intervals (:func:`check_goals`)."""


from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cnnlab.bench.conv import CONV_NCHW
from cnnlab.bench.core import DDP_PARALLEL, DDP_SINGLE, DDP_THREADS, Result, time_ratio
from cnnlab.bench.run import PARTS, update_results
from cnnlab.bench.step import STEP_NCHW
from cnnlab.perf import Ratio
from cnnlab.stats import COMPARISONS, goal_status
from cnnlab.tables import and_list

# ----------------------------------------------------------------------------- the table


def _ms(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def _gf(v: float | None) -> str:
    """GFLOP/s: one decimal below 1,000, whole numbers with separators above (a GPU's 36,333)."""
    return _num(v, ".1f") if v is None or not math.isfinite(v) or v < 1000 else f"{v:,.0f}"


def _ci(value: float | None, ci: Sequence[float | None] | None, fmt: str = "{:.2f}x") -> str:
    """``"1.92x (1.85-2.00)"``: a ratio and its 95% interval; ``"1.92x (no CI)"`` without one."""
    if value is None or not math.isfinite(value):
        return "n/a"
    low, high = ci if ci else (None, None)
    if low is None or high is None:
        return f"{fmt.format(value)} (no CI)"
    return f"{fmt.format(value)} ({fmt.format(low).rstrip('x%')}-{fmt.format(high)})"


def _rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return ["  " + fmt.format(*header), *("  " + fmt.format(*r) for r in rows)]


def _vs(part: Result, name: str, base: str, fmt: str = "{:.2f}x") -> str:
    """The cell "time of ``name`` / time of ``base``" with its interval (paired repeats)."""
    if name == base:
        return fmt.format(1.0)
    r = time_ratio(part, name, base)
    return _ci(r.value, r.interval(), fmt)


def _fmt_conv(conv: Result, res: Result) -> list[str]:
    s = conv["shape"]
    peak = res.get("peak") or {}
    hw, mm = peak.get("fraction_hardware", {}), peak.get("fraction_matmul", {})
    hw_ci = peak.get("fraction_hardware_ci", {})
    header = ["variant", "time", "GFLOP/s", "time vs NCHW",
              *(["of hw peak", "of matmul"] if mm else []), "spread"]
    rows = [[name, _ms(v["seconds"]), _gf(v["gflops"]), _vs(conv, name, CONV_NCHW),
             *([_ci(hw.get(name), hw_ci.get(name), "{:.0%}"), _num(mm.get(name), ".0%")]
               if mm else []),
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
    rows = [[name, _ms(v["seconds"]), _num(v["gflops"], ".3g"),
             _vs(naive, name, CONV_NCHW, "{:.3g}x"), f"{v['max_abs_diff']:.1e}"]
            for name, v in naive["variants"].items()]
    return [(f"[naive] on the CPU, tiny input {s['batch']}x{s['in_channels']}x{s['size']}x"
             f"{s['size']} -> {s['out_channels']} channels"),
            *_rows(["variant", "time", "GFLOP/s", "time vs F.conv2d", "max |diff|"], rows)]


def _fmt_peak(peak: Result, res: Result) -> list[str]:
    hw, prec = peak["hardware"], peak["precision"]
    on = hw["name"] if hw.get("device") == "cuda" else f"{peak['threads']} thread(s)"
    if peak["hardware_gflops"]:
        head = (f"[peak] hardware peak, {prec}: {peak['hardware_gflops']:.1f} GFLOP/s "
                f"({hw['source']})")
    else:
        head = f"[peak] hardware peak, {prec}: unknown ({hw['source']})"
    mm_of = peak.get("matmul_of_hardware")
    lines = [head, *(f"  assumed: {a}" for a in hw["assumptions"]),
             (f"  measured on {on}: {peak['matmul_precision']} matmul {peak['matmul_size']}^3 "
              f"{peak['matmul_gflops']:.1f} GFLOP/s"
              + (f" = {mm_of:.0%} of the {peak['matmul_precision']} hardware peak"
                 if mm_of is not None else ""))]
    rows = [[name, _ci(peak["fraction_hardware"][name],
                       peak["fraction_hardware_ci"].get(name), "{:.0%}"),
             f"{f:.0%}"] for name, f in peak["fraction_matmul"].items()]
    return lines + _rows(["convolution", "of hw peak", "of matmul"], rows)


def _fmt_separable(sep: Result, res: Result) -> list[str]:
    s = sep["shape"]
    rows = [[name, f"{sep['params'][name]:,}", f"{sep['flops'][name] / 1e9:.3g}",
             _ms(v["seconds"]), _gf(v["gflops"])] for name, v in sep["variants"].items()]
    return [(f"[separable] {s['in_channels']}->{s['out_channels']}, {s['kernel']}x{s['kernel']} "
             f"on {s['batch']}x{s['in_channels']}x{s['size']}x{s['size']}, forward+backward, "
             "channels_last"),
            *_rows(["layer", "params", "GFLOP", "time", "GFLOP/s"], rows),
            (f"  separable / standard: params {sep['param_ratio']:.2f}x, FLOPs "
             f"{sep['flop_ratio']:.2f}x, time {_vs(sep, 'separable', 'standard')}")]


def _fmt_step(step: Result, res: Result) -> list[str]:
    s = step["shape"]
    rows = [[name, _ms(v["seconds"]), _vs(step, STEP_NCHW, name), f"{v['spread']:.0%}"]
            for name, v in step["variants"].items()]
    cpu = "threads" in step and step.get("device") != "cuda"
    on = f", {step['threads']} thread(s)" if cpu else ""
    lines = [(f"[step] SmallCNN width {s['width']}, batch {s['batch']} of {s['size']}x"
              f"{s['size']}: forward + backward + SGD{on}"),
             *_rows(["variant", "time/step", "speed-up vs NCHW", "spread"], rows)]
    if "flops" in step:
        base = step["variants"][STEP_NCHW]
        lines.append(f"  {step['flops'] / 1e9:.3g} GFLOP per step (3 forward passes): "
                     f"{STEP_NCHW} at {step['flops'] / base['seconds'] / 1e9:.1f} GFLOP/s")
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
    names = list(thr["variants"])
    return [f"[threads] the fp32 channels_last step, intra-op threads ({thr['cores']} cores)",
            *_rows(["threads", "time/step", "spread"], rows),
            f"  speed-up: {_vs(thr, names[0], names[-1])}"]


def _fmt_scaling(ddp: Result) -> list[str]:
    """The scaling curve: one row per size, milliseconds per step (medians; the all-reduce of
    the gradient alone, then each setting's whole step) and the speed-ups with intervals."""
    n, t = ddp["world_size"], ddp["bench"].get("threads")
    header = ["width", "per rank", "GFLOP/step", "grad MiB", "all-reduce", "1x1",
              *([f"1x{t}"] if t else []), f"{n}x1", f"{n}x1 vs 1x1",
              *([f"{n}x1 vs 1x{t}"] if t else [])]
    rows = []
    for size in ddp["scaling"]:
        b, steps = size["bench"], size["steps_per_epoch"]
        ms = {k: _num(b[f"{k}_median"] / steps * 1e3)
              for k in (DDP_SINGLE, DDP_THREADS, DDP_PARALLEL) if f"{k}_median" in b}
        ar = size.get("allreduce_seconds")
        rows.append([str(size["width"]), str(size["batch_per_rank"]),
                     _num(size["flops_per_step"] / 1e9), _num(size["grad_bytes"] / 2**20),
                     _num(None if ar is None else ar * 1e3),
                     ms[DDP_SINGLE], *([ms[DDP_THREADS]] if t else []), ms[DDP_PARALLEL],
                     _vs(size, DDP_SINGLE, DDP_PARALLEL),
                     *([_vs(size, DDP_THREADS, DDP_PARALLEL)] if t else [])])
    return _rows(header, rows)


def _fmt_startup(ddp: Result) -> str:
    st = ddp.get("startup") or {}
    parts = [(k, st.get(f"{k}_seconds")) for k in ("launcher", "import", "init", "load")]
    known = [f"{name} {v:.1f} s" for name, v in parts if v is not None]
    text = f"the whole launch, start-up included, took {ddp['launch_seconds']:.1f} s"
    if "ready_seconds" in st:
        text += (f"; {st['ready_seconds']:.1f} s to the first step (" + ", ".join(known)
                 + "; init: connecting the processes)")
    return text


def _fmt_tta(ddp: Result) -> list[str]:
    tta, n = ddp["tta"], ddp["world_size"]

    def reached(kind: str) -> str:
        t = tta[f"{kind}_to_target"]
        return (f"not within {tta['epochs']} epochs ({tta[kind]['seconds'][-1]:.2f} s)"
                if t is None else f"{t:.2f} s")

    return [(f"  time to {tta['target']:.0%} validation accuracy ({tta['val_images']} images; "
             f"width {tta['width']}, global batch {tta['global_batch']}, training seconds): "
             f"1 process {reached(DDP_SINGLE)}, {n} processes {reached(DDP_PARALLEL)}"),
            ("  validation accuracy after each epoch: 1 process "
             + ", ".join(f"{a:.1%}" for a in tta[DDP_SINGLE]["val_acc"]) + f"; {n} processes "
             + ", ".join(f"{a:.1%}" for a in tta[DDP_PARALLEL]["val_acc"]))]


def _fmt_bn(ddp: Result) -> str:
    bn = ddp["bn"]
    return (f"  batch norm, first layer, {ddp['world_size']} ranks x {bn['batch_per_rank']} "
            f"images: per-rank means off the global batch's by up to "
            f"{bn['rank_mean_off_std']:.3f} std, variances by up to {bn['rank_var_off_rel']:.1%};"
            f" all-reduced: |mean diff| <= {bn['synced_mean_diff']:.1e}, |var diff| <= "
            f"{bn['synced_var_diff']:.1e}")


def _fmt_ddp(ddp: Result, res: Result) -> list[str]:
    b, n, c = ddp["bench"], ddp["world_size"], ddp["config"]
    if ddp.get("scaling"):
        lines = [(f"[ddp] {ddp['dataset']}, {c['train_size']} images/epoch, {ddp['backend']}, "
                  f"{len(b['single_times'])} interleaved rounds; ms per step (medians) of "
                  "1 process x 1 thread, "
                  + (f"1 x {b['threads']} threads, " if b.get("threads") else "")
                  + f"{n} processes x 1 thread; speed-ups with 95% intervals"),
                 *_fmt_scaling(ddp),
                 (f"  speed-up at the last size {_vs(ddp, DDP_SINGLE, DDP_PARALLEL)}; "
                  + _fmt_startup(ddp))]
    else:
        lines = [(f"[ddp] {ddp['dataset']}, {c['train_size']} images/epoch, global batch "
                  f"{c['batch_size']}, {ddp['backend']}, {len(b['single_times'])} interleaved "
                  "rounds"),
                 *_rows(["setup", "s/epoch"],
                        [["1 process x 1 thread", f"{b['single_median']:.3g}"],
                         [f"{n} processes x 1 thread", f"{b['parallel_median']:.3g}"]]),
                 f"  speed-up {_vs(ddp, DDP_SINGLE, DDP_PARALLEL)}; " + _fmt_startup(ddp)]
    if "tta" in ddp:
        lines += _fmt_tta(ddp)
    if "bn" in ddp:
        lines.append(_fmt_bn(ddp))
    if "grad_bytes" in ddp and "steps_per_epoch" in b and not ddp.get("scaling"):
        lines.append(f"  {b['steps_per_epoch']} steps per epoch, each all-reducing "
                     f"{ddp['grad_bytes'] / 2**20:.3g} MiB of gradient")
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


@dataclass(frozen=True)
class Goal:
    """A target for one figure of a benchmark result (:func:`check_goals`), e.g.
    ``Goal("im2col within 3x of F.conv2d", "conv", ("ratio_im2col",), "<=", 3.0, "{:.2f}x",
    interval=("ratio_im2col_ci",))``.
    """

    description: str  # what the goal says, shown beside the figure
    part: str  # the result's part that holds the figure: "conv", "peak", "ddp", ...
    key: tuple[str, ...]  # the figure's path inside that part, e.g. ("fraction_hardware", CONV_CL)
    comparison: str  # ">=", "<=", ">" or "<": figure <comparison> threshold is met
    threshold: float
    fmt: str = "{:.3g}"  # how the figure is shown (str.format), e.g. "{:.0%}", "{:.2f}x"
    # the path of the figure's 95% interval [low, high] in the part, e.g. ("ratio_im2col_ci",);
    # () for a figure without one (then the goal is checked on the figure alone)
    interval: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"Invalid comparison: {self.comparison!r} (choose from "
                             f"{list(COMPARISONS)})")
        for name, path, empty_ok in (("key", self.key, False), ("interval", self.interval, True)):
            if (not isinstance(path, tuple) or (not path and not empty_ok)
                    or not all(isinstance(k, str) for k in path)):
                raise ValueError(f"Invalid {name}: {path!r} (a{'' if empty_ok else ' non-empty'} "
                                 "tuple of names)")

    def show(self, value: float | None) -> str:
        """``value`` in this goal's format; ``"not measured"`` for ``None``."""
        return "not measured" if value is None else self.fmt.format(value)


class GoalCheck(NamedTuple):
    """One goal checked (:func:`check_goals`)."""

    description: str
    value: float | None  # the figure; None: not measured
    low: float | None  # its 95% interval (None: the figure has none)
    high: float | None
    status: str  # "met", "missed", "undecided" (the interval holds the target), "not measured"

    @property
    def met(self) -> bool | None:
        """True (met), False (missed), None (undecided or not measured)."""
        return {"met": True, "missed": False}.get(self.status)


def _find(part: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        part = part.get(name) if isinstance(part, dict) else None
    return part


def check_goals(res: Result, goals: Sequence[Goal]) -> list[GoalCheck]:
    """Each goal against a benchmark result, by the book's timing rule where the figure has an
    interval: met when the whole 95% interval meets the target, missed when none of it does,
    undecided when the interval holds the target.

    Args:
        res: :func:`~cnnlab.bench.run.run_bench`'s results, or any dict of parts (``{"conv":
            bench_conv(cfg), ...}``).
        goals: the targets, in the order to report them.
    Returns:
        One :class:`GoalCheck` per goal; "not measured" where the figure is missing (its part
        is missing or was skipped, or the part lacks the key). A figure without an interval
        (``Goal.interval`` empty, or no interval stored) is checked on its value alone.
    """
    res = update_results(res)  # saved by an earlier version: the intervals from the repeats
    out: list[GoalCheck] = []
    for goal in goals:
        part = res.get(goal.part)
        if not _ok(part):
            part = None
        value = _find(part, goal.key)
        if value is None:
            out.append(GoalCheck(goal.description, None, None, None, "not measured"))
            continue
        ci = _find(part, goal.interval) if goal.interval else None
        low, high = (ci if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
                     else (None, None))
        status = goal_status(value if low is None else low, value if high is None else high,
                             goal.comparison, goal.threshold)
        out.append(GoalCheck(goal.description, value, low, high, status))
    return out


def goal_line(goal: Goal, check: GoalCheck) -> str:
    """``"im2col within 3x: 2.37x (95% CI 1.90x to 2.96x) -> met"``, as :func:`format_table`
    lists it; "undecided" says that the interval holds the target."""
    if check.status == "not measured":
        return f"{check.description}: not measured"
    ci = ("" if check.low is None else
          f" (95% CI {goal.fmt.format(check.low)} to {goal.fmt.format(check.high)})")
    word = {"met": "met", "missed": "MISSED",
            "undecided": "undecided (the interval holds the target)"}[check.status]
    return f"{check.description}: {goal.show(check.value)}{ci} -> {word}"


def ratios_text(ratios: Sequence[Ratio], labels: Sequence[str], *, above: str, below: str,
                unit: str = "") -> str:
    """Several ratios with their intervals in one sentence, each verdict by the book's timing
    rule (:meth:`~cnnlab.perf.Ratio.word`) and the points grouped by verdict, e.g.
    ``"0.73x (95% CI 0.50x to 1.05x) at 0.23 and 1.80x (95% CI 1.52x to 2.13x) at 3.3 GFLOP
    per step (3 repeats each): no measurable difference on this machine at 0.23; faster at
    3.3"``; a single verdict is written once ("...: faster at each").

    Args:
        ratios: one :class:`~cnnlab.perf.Ratio` per point.
        labels: where each was measured (``"0.23"``), in the same order.
        above, below: the words for an interval above 1 and below 1 (for a speed-up: "faster"
            and "slower").
        unit: written once after the last label (``"GFLOP per step"``).
    """
    if len(ratios) != len(labels) or not ratios:
        raise ValueError(f"Invalid ratios / labels: {len(ratios)} / {len(labels)} (must be the "
                         "same positive number)")

    def ci(r: Ratio) -> str:
        return (f"{r.value:.2f}x (95% CI {r.low:.2f}x to {r.high:.2f}x)" if r.decision is not None
                else f"{r.value:.2f}x (no interval)")

    points = and_list([f"{ci(r)} at {label}" for r, label in zip(ratios, labels)])
    counts = sorted({r.n for r in ratios})
    reps = "/".join(str(c) for c in counts) + f" repeat{'s' if counts[-1] != 1 else ''} each"
    groups: dict[str, list[str]] = {}
    for r, label in zip(ratios, labels):
        groups.setdefault(r.word(above, below), []).append(label)
    verdicts = ("; ".join(f"{word} at {and_list(where)}" for word, where in groups.items())
                if len(groups) > 1 else f"{next(iter(groups))} at each")
    return f"{points}{' ' + unit if unit else ''} ({reps}): {verdicts}"


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
        res: :func:`run_bench`'s results (or a loaded JSON file of them, brought to the current
            format by :func:`~cnnlab.bench.run.update_results`).
        parts: the sections to show (default: every part in ``res``).
        header: start with the hardware line and the repeat count.
        goals: targets to check (:func:`check_goals`), listed last as met, MISSED, undecided
            or not measured (default: none, no goals section).
    """
    res = update_results(res)  # results saved by an earlier version: intervals, hardware peak
    hw, cfg = res["hardware"], res["config"]
    lines = []
    if header:
        lines += [(f"CNN Lab benchmark on {hw['device_name']} ({hw['device']}); CPU "
                   f"{hw['cpu']}, {hw['cores']} cores, {hw['threads']} torch threads; "
                   f"PyTorch {hw['torch']}"),
                  f"times are medians of {cfg['repeats']} interleaved repeats, ratios geometric "
                  "means of the paired repeats with their 95% intervals"
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
        lines += [f"  {goal_line(goal, check)}"
                  for goal, check in zip(goals, check_goals(res, goals))]
    return "\n".join(lines).lstrip("\n")
