"""cnnlab: the tested helpers behind CNN Lab, an executable book on training CNNs well.

Import the submodules you need (``cnnlab.data``, ``cnnlab.models``, ``cnnlab.train``,
``cnnlab.techniques``, ``cnnlab.experiments``, ``cnnlab.plots``, ``cnnlab.widgets``); the most used
names are re-exported here. Importing cnnlab has no side effects (no global seeding, no I/O).
"""

from cnnlab.data import Dataset, DatasetUnavailableError, load_dataset
from cnnlab.models import SmallCNN, build_model
from cnnlab.train import History, Hook, evaluate, fit

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "History",
    "Hook",
    "SmallCNN",
    "build_model",
    "evaluate",
    "fit",
    "load_dataset",
]

__version__ = "0.1.0"
