"""The vi-ext command."""

import os
import subprocess
import sys

import pytest

from vi_ext import cli


def test_help_is_friendly(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "vi-ext fit models.eight_schools --steps 2000 --objective elbo" in out
    assert "demo" in out


def test_fit_command_prints_summary_and_writes_plot(tmp_path, capsys):
    png = tmp_path / "loss.png"
    code = cli.main(["fit", "models.eight_schools:centered", "--steps", "300", "--no-progress",
                     "--samples", "200", "--plot", str(png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "mean" in out and "tau" in out and "hdi_3%" in out
    assert str(png) in out and png.stat().st_size > 1000


def test_bad_model_and_objective(tmp_path, capsys):
    with pytest.raises(SystemExit, match="cannot import model module 'models.nope'"):
        cli.main(["fit", "models.nope", "--steps", "10"])
    with pytest.raises(SystemExit, match="has no model function 'nope'"):
        cli.main(["fit", "models.eight_schools:nope", "--steps", "10"])
    assert cli.main(["fit", "models.eight_schools", "--steps", "10", "--objective", "elbow",
                     "--no-progress"]) == 2
    assert "unknown objective name 'elbow'" in capsys.readouterr().err
    assert cli.main(["fit", "models.eight_schools", "--steps", "0"]) == 2


def test_console_script_demo(tmp_path):
    """`vi-ext demo` as a user runs it: a subprocess, from another directory."""
    exe = os.path.join(os.path.dirname(sys.executable), "vi-ext")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "vi_ext.cli"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(cmd + ["demo", "--steps", "200", "--no-progress", "--samples", "100"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "theta[7]" in proc.stdout
    assert (tmp_path / "vi_ext_output" / "eight_schools_loss.png").exists()


def test_checkpoint_and_resume_from_the_command_line(tmp_path, capsys):
    ck = str(tmp_path / "run.npz")
    plot = str(tmp_path / "fit.png")
    base = ["fit", "models.eight_schools", "--no-progress", "--samples", "100", "--plot", plot]
    assert cli.main(base + ["--steps", "100", "--checkpoint", ck]) == 0
    out = capsys.readouterr().out
    assert "ELBO" in out and "Pareto k-hat" in out
    assert cli.main(base + ["--steps", "200", "--checkpoint", ck, "--resume", ck]) == 0
    assert "steps=200" in capsys.readouterr().out
    with open(ck, "wb") as f:
        f.write(b"garbage")
    assert cli.main(base + ["--steps", "300", "--resume", ck]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err
