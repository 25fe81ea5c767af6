import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("CNNLAB_PROGRESS", "0")
# Call-counting tests need runs in this process; the parallel path has its own tests.
os.environ["CNNLAB_WORKERS"] = "1"
# No test reaches the network; tests of the download path monkeypatch it.
os.environ["CNNLAB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def digits():
    from cnnlab.data import load_dataset

    return load_dataset("digits")


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("CNNLAB_CACHE", str(path))
    return path
