"""Chapters run the way readers run them: in Colab, and from the README's local route.

Colab is reproduced, not assumed: a fresh virtual environment holding only what Colab preinstalls
and what these chapters could use of it (torch, torchvision, ipywidgets, matplotlib, numpy, scipy,
scikit-learn, tqdm) plus ipykernel, installed with the project's own installer
(scripts/install-python.sh: uv, hard-linked from its cache, so it costs seconds and no second copy
of torch). The checkout's wheel is built; each chapter's ``.ipynb`` is copied alone into an empty
folder and executed top to bottom in that environment, with an empty run cache, after its own first
cell was changed in two places only: the ``google.colab`` guard is lifted and the wheel stands in
for the repository URL, so the cell's install line itself runs. Nothing of the checkout is on that
kernel's path.

Run with ``make colab`` (part of ``make test``); ``-m colab`` selects these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.colab

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
VENV = ROOT / ".venv"
# What Colab preinstalls that a chapter may use, and the kernel to run them.
COLAB_SET = ["torch", "torchvision", "ipywidgets", "matplotlib", "numpy", "scipy", "scikit-learn",
             "tqdm", "ipykernel"]
# Two chapters run in full the Colab way (the cheapest two with an empty run cache; the static
# check in tests/test_book.py covers every chapter's imports), and one the README's local way.
COLAB_CHAPTERS = ["article_errors", "dropout"]
LOCAL_CHAPTER = "article_errors"
GUARD = 'if "google.colab" in sys.modules:'
CELL_TIMEOUT = 600


def _pins(tmp: Path) -> Path:
    """The development environment's versions as constraints: the fresh environment gets the
    same versions (from uv's cache: nothing is downloaded), not whatever is newest today."""
    freeze = subprocess.run([str(VENV / "bin" / "uv"), "pip", "freeze", "--python",
                             str(VENV / "bin" / "python")], check=True, capture_output=True,
                            text=True).stdout
    pins = [line for line in freeze.splitlines() if "==" in line and not line.startswith("cnnlab")]
    path = tmp / "pins.txt"
    path.write_text("\n".join(pins) + "\n")
    return path


def _make_env(where: Path, *install: str) -> Path:
    if where.exists():
        shutil.rmtree(where)
    env = {**os.environ, "UV": str(VENV / "bin" / "uv"),
           "UV_CACHE_DIR": str(ROOT / ".cache" / "uv"), "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "scripts" / "install-python.sh"), str(where), *install],
                   cwd=ROOT, env=env, check=True)
    return where


@pytest.fixture(scope="module")
def work() -> Path:
    # Beside uv's cache (one file system), so the environment is hard-linked, not copied.
    path = ROOT / ".cache" / "colab-test"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def pins(work: Path) -> Path:
    return _pins(work)


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    out = work / "dist"
    subprocess.run([str(VENV / "bin" / "uv"), "build", "--wheel", "--out-dir", str(out),
                    "--quiet", str(ROOT)], check=True,
                   env={**os.environ, "UV_CACHE_DIR": str(ROOT / ".cache" / "uv")})
    (found,) = out.glob("cnnlab-*.whl")
    return found


@pytest.fixture(scope="module")
def colab_env(work: Path, pins: Path) -> Path:
    return _make_env(work / "colab-env", *COLAB_SET, "-c", str(pins))


def _python(env: Path) -> str:
    return str(env / "bin" / "python")


def _imports(env: Path, *modules: str) -> dict[str, bool]:
    code = ("import importlib.util, json, sys; print(json.dumps({m: importlib.util.find_spec(m)"
            " is not None for m in sys.argv[1:]}))")
    out = subprocess.run([_python(env), "-c", code, *modules], check=True, capture_output=True,
                         text=True, cwd=env).stdout
    return json.loads(out)


def colab_first_cell(source: str, wheel: Path) -> str:
    """The chapter's first cell as the test runs it: guard lifted, wheel for the repository."""
    assert GUARD in source, "the first cell no longer has the google.colab guard"
    lifted = source.replace(GUARD, "if True:  # the test lifts the Colab guard")
    installed, n = re.subn(r'"cnnlab @ git\+[^"]+"', f'"cnnlab @ {wheel.as_uri()}"', lifted)
    assert n == 1, "the first cell does not install cnnlab from the repository URL"
    return installed


def run_alone(chapter: str, env: Path, folder: Path, first_cell=None) -> nbformat.NotebookNode:
    """Execute ``book/<chapter>.ipynb`` copied alone into the empty ``folder``, in ``env``."""
    folder.mkdir(parents=True)
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    if first_cell is not None:
        nb.cells[0].source = first_cell(nb.cells[0].source)
    nbformat.write(nb, folder / f"{chapter}.ipynb")
    assert sorted(p.name for p in folder.iterdir()) == [f"{chapter}.ipynb"]
    cache = folder.parent / f"{folder.name}-runs"
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CNNLAB_CACHE", "MPLBACKEND")}
    environ.update(CNNLAB_CACHE=str(cache), CNNLAB_PROGRESS="0", CNNLAB_OFFLINE="1",
                   PATH=f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}")
    specs = KernelSpecManager(kernel_dirs=[str(env / "share" / "jupyter" / "kernels")])
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    assert Path(km.kernel_spec.argv[0]).parent == env / "bin"
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(folder)}})
    assert not cache.exists(), "the run cache must start empty"
    client.execute(env=environ)  # the kernel's whole environment
    return nb


def _installed(env: Path) -> set[str]:
    """``name==version`` of every distribution in ``env``."""
    code = ("import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name']}=="
            "{d.version}\" for d in m.distributions())))")
    out = subprocess.run([_python(env), "-c", code], check=True, capture_output=True, text=True,
                         cwd=env).stdout
    return set(out.split())


def test_the_colab_environment_is_colab_like(colab_env: Path) -> None:
    found = _imports(colab_env, "torch", "ipywidgets", "sklearn", "myst_nb", "sphinx", "cnnlab",
                     "jupytext")
    assert found == {"torch": True, "ipywidgets": True, "sklearn": True, "myst_nb": False,
                     "sphinx": False, "cnnlab": False, "jupytext": False}


@pytest.mark.parametrize("chapter", COLAB_CHAPTERS)
def test_a_chapter_runs_in_colab_with_what_its_first_cell_installs(
        chapter: str, colab_env: Path, wheel: Path, work: Path) -> None:
    before = _installed(colab_env)
    nb = run_alone(chapter, colab_env, work / f"colab-{chapter}",
                   lambda source: colab_first_cell(source, wheel))
    added = {d for d in _installed(colab_env) - before if not d.startswith("cnnlab==")}
    assert not added, f"installing cnnlab also installed or replaced {sorted(added)}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert _imports(colab_env, "cnnlab", "myst_nb") == {"cnnlab": True, "myst_nb": False}


def test_the_readme_local_route_runs_a_chapter(work: Path, pins: Path) -> None:
    """`pip install -r requirements.txt -e .`, then Jupyter: the chapter as it is committed."""
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    assert "pip install -r requirements.txt -e ." in readme, "the README's local route changed"
    env = _make_env(work / "local-env", *COLAB_SET, "-r", str(ROOT / "requirements.txt"),
                    "-e", str(ROOT), "-c", str(pins))
    assert _imports(env, "myst_nb", "cnnlab", "notebook") == {
        "myst_nb": False, "cnnlab": True, "notebook": True}
    run_alone(LOCAL_CHAPTER, env, work / f"local-{LOCAL_CHAPTER}")
