"""Benchmark of cnnlab's training loop (issue: foundation quality bars). Ratios, not timed tests.

    python benchmarks/bench_fit.py            # the full benchmark (~1-2 min on 2 cores)
    python benchmarks/bench_fit.py --quick    # tiny sizes, a smoke test

Measured side by side in one run, variants interleaved with their order rotating every round:

1. samples/s of ``cnnlab.train.fit`` vs
   a. a minimal hand-written PyTorch loop on the same preloaded tensors, model and memory format
      (goal: fit >= 0.95x);
   b. the DataLoader loop readers of the article write (the article itself shows no data loading;
      its readers follow the PyTorch tutorials): a torchvision-style dataset that turns each uint8
      image into a PIL image and through ``ToTensor()`` + ``Normalize()``,
      ``DataLoader(shuffle=True)``, the default memory format (goal: fit >= 2x);
   c. the leanest DataLoader loop, over a ``TensorDataset`` of the preloaded tensors (no goal:
      printed so that the DataLoader's own cost is not overstated).
   Each rate is the best of the repeats (noise on a shared machine only ever adds time; the median
   is printed beside it). The data pipelines alone (no model) are timed too: that is where the
   DataLoader's ~10-20x per-sample cost shows; on 8x8 digits the model costs more than either.
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
from torch.utils.data import Dataset as TorchDataset

from cnnlab.data import available, load_dataset
from cnnlab.models import build_model
from cnnlab.perf import hardware_summary
from cnnlab.stats import confidence_interval
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


def dataloader_loop(model, x, y, *, epochs: int, lr: float, batch_size: int, seed: int,
                    dataset: TorchDataset | None = None) -> None:
    """A DataLoader loop, shuffled, default memory format; over ``dataset`` when given (the
    tutorial pipeline), else over a TensorDataset of the preloaded tensors (the leanest one)."""
    loader = DataLoader(dataset if dataset is not None else TensorDataset(x, y),
                        batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class TutorialImages(TorchDataset):
    """What torchvision's MNIST-style datasets do per item: uint8 array -> PIL image -> transform
    (``ToTensor()`` scales to [0, 1], ``Normalize`` standardizes), label as a Python int."""

    def __init__(self, data) -> None:
        from torchvision import transforms

        x, y = data.train
        mean, std = data.mean[0], data.std[0]
        scale = 255.0 / float((x * std + mean).max())  # the raw pixel range -> 0..255
        self.images = ((x[:, 0] * std + mean) * scale).round().clamp(0, 255).to(torch.uint8).numpy()
        self.targets = y.tolist()
        self.transform = transforms.Compose([
            transforms.ToTensor(),
            transforms.Normalize((mean * scale / 255,), (std * scale / 255,)),
        ])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), self.targets[i]


def pipeline_rate(kind: str, x, y, tutorial: TutorialImages, batch_size: int = 64) -> float:
    """Samples/s of the data pipeline alone: batches drawn, no model."""
    start, n = time.perf_counter(), 0
    if kind == "slicing":
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            _xb, yb = x[idx], y[idx]
            n += len(yb)
    else:
        dataset = TensorDataset(x, y) if kind == "TensorDataset" else tutorial
        for _xb, yb in DataLoader(dataset, batch_size=batch_size, shuffle=True):
            n += len(yb)
    return n / (time.perf_counter() - start)


def throughput(data, *, width: int, epochs: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(best, median) samples/s of the four loops, interleaved, the order rotating every round."""
    x, y = data.train
    n = len(y) * epochs
    kw = dict(epochs=epochs, lr=0.05, batch_size=64, seed=0)
    tutorial = TutorialImages(data)

    def run_fit(model) -> float:
        hist = fit(model, data, progress=False, **kw)
        return n / hist.train_time  # training time only, as for the other loops

    def timed(loop: Callable, **extra) -> Callable:
        def go(model) -> float:
            start = time.perf_counter()
            loop(model, x, y, **kw, **extra)
            return n / (time.perf_counter() - start)
        return go

    variants = {"fit": run_fit, "hand": timed(hand_loop),
                "tutorial": timed(dataloader_loop, dataset=tutorial),
                "TensorDataset": timed(dataloader_loop)}
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(repeats):
        # rotate the order every round: whoever runs first in a round pays for a cold cache
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            model = build_model(data.input_shape, data.num_classes, seed=0, width=width)
            samples[name].append(variants[name](model))
    return {k: (max(v), statistics.median(v)) for k, v in samples.items()}


def pipelines(data, repeats: int) -> dict[str, float]:
    """Best samples/s of each data pipeline alone (no model), interleaved."""
    x, y = data.train
    tutorial = TutorialImages(data)
    kinds = ("slicing", "TensorDataset", "tutorial")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind in kinds:
            rates[kind].append(pipeline_rate(kind, x, y, tutorial))
    return {k: max(v) for k, v in rates.items()}


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
                       repeats=1 if quick else 8)
    print("\n1. training throughput on digits (samples/s: best and median of interleaved repeats)")
    labels = {"fit": "cnnlab fit", "hand": "hand-written loop",
              "tutorial": "DataLoader, tutorial pipeline",
              "TensorDataset": "DataLoader, TensorDataset"}
    for name, (best, median) in rates.items():
        print(f"   {labels[name]:<31}{best:9.0f}  (median {median:.0f})")
    best = {k: v[0] for k, v in rates.items()}
    r_hand, r_tut, r_td = (best["fit"] / best[k] for k in ("hand", "tutorial", "TensorDataset"))
    print(f"   fit / hand-written loop = {r_hand:.2f}x   (goal >= 0.95x: "
          f"{'met' if r_hand >= 0.95 else 'MISSED'})")
    print(f"   fit / DataLoader loop   = {r_tut:.2f}x   (the tutorial pipeline; goal >= 2x: "
          f"{'met' if r_tut >= 2 else 'MISSED'})")
    print(f"   fit / TensorDataset DataLoader = {r_td:.2f}x   (no goal: the leanest DataLoader "
          "loop)")
    pipe = pipelines(data, repeats=1 if quick else 5)
    print("   data pipeline alone, no model (best samples/s): " + ", ".join(
        f"{k} {v:.0f}" for k, v in pipe.items()))
    print(f"   slicing preloaded tensors is {pipe['slicing'] / pipe['TensorDataset']:.0f}x cheaper "
          f"than a TensorDataset DataLoader and {pipe['slicing'] / pipe['tutorial']:.0f}x cheaper "
          "than the tutorial pipeline")

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
