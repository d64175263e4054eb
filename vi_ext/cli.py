"""The ``vi-ext`` command.

    vi-ext demo                                   fit the bundled eight-schools model
    vi-ext fit models.eight_schools --steps 2000 --objective elbo
    vi-ext fit models.eight_schools:centered      pick a model function of the module
    vi-ext fit path/to/my_model.py                a file that defines model() and data()

A model module defines ``model`` (a NumPyro model) and ``data()``, which returns the model's
keyword arguments (observations included).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

DESCRIPTION = """\
Fit a NumPyro model with variational inference and print a posterior summary.

A MODEL is a module (models.eight_schools), optionally with a function name after a colon
(models.eight_schools:centered), or a .py file. The module must define `model` (or the named
function) and `data()`, returning the model's keyword arguments (observations included).
"""

EPILOG = """\
examples:
  vi-ext demo
  vi-ext fit models.eight_schools --steps 2000 --objective elbo
  vi-ext fit models.eight_schools:centered --lr 0.005
  vi-ext fit models.logistic_regression --plot out/loss.png
"""


def load_model(spec: str):
    """(model function, data kwargs, module) from 'pkg.module[:function]' or 'file.py[:fn]'."""
    target, _, fn_name = spec.partition(":")
    module: ModuleType
    if target.endswith(".py"):
        if not os.path.exists(target):
            raise SystemExit(f"vi-ext: model file '{target}' does not exist")
        mspec = importlib.util.spec_from_file_location("vi_ext_user_model", target)
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise SystemExit(
                f"vi-ext: cannot import model module '{target}' ({e}). Use a module path such "
                "as models.eight_schools, or a .py file."
            ) from None
    name = fn_name or "model"
    model = getattr(module, name, None)
    if not callable(model):
        raise SystemExit(f"vi-ext: '{target}' has no model function '{name}'")
    data_fn = getattr(module, "data", None)
    kwargs = data_fn() if callable(data_fn) else {}
    return model, kwargs, module


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vi-ext",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp):
        sp.add_argument("--steps", type=int, default=None,
                        help="the most optimizer steps (default: fit's cap, 20000; the fit "
                        "stops earlier when its stopping rule says it has converged)")
        sp.add_argument("--objective", default=None,
                        help="objective name (default: the ELBO with 4 particles); see "
                        "vi_ext.objectives.REGISTRY")
        sp.add_argument("--lr", type=float, default=None,
                        help="Adam's first learning rate, halved each time the fit is found "
                        "stationary (default 0.01)")
        sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        sp.add_argument("--samples", type=int, default=2000,
                        help="guide draws for the summary (default 2000)")
        sp.add_argument("--plot", default=None, metavar="PNG",
                        help="where to write the loss curve and posterior marginals "
                        "(default vi_ext_output/<model>_loss.png)")
        sp.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="save the fit's state to FILE every 10%% of the steps")
        sp.add_argument("--resume", default=None, metavar="FILE",
                        help="continue the fit saved in FILE (same model, objective, seed)")
        sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    f = sub.add_parser("fit", help="fit a model and print its posterior summary",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("model", metavar="MODEL", help="e.g. models.eight_schools")
    common(f)
    d = sub.add_parser("demo", help="fit the bundled eight-schools model (non-centered)",
                       description="Fit models.eight_schools with the ELBO, print an ArviZ "
                       "summary and write the loss curve to a PNG.")
    common(d)
    return p


def run_fit(spec: str, args: argparse.Namespace) -> int:
    import vi_ext as vx

    model, kwargs, _ = load_model(spec)
    options = {}
    if args.lr is not None:
        options["optimizer"] = vx.optim.plateau_adam(args.lr)
    if args.steps is not None:
        options["num_steps"] = args.steps
    if args.objective is not None:
        options["objective"] = args.objective
    print(f"vi-ext: fitting {spec} with objective '{args.objective or 'elbo, 4 particles'}'"
          + (f" for at most {args.steps} steps" if args.steps else ""))
    try:
        res = vx.fit(model, key=args.seed, progress=not args.no_progress,
                     checkpoint=args.checkpoint, resume=args.resume, **options, **kwargs)
    except vx.VIError as e:
        print(f"vi-ext: {e}", file=sys.stderr)
        return 2
    print(res)
    with _pandas_wide():
        print(res.summary(num_samples=args.samples, key=args.seed))
    try:
        elbo = res.elbo(num_samples=args.samples, key=args.seed)
        khat = res.psis_khat(num_samples=max(args.samples, 100))
        print(f"ELBO {elbo.value:.3f} +- {elbo.se:.3f} (s.e.); Pareto k-hat over "
              f"{len(khat.values)} seeds: mean {khat.mean:.2f}, max {khat.max:.2f} "
              f"({khat.verdict}: < 0.5 good, < 0.7 ok, else the guide misses posterior mass)")
    except Exception as e:  # diagnostics are informative, never fatal to the command
        print(f"vi-ext: diagnostics unavailable for this model/guide: {e}")
    stem = spec.replace(":", "_").replace("/", "_").replace(".py", "").split(".")[-1]
    path = args.plot or os.path.join("vi_ext_output", f"{stem}_loss.png")
    try:
        written = res.plot(path)
        print(f"loss curve and posterior marginals written to {os.path.abspath(written)}")
    except ImportError:
        print("vi-ext: matplotlib is not installed (pip install 'vi_ext[examples]'); no plot")
    return 0


class _pandas_wide:
    def __enter__(self):
        try:
            import pandas as pd

            self._ctx = pd.option_context("display.max_rows", 200, "display.width", 120)
            self._ctx.__enter__()
        except ImportError:
            self._ctx = None

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vi-ext`` console script."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    if args.steps is not None and args.steps <= 0:
        print("vi-ext: --steps must be positive", file=sys.stderr)
        return 2
    spec = args.model if args.command == "fit" else "models.eight_schools"
    return run_fit(spec, args)


if __name__ == "__main__":
    raise SystemExit(main())
