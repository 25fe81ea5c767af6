"""The repository's scripts (and benchmarks, Sphinx extensions) imported in tests: they are
files, not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_script(path: str) -> ModuleType:
    """Import ``ROOT/path`` (e.g. ``"scripts/cost.py"``; a bare name means ``scripts/<name>.py``),
    once per test session: every test file gets the same module."""
    file = ROOT / (path if path.endswith(".py") else f"scripts/{path}.py")
    name = "_cnnlab_" + "_".join(file.relative_to(ROOT).with_suffix("").parts)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
