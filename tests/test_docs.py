"""The documentation site builds in strict mode, renders its tutorials with their outputs,
and a headless browser shows a page; the quickstart's code runs."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_mkdocs_build_strict(site):
    page = (site / "api" / "fit" / "index.html").read_text()
    assert "Fit a guide to a NumPyro model by maximizing a variational objective" in page
    assert (site / "quickstart" / "index.html").exists()
    tutorial = (site / "tutorials" / "05_boosting" / "index.html").read_text()
    assert "Step-size rules compared" in tutorial
    assert "data:image/png;base64" in tutorial          # the stored plots are rendered
    assert not (site / "tutorials" / "run").exists()    # the runner script is not a page


def screenshot(url: str, path: str, browser: str) -> None:
    """A 1280 x 1000 PNG of ``url`` taken by headless Chromium."""
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,1000", f"--screenshot={path}", url],
                   capture_output=True, timeout=120, check=True)


def test_a_headless_browser_shows_the_rendered_site(site, tmp_path):
    """Debian's chromium, where installed (``apt install chromium``): the page is drawn,
    not blank: a good share of non-white pixels in many colours."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine")
    image_module = pytest.importorskip("matplotlib.image")
    png = tmp_path / "page.png"
    screenshot((site / "tutorials" / "05_boosting" / "index.html").as_uri(), str(png), browser)
    pixels = image_module.imread(png)[..., :3]
    non_white = np.mean(np.any(pixels < 0.95, axis=-1))
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert non_white > 0.05 and colours > 50, (non_white, colours)


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
