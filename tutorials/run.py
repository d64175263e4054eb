"""Execute the tutorial notebooks at full size and store their outputs in place.

The documentation site renders the stored outputs (mkdocs-jupyter with execute: false), so
re-run this after changing a notebook or the library:

    .venv/bin/python tutorials/run.py                 # every notebook
    .venv/bin/python tutorials/run.py 05_boosting     # the notebooks whose name contains it

Each notebook runs in a fresh kernel from the tutorials/ directory; the time it took is
printed (the budget is 2 minutes per notebook on a CPU). The test suite runs the same
notebooks with VI_EXT_QUICK=1 (small sizes) and does not store anything.
"""

from __future__ import annotations

import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))


def main(patterns: list[str]) -> None:
    os.environ.pop("VI_EXT_QUICK", None)
    os.environ["PYTHONPATH"] = os.path.dirname(HERE)
    for path in sorted(glob.glob(os.path.join(HERE, "*.ipynb"))):
        if patterns and not any(p in os.path.basename(path) for p in patterns):
            continue
        nb = nbformat.read(path, as_version=4)
        t = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": HERE}}).execute()
        nbformat.write(nb, path)
        print(f"{os.path.basename(path)}: {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
