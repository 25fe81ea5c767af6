#!/usr/bin/env python3
"""Vendor the browser assets the static site needs into ``_static/``, from the npm registry.

The published book must load nothing from outside its own origin, but myst-nb and Sphinx point
at CDNs by default: require.js and ``@jupyter-widgets/html-manager`` (widgets of executed cells)
and MathJax (the chapters' math). This script fetches the pinned packages with the ordinary npm
client (``npm pack``, which checks each tarball against the registry's integrity hash; the
script checks it again against the pinned value), copies only the files the site uses and writes
``scripts/vendored_assets.json`` (source package and SHA-256 of every vendored file).

    python scripts/vendor_assets.py           # re-vendor (needs npm and the registry)
    python scripts/vendor_assets.py --check   # offline: the committed files match the manifest

Debian has ``libjs-requirejs`` (2.3.6) but no ``node-jupyter-widgets-html-manager``, so all three
come from npm, where the versions match what myst-nb 1.4 and Sphinx 7.4 expect
(html-manager 1.x for ipywidgets 8; MathJax 3).

To upgrade: change a version below, clear its ``integrity`` (the script prints the new one and
stops), check it, paste it in, and run again; then rebuild the book and run ``make browser``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "_static"
MANIFEST = ROOT / "scripts" / "vendored_assets.json"

# Every package: the npm spec, its pinned integrity (sha512, as the registry publishes it), and
# (glob inside the tarball, folder under _static/) pairs. A glob keeps its base name.
PACKAGES: list[dict] = [
    {
        # RequireJS: the AMD loader the widget manager bundle needs (unminified, ~85 kB).
        "spec": "requirejs@2.3.8",
        "integrity": ("sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCs"
                      "AX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw=="),
        "files": [("package/require.js", "vendor")],
    },
    {
        # The ipywidgets 8 embed manager: renders the widget state myst-nb embeds. Its icon font
        # (Font Awesome) is loaded relative to the bundle, so the fonts sit beside it; woff2 and
        # woff cover every current browser (the eot/svg/ttf copies are for legacy browsers).
        "spec": "@jupyter-widgets/html-manager@1.0.15",
        "integrity": ("sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4x"
                      "JDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="),
        "files": [
            ("package/dist/embed-amd.js", "vendor"),
            ("package/dist/*.woff2", "vendor"),
            ("package/dist/*.woff", "vendor"),
            ("package/dist/embed.js.LICENSE.txt", "vendor"),
        ],
    },
    {
        # MathJax 3 with every TeX extension in one file (no autoloading of extensions at run
        # time), and the CommonHTML fonts it loads from [mathjax]/output/chtml/fonts/woff-v2.
        "spec": "mathjax@3.2.2",
        "integrity": ("sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX"
                      "7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="),
        "files": [
            ("package/es5/tex-chtml-full.js", "mathjax"),
            ("package/es5/output/chtml/fonts/woff-v2/*.woff", "mathjax/output/chtml/fonts/woff-v2"),
            ("package/LICENSE", "mathjax"),
        ],
    },
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm_pack(spec: str, dest: Path) -> tuple[Path, str]:
    """Download ``spec``'s tarball with ``npm pack``; return its path and integrity."""
    out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(dest)],
                         check=True, capture_output=True, text=True).stdout
    info = json.loads(out)[0]
    return dest / info["filename"], info["integrity"]


def vendor() -> int:
    if shutil.which("npm") is None:
        print("npm is not installed (apt-get install npm)", file=sys.stderr)
        return 2
    manifest: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for pkg in PACKAGES:
            tarball, integrity = npm_pack(pkg["spec"], tmpdir)
            if integrity != pkg["integrity"]:
                print(f"{pkg['spec']}: integrity {integrity} does not match the pinned "
                      f"{pkg['integrity']!r}; check it and pin it in {Path(__file__).name}",
                      file=sys.stderr)
                return 1
            with tarfile.open(tarball) as tar:
                members = [m for m in tar.getmembers() if m.isfile()]
                for pattern, folder in pkg["files"]:
                    hits = [m for m in members if fnmatch(m.name, pattern)]
                    if not hits:
                        print(f"{pkg['spec']}: nothing matches {pattern}", file=sys.stderr)
                        return 1
                    for m in hits:
                        target = STATIC / folder / Path(m.name).name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(tar.extractfile(m).read())
                        rel = target.relative_to(ROOT).as_posix()
                        manifest[rel] = {"source": f"{pkg['spec']}:{m.name}",
                                         "sha256": sha256(target)}
    stale = [p for p in _vendored_dirs_files() if p.relative_to(ROOT).as_posix() not in manifest]
    for p in stale:
        p.unlink()
        print(f"removed stale {p.relative_to(ROOT)}")
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    total = sum((ROOT / p).stat().st_size for p in manifest)
    print(f"vendored {len(manifest)} files ({total / 1e6:.1f} MB) into _static/; "
          f"manifest {MANIFEST.relative_to(ROOT)}")
    return 0


def _vendored_dirs_files() -> list[Path]:
    folders = {folder.split("/")[0] for pkg in PACKAGES for _, folder in pkg["files"]}
    return sorted(p for f in folders for p in (STATIC / f).rglob("*") if p.is_file())


def check() -> list[str]:
    """Problems with the vendored files (empty when they match the manifest)."""
    if not MANIFEST.exists():
        return [f"{MANIFEST.relative_to(ROOT)} is missing: run scripts/vendor_assets.py"]
    manifest = json.loads(MANIFEST.read_text())
    problems = []
    for rel, entry in manifest.items():
        path = ROOT / rel
        if not path.is_file():
            problems.append(f"{rel} is missing (from {entry['source']})")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"{rel} differs from {entry['source']}")
    extra = [p.relative_to(ROOT).as_posix() for p in _vendored_dirs_files()]
    problems += [f"{rel} is not in the manifest" for rel in extra if rel not in manifest]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="verify the committed files against the manifest (offline)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print(f"vendored assets match {MANIFEST.relative_to(ROOT)}")
        return 1 if problems else 0
    return vendor()


if __name__ == "__main__":
    sys.exit(main())
