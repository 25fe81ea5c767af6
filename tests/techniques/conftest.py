"""Shared fixtures of the technique tests."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import Dataset, load_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    """Run on one intra-op thread: the tensors here are tiny, and on a busy 2-core machine two
    OpenMP threads waiting for each other make each step ~50x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's 8x8 digits (offline). The splits are pinned (seed 0, 143 validation images):
    the training-outcome tests here are calibrated on them."""
    return load_dataset("digits", seed=0, val_size=143)
