"""Write book/data/fashion_benchmarks.json: Fashion-MNIST's published benchmark rows, stored with
the book so that book/choosing.ipynb needs neither Debian's package nor a download (Colab has
neither the package nor its path).

The rows are the table of results that readers submitted to the dataset's authors, read from the
README that Debian's ``dataset-fashion-mnist`` ships, by ``cnnlab.data.published_benchmarks``
(the authors note that they have not verified them). Beside them the file keeps the classifier
names of the package's ``benchmark/baselines.json``: the parameter grid of the authors' own
scikit-learn benchmark, which has no neural network. From the repository root, with the package
installed (``apt-get install dataset-fashion-mnist``)::

    python scripts/store_benchmarks.py --out book/data/fashion_benchmarks.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
from pathlib import Path

from cnnlab.data import BENCHMARK_README, published_benchmarks

UPSTREAM = "https://github.com/zalandoresearch/fashion-mnist (README.md, section Benchmark)"


def _finite_or_none(row: dict) -> dict:
    """The row with NaN accuracies (a "-" in the table) as ``None`` (JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=BENCHMARK_README,
                        help="the dataset's README (.md or .md.gz); default: Debian's copy")
    parser.add_argument("--baselines", type=Path,
                        default=BENCHMARK_README.parent / "benchmark" / "baselines.json",
                        help="the package's scikit-learn parameter grid")
    parser.add_argument("--out", type=Path, default=Path("book/data/fashion_benchmarks.json"))
    args = parser.parse_args(argv)

    for path in (args.readme, args.baselines):
        if not path.is_file():
            parser.error(f"{path} does not exist (install Debian's dataset-fashion-mnist, or pass "
                         "the file's path)")
    rows = published_benchmarks(args.readme)
    if not rows:
        parser.error(f"{args.readme} has no benchmark table")
    grid = sorted(json.loads(args.baselines.read_text(encoding="utf8"))["classifiers"])
    changelog = args.readme.parent / "changelog.Debian.gz"  # the package's version, if beside it
    version = (gzip.decompress(changelog.read_bytes()).decode("utf8").split("(", 1)[1]
               .split(")", 1)[0] if changelog.is_file() else "unknown")
    payload = {
        "meta": {
            "source": f"the benchmark table of Fashion-MNIST's README, {UPSTREAM}, as shipped "
                      f"by Debian's package dataset-fashion-mnist {version}",
            "readme_sha256": hashlib.sha256(args.readme.read_bytes()).hexdigest(),
            "note": "Results submitted by readers; the dataset's authors note that they have not "
                    "verified them. fashion_acc and mnist_acc are fractions (null: not given). "
                    "sklearn_grid: the classifiers of the package's benchmark/baselines.json.",
            "made_by": "scripts/store_benchmarks.py",
        },
        "rows": [_finite_or_none(r) for r in rows],
        "sklearn_grid": grid,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf8")
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(rows)} published rows, {len(grid)} scikit-learn classifiers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
