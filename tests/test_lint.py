"""The code base stays ruff-clean (the configuration is in pyproject.toml)."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_clean():
    exe = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    # (a missing linter fails the suite, loudly: a skipped lint passes every style error)
    assert os.path.exists(exe), ("ruff is not installed: install the dev extra, "
                                 "pip install -e '.[dev]'")
    proc = subprocess.run([exe, "check", "vi_ext", "models", "tests", "benchmarks", "scripts"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
