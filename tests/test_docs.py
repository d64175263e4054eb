"""The documentation site builds in strict mode, and the quickstart's code runs."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (tmp_path / "api" / "fit" / "index.html").read_text()
    assert "Fit a guide to a NumPyro model by maximizing a variational objective" in page
    assert (tmp_path / "quickstart" / "index.html").exists()


def test_quickstart_code_runs(tmp_path, monkeypatch):
    """Every python block of docs/quickstart.md, run in order in one namespace."""
    text = open(os.path.join(ROOT, "docs", "quickstart.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    code = "\n".join(blocks).replace("num_steps=3000", "num_steps=300").replace(
        "num_steps=2000", "num_steps=1000")
    exec(compile(code, "quickstart.md", "exec"), namespace)
    assert (tmp_path / "loss.png").exists()
    assert namespace["y_rep"].shape == (500, 8)
    assert namespace["draws"]["theta"].shape == (1000, 8)
