"""Every tutorial notebook runs top to bottom, at the small sizes its first cell sets when
VI_EXT_QUICK=1, in a fresh kernel."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "*.ipynb")))


def test_there_is_a_tutorial_per_capability():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert len(names) == 8, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("VI_EXT_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
