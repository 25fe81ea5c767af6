"""``python -m cnnlab``: see :mod:`cnnlab.cli`."""

from cnnlab.cli import main

if __name__ == "__main__":  # guard: sweeps spawn worker processes that re-import this module
    raise SystemExit(main())
