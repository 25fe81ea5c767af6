"""Benchmark of cnnlab's training loop (issue: foundation quality bars). Ratios, not timed tests.

    python benchmarks/bench_fit.py            # the full benchmark (~1-2 min on 2 cores)
    python benchmarks/bench_fit.py --quick    # tiny sizes, a smoke test

Measured side by side in one run, variants interleaved, medians of the repeats:

1. samples/s of ``cnnlab.train.fit`` vs a minimal hand-written PyTorch loop on the same preloaded
   tensors, model and memory format (goal >= 0.95x), and vs a DataLoader loop like the article's
   (TensorDataset + DataLoader(shuffle=True), default memory format; goal: fit >= 2x);
2. SmallCNN(batch_norm=True) on the full digits training split over 5 seeds: mean test accuracy
   (goal >= 98.0%) and training seconds per run (goal <= 3 s);
3. the epoch time on the full Fashion-MNIST training set at width 32 (it sets what the chapters can
   afford), when Fashion-MNIST is on disk.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.data import available, load_dataset
from cnnlab.experiments import confidence_interval
from cnnlab.models import build_model
from cnnlab.perf import hardware_summary
from cnnlab.train import fit


def hand_loop(model, x, y, *, epochs: int, lr: float, batch_size: int, seed: int) -> None:
    """The minimal loop: seeded permutation of preloaded tensors, SGD with momentum."""
    model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def dataloader_loop(model, x, y, *, epochs: int, lr: float, batch_size: int, seed: int) -> None:
    """The article's style: a DataLoader over a TensorDataset, shuffled, default memory format."""
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def throughput(data, *, width: int, epochs: int, repeats: int) -> dict[str, float]:
    """Median samples/s of the three loops, interleaved, the order rotating every round."""
    x, y = data.train
    n = len(y) * epochs
    kw = dict(epochs=epochs, lr=0.05, batch_size=64, seed=0)

    def run_fit(model) -> float:
        hist = fit(model, data, progress=False, **kw)
        return n / hist.train_time  # training time only, as for the other two

    def timed(loop: Callable) -> Callable:
        def go(model) -> float:
            start = time.perf_counter()
            loop(model, x, y, **kw)
            return n / (time.perf_counter() - start)
        return go

    variants = {"fit": run_fit, "hand": timed(hand_loop), "dataloader": timed(dataloader_loop)}
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(repeats):
        # rotate the order every round: whoever runs first in a round pays for a cold cache
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            go = variants[name]
            model = build_model(data.input_shape, data.num_classes, seed=0, width=width)
            samples[name].append(go(model))
    return {k: statistics.median(v) for k, v in samples.items()}


def digits_quality(seeds: int, epochs: int) -> tuple[list[float], list[float]]:
    accs, times = [], []
    for seed in range(seeds):
        data = load_dataset("digits", seed=seed)
        model = build_model(data.input_shape, data.num_classes, seed=seed, width=32,
                            batch_norm=True)
        hist = fit(model, data, epochs=epochs, lr=0.05, seed=seed, progress=False)
        accs.append(hist.test_acc)
        times.append(hist.train_time)
    return accs, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    quick = args.quick
    print(f"hardware: {hardware_summary()}")

    data = load_dataset("digits")
    rates = throughput(data, width=8 if quick else 16, epochs=1 if quick else 10,
                       repeats=1 if quick else 6)
    print("\n1. training throughput on digits (samples/s, median of interleaved repeats)")
    for name, rate in rates.items():
        print(f"   {name:<11}{rate:10.0f}")
    r_hand, r_loader = rates["fit"] / rates["hand"], rates["fit"] / rates["dataloader"]
    print(f"   fit / hand-written loop = {r_hand:.2f}x   (goal >= 0.95x: "
          f"{'met' if r_hand >= 0.95 else 'MISSED'})")
    print(f"   fit / DataLoader loop   = {r_loader:.2f}x   (goal >= 2x: "
          f"{'met' if r_loader >= 2 else 'MISSED'})")

    accs, times = digits_quality(seeds=2 if quick else 5, epochs=1 if quick else 10)
    mean, low, high = confidence_interval(accs)
    print(f"\n2. SmallCNN(batch_norm=True, width=32) on digits, {len(accs)} seeds")
    print(f"   test accuracy {mean:.2%} (95% CI {low:.2%}-{high:.2%}; goal >= 98.0%: "
          f"{'met' if mean >= 0.98 else 'MISSED'})")
    print(f"   training time per run: median {statistics.median(times):.2f} s, max "
          f"{max(times):.2f} s (goal <= 3 s: {'met' if max(times) <= 3 else 'MISSED'})")

    print("\n3. one epoch on the full Fashion-MNIST training set (width 32)")
    if not available("fashion_mnist"):
        print("   skipped: Fashion-MNIST is not on this machine (apt-get install "
              "dataset-fashion-mnist)")
    else:
        fm = load_dataset("fashion_mnist", train_size=300 if quick else None)
        model = build_model(fm.input_shape, fm.num_classes, seed=0, width=8 if quick else 32,
                            batch_norm=True)
        hist = fit(model, fm, epochs=1, lr=0.05, progress=False)
        print(f"   {len(fm.train[1])} images: {hist.epoch_time[0]:.1f} s per epoch "
              f"({len(fm.train[1]) / hist.epoch_time[0]:.0f} samples/s), test accuracy "
              f"{hist.test_acc:.2%} after 1 epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
