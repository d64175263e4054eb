"""What every benchmark writes beside its figures: the environment, and the JSON file."""

from __future__ import annotations

import json
import os
import platform

import jax
import numpyro
import optax

import vi_ext as vx


def environment(**extra) -> dict:
    """Versions and machine of this run, plus ``extra`` (e.g. ``quick=True``)."""
    return {"jax": jax.__version__, "numpyro": numpyro.__version__, "optax": optax.__version__,
            "vi_ext": vx.__version__, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), **extra}


def write(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` (directories created) and say so."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print("wrote", path)
